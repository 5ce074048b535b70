"""Reports of saved runs, next to a figure: score histograms, correlations, image grids, counts.

Built from saved runs only (score files, kept indices, results); the dataset images are read
again (for the grids and the input norm), and nothing is trained. For a figure FIG, under
OUT/reports/:
  FIG_class_counts.{json,csv}            examples per class in every kept subset (training labels)
  FIG_score_histograms_noiseNN.{png,pdf} histogram of every score (mean over seeds)
  FIG_spearman_noiseNN.{png,pdf,json}    rank correlations across seeds, epochs, methods and the
                                         input norm
  FIG_extremes_<score>_noiseNN.{png,pdf} highest- and lowest-scoring examples of each class; a red
                                         title marks an example whose clean label differs
  FIG_noise_detection_noiseNN.json       for noisy runs: precision and recall of the top-k and ROC
                                         AUC of every score as a detector of the corrupted labels
(`summary.py` writes OUT/FIG_summary.md, the table of the plotted numbers.)

Usage:

    from datadiet_jax.report import run_reports
    score_dirs = {"noise10": "runs/fig2/scores_noise10"}    # {noise tag: score run}
    paths = run_reports.write_reports("fig2", score_dirs, train_dirs, ["el2n@1"], "out")
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np
from absl import logging

from datadiet_jax.pipeline import artifacts, data
from datadiet_jax.report import numbers, plots
from datadiet_jax.training import files

GRID_PER_CLASS = 4


def _score_run(score_dir: str) -> tuple[ml_collections.ConfigDict, dict[str, dict]]:
    """The config of a saved score run and its score files {name: load_scores output}."""
    config = ml_collections.ConfigDict(files.read_json(os.path.join(score_dir, "config.json")))
    paths = artifacts.read_results(score_dir)["scores"]
    return config, {name: artifacts.load_scores(path) for name, path in paths.items()}


def _train_split(d) -> data.Split:
    """The training split that `d` (`config.data`) names, without downloading."""
    return data.load_split(
        d.name,
        "train",
        data_dir=d.data_dir,
        download=False,
        num_examples=d.num_train_examples,
    )


def class_count_report(train_dirs: Mapping[str, str], num_classes: int, out_stem: str) -> list:
    """Examples per class (by the training labels) of every saved kept subset.

    Args:
      train_dirs: {item name: work directory of a training run}.
      num_classes: C.
      out_stem: output path without extension; `.json` and `.csv` are written.

    Returns:
      The written paths.
    """
    counts, rows = {}, []
    for name, workdir in train_dirs.items():
        labels = np.load(os.path.join(workdir, "label_noise.npz"))["labels"]
        for kept_path in sorted(glob.glob(os.path.join(workdir, "retrain", "*", "kept.npz"))):
            run = os.path.basename(os.path.dirname(kept_path))
            kept = np.load(kept_path)["index"]
            c = numbers.class_counts(kept, labels, num_classes)
            counts.setdefault(name, {})[run] = {"num_kept": int(kept.size), "counts": c.tolist()}
            row = {"item": name, "run": run, "num_kept": int(kept.size)}
            rows.append(row | {f"class_{k}": int(v) for k, v in enumerate(c)})
    files.write_json(f"{out_stem}.json", counts)
    files.write_csv(f"{out_stem}.csv", rows)
    return [f"{out_stem}.json", f"{out_stem}.csv"]


def spearman_inputs(scores: Mapping[str, dict], seeds_of: str, norms: np.ndarray) -> dict:
    """Score vectors to correlate: each seed of one score, every score's mean, the input norm.

    Args:
      scores: {score name: load_scores output with 'per_seed' [K, N] and 'mean' [N]}.
      seeds_of: the score whose K seeds are listed one by one.
      norms: [N] input norms.

    Returns:
      {name: [N] float}, seeds first.
    """
    named = {f"{seeds_of} s{k}": s for k, s in enumerate(scores[seeds_of]["per_seed"])}
    named |= {name: s["mean"] for name, s in scores.items()}
    named["input norm"] = norms
    return named


def score_run_reports(
    fig: str,
    tag: str,
    score_dir: str,
    grid_scores: Sequence[str],
    out_dir: str,
    split: data.Split | None = None,
) -> tuple[list[str], int]:
    """Histograms, Spearman matrix, image grids and (if noisy) noise detection of a score run.

    Args:
      fig: figure name used as file prefix, e.g. 'fig2'.
      tag: noise tag, e.g. 'noise10'.
      score_dir: work directory of a finished score run.
      grid_scores: scores whose extremes are shown as image grids.
      out_dir: the reports folder.
      split: the clean train split of the run (loaded from the dataset when None).

    Returns:
      (the written paths, the number of classes of the dataset).
    """
    config, scores = _score_run(score_dir)
    split = split or _train_split(config.data)
    saved = np.load(os.path.join(score_dir, "label_noise.npz"))
    labels, clean = saved["labels"], saved["clean_labels"]
    for name, s in scores.items():
        if not np.array_equal(s["index"], split.index):
            raise ValueError(
                f"Score {name} of {score_dir} indexes other examples than {split.name}:train; "
                "rerun the figure so the reports read matching data."
            )
    stem = os.path.join(out_dir, f"{fig}_")
    paths = []
    means = {name: s["mean"] for name, s in scores.items()}
    hists = numbers.score_histograms(means)
    paths += plots.plot_score_histograms(hists, f"{stem}score_histograms_{tag}")
    seeds_of = next((g for g in grid_scores if g in scores), next(iter(scores)))
    norms = numbers.input_norms(split.model_inputs())
    names, matrix = numbers.spearman_matrix(spearman_inputs(scores, seeds_of, norms))
    paths += plots.plot_spearman(names, matrix, f"{stem}spearman_{tag}")
    files.write_json(
        f"{stem}spearman_{tag}.json", numbers.jsonable({"names": names, "matrix": matrix})
    )
    paths.append(f"{stem}spearman_{tag}.json")
    for name in grid_scores:
        if name not in scores:
            continue
        extremes = numbers.top_bottom_per_class(
            scores[name]["mean"], labels, split.num_classes, GRID_PER_CLASS
        )
        slug = name.replace("@", "")
        paths += plots.plot_image_grid(
            split.inputs, clean, extremes, f"{stem}extremes_{slug}_{tag}"
        )
    if saved["noisy_index"].size:
        detection = noise_detection_report(scores, saved, config.data.label_noise.mode)
        files.write_json(f"{stem}noise_detection_{tag}.json", numbers.jsonable(detection))
        paths.append(f"{stem}noise_detection_{tag}.json")
    return paths, split.num_classes


def noise_detection_report(scores: Mapping[str, dict], saved, mode: str) -> dict:
    """How well every score finds the noisy labels of a run (`numbers.noise_detection`).

    Args:
      scores: {score name: load_scores output with 'mean' [N]}.
      saved: the run's label_noise.npz (noisy_index, labels, clean_labels).
      mode: the label-noise mode.
    Returns:
      {'num_chosen', 'num_flipped', 'mode', 'scores': {name: {'chosen': ..., 'flipped': ...}}}:
      'chosen' is every example picked for noise (a permuted label can land on its own class),
      'flipped' the examples whose label actually changed.
    """
    labels, clean = saved["labels"], saved["clean_labels"]
    chosen = np.zeros(len(labels), bool)
    chosen[saved["noisy_index"]] = True
    return {
        "num_chosen": int(chosen.sum()),
        "num_flipped": int((labels != clean).sum()),
        "mode": mode,
        "scores": {
            name: {
                "chosen": numbers.noise_detection(s["mean"], chosen),
                "flipped": numbers.noise_detection(s["mean"], labels != clean),
            }
            for name, s in scores.items()
        },
    }


def write_reports(
    fig: str,
    score_dirs: Mapping[str, str],
    train_dirs: Mapping[str, str],
    grid_scores: Sequence[str],
    out_dir: str,
) -> list[str]:
    """All reports of a figure from its saved runs.

    Args:
      fig: 'fig1' or 'fig2' (file prefix).
      score_dirs: {noise tag: score run work directory}.
      train_dirs: {item name: training run work directory}.
      grid_scores: scores shown as image grids.
      out_dir: OUT; reports go to OUT/reports/.

    Returns:
      The written paths.
    """
    reports_dir = os.path.join(out_dir, "reports")
    os.makedirs(reports_dir, exist_ok=True)
    paths = []
    num_classes, splits = None, {}
    for tag, score_dir in score_dirs.items():
        config, _ = _score_run(score_dir)
        key = (config.data.name, config.data.data_dir, config.data.num_train_examples)
        if key not in splits:  # noise levels share the images: read them once
            splits[key] = _train_split(config.data)
        written, num_classes = score_run_reports(
            fig, tag, score_dir, grid_scores, reports_dir, splits[key]
        )
        paths += written
    stem = os.path.join(reports_dir, f"{fig}_class_counts")
    paths += class_count_report(train_dirs, num_classes, stem)
    logging.info("Wrote %d report files to %s", len(paths), reports_dir)
    return paths
