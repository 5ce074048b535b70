"""Reports next to a figure, built from saved runs only (score files, kept indices, results).

For a figure FIG, under OUT/reports/:
  FIG_class_counts.{json,csv}            examples per class in every kept subset (training labels)
  FIG_score_histograms_noiseNN.{png,pdf} histogram of every score (mean over seeds)
  FIG_spearman_noiseNN.{png,pdf,json}    rank correlations across seeds, epochs, methods and the
                                         input norm
  FIG_extremes_<score>_noiseNN.{png,pdf} highest- and lowest-scoring examples of each class; a red
                                         title marks an example whose clean label differs
  FIG_noise_detection_noiseNN.json       for noisy runs: precision and recall of the top-k and ROC
                                         AUC of every score as a detector of the corrupted labels
and OUT/FIG_summary.md, a table of the plotted numbers.

The dataset images are read again (for the grids and the input norm); nothing is trained.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np
from absl import logging

from datadiet_jax import artifacts, data, health, plots
from datadiet_jax import reports as reports_lib

GRID_PER_CLASS = 4


def _score_run(score_dir: str) -> tuple[ml_collections.ConfigDict, dict[str, dict]]:
    """The config of a saved score run and its score files {name: load_scores output}."""
    config = ml_collections.ConfigDict(artifacts.read_json(os.path.join(score_dir, "config.json")))
    files = artifacts.read_json(os.path.join(score_dir, "results.json"))["scores"]
    return config, {name: artifacts.load_scores(path) for name, path in files.items()}


def _train_split(config) -> data.Split:
    d = config.data
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
            c = reports_lib.class_counts(kept, labels, num_classes)
            counts.setdefault(name, {})[run] = {"num_kept": int(kept.size), "counts": c.tolist()}
            row = {"item": name, "run": run, "num_kept": int(kept.size)}
            rows.append(row | {f"class_{k}": int(v) for k, v in enumerate(c)})
    artifacts.write_json(f"{out_stem}.json", counts)
    artifacts.write_csv(f"{out_stem}.csv", rows)
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
    split = split or _train_split(config)
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
    hists = reports_lib.score_histograms(means)
    paths += plots.plot_score_histograms(hists, f"{stem}score_histograms_{tag}")
    seeds_of = next((g for g in grid_scores if g in scores), next(iter(scores)))
    norms = reports_lib.input_norms(split.normalized_images())
    names, matrix = reports_lib.spearman_matrix(spearman_inputs(scores, seeds_of, norms))
    paths += plots.plot_spearman(names, matrix, f"{stem}spearman_{tag}")
    artifacts.write_json(
        f"{stem}spearman_{tag}.json", reports_lib.jsonable({"names": names, "matrix": matrix})
    )
    paths.append(f"{stem}spearman_{tag}.json")
    for name in grid_scores:
        if name not in scores:
            continue
        extremes = reports_lib.top_bottom_per_class(
            scores[name]["mean"], labels, split.num_classes, GRID_PER_CLASS
        )
        slug = name.replace("@", "")
        paths += plots.plot_image_grid(
            split.images, clean, extremes, f"{stem}extremes_{slug}_{tag}"
        )
    noisy_index = saved["noisy_index"]
    if noisy_index.size:
        chosen = np.zeros(split.num_examples, bool)
        chosen[noisy_index] = True
        detection = {
            "num_chosen": int(chosen.sum()),
            "num_flipped": int((labels != clean).sum()),
            "mode": config.data.label_noise.mode,
            # 'chosen': every example picked for noise (a permuted label can land on its own
            # class); 'flipped': the examples whose label actually changed.
            "scores": {
                name: {
                    "chosen": reports_lib.noise_detection(s["mean"], chosen),
                    "flipped": reports_lib.noise_detection(s["mean"], labels != clean),
                }
                for name, s in scores.items()
            },
        }
        artifacts.write_json(f"{stem}noise_detection_{tag}.json", reports_lib.jsonable(detection))
        paths.append(f"{stem}noise_detection_{tag}.json")
    return paths, split.num_classes


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
            splits[key] = _train_split(config)
        written, num_classes = score_run_reports(
            fig, tag, score_dir, grid_scores, reports_dir, splits[key]
        )
        paths += written
    stem = os.path.join(reports_dir, f"{fig}_class_counts")
    paths += class_count_report(train_dirs, num_classes, stem)
    logging.info("Wrote %d report files to %s", len(paths), reports_dir)
    return paths


def summary_table(rows: Sequence[Mapping], keys: Sequence[str]) -> list[dict]:
    """Test accuracy summarized per group of `keys`, over healthy runs only.

    Args:
      rows: one dict per (run, seed) with `keys`, 'test_accuracy' and 'status'.
      keys: grouping columns, in output order.

    Returns:
      One dict per group (in first-seen order) with `keys`, 'runs' (healthy runs averaged),
      'left_out' (collapsed or diverged runs), 'mean', 'p16' and 'p84' (None when no run of the
      group is healthy).
    """
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for group, members in groups.items():
        ok, left_out = health.healthy(members)
        stats = dict(mean=None, p16=None, p84=None)
        if ok:
            mean, p16, p84 = plots.summarize([float(r["test_accuracy"]) for r in ok])
            stats = dict(mean=mean, p16=p16, p84=p84)
        out.append(
            dict(zip(keys, group, strict=True)) | dict(runs=len(ok), left_out=left_out) | stats
        )
    return out


def markdown_table(table: Sequence[Mapping]) -> str:
    """A Markdown table of dict rows; floats in (0, 1] with 4 decimals."""
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = ["-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
                 for v in row.values()]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(out_dir: str, name: str, rows: list[dict], plot, title: str, sections) -> dict:
    """Writes OUT/<name>.csv (`rows`), OUT/<name>.{png,pdf} (`plot(rows, stem)`) and
    OUT/<name>_summary.md (`title`, `sections`).

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path]}.
    """
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, f"{name}.csv")
    artifacts.write_csv(csv_path, rows)
    figure = plot(rows, os.path.join(out_dir, name))
    summary = write_summary(os.path.join(out_dir, f"{name}_summary.md"), title, sections)
    return {"figure": figure, "csv": [csv_path], "summary": [summary]}


def write_summary(path: str, title: str, sections: Sequence[tuple[str, list[dict]]]) -> str:
    """Writes a Markdown summary: a title, then one table per (heading, table) section."""
    parts = [f"# {title}", ""]
    for heading, table in sections:
        parts += [f"## {heading}", "", markdown_table(table) if table else "(no runs)", ""]
    artifacts.atomic_write_bytes(path, "\n".join(parts).encode())
    return path
