"""When does keeping the hard examples pay? Hardest, easiest and random subsets across data sizes.

  python -m experiments.crossover --scale=cpu    # or: make reproduce-crossover [SCALE=paper|smoke]

Per data size N (the first N training images), one K-seed score run computes every score of
that size (`configs/studies/crossover.py`: EL2N and GraNd at an early epoch, Dyn-Unc over the
score training). Each pruned fraction then keeps the hardest examples of each score, the
easiest, and a random subset; each kept set is retrained R times from fresh initializations for
as many steps as the full data of that N, which is trained R times too. Sorscher et al. (2022)
predict the phase diagram this draws: keeping the hard examples pays when data is abundant,
keeping the easy ones when it is scarce, and the pruned fraction where the two cross grows with
N (`datadiet_jax/report/crossover.py`).

Scales:
  paper: CIFAR-10, ResNet18, N = 5,000 to 50,000, 10 score seeds, 4 runs per point (GPU).
  cpu: Fashion-MNIST, the small CNN at a quarter of its width, N = 2,500, 5,000, 10,000,
    20,000 and 60,000 (EL2N only at 60,000), fractions 0.3, 0.5, 0.7, 0.9, 4 score seeds,
    3 runs per point.
  smoke: N = 128 and 256, fractions 0.3 and 0.7, 2 runs per point, for tests.

Outputs: OUT/crossover.csv (one row per retraining run and seed), OUT/crossover_phase.{png,pdf}
(the phase diagram: per score, data size against fraction pruned, the better of hardest and
easiest with its margin over random in units of the seeds' spread), OUT/crossover_curves.{png,
pdf} (test accuracy against examples kept, per strategy) and OUT/crossover_summary.md (where
the crossover lies at each size, against the prediction; every point's mean, std and n).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import app, logging

from configs.studies.crossover import CROSSOVER_SCALES, CrossoverScale, Size
from configs.studies.scales import Scale, scale_settings
from datadiet_jax.pipeline import data
from datadiet_jax.report import crossover as report
from datadiet_jax.report import protocol
from datadiet_jax.training import files
from experiments import cli, sweeps

CSV_COLUMNS = (
    "num_examples",
    "score",
    "strategy",
    "prune_fraction",
    "num_kept",
    "seed",
    "test_accuracy",
    "status",
    "num_epochs",
    "steps",
    "classes_kept",
    "smallest_class_share",
    "scale",
)
STRATEGIES = ("hardest", "easiest")


def crossover_scale(scale_name: str | Scale) -> Scale:
    """The scale with the study's base config (its model, seeds and test set)."""
    scale, settings = scale_settings(scale_name, CROSSOVER_SCALES, "The crossover study")
    return dataclasses.replace(scale, base_config=lambda: settings.base_config(scale))


def _settings(scale: Scale) -> CrossoverScale:
    return CROSSOVER_SCALES[scale.name]


def size_tag(size: Size) -> str:
    """'crossover_n02500': the prefix of a size's item names."""
    return f"crossover_n{size.num_examples:05d}"


def size_items(settings: CrossoverScale, size: Size, runs_dir: str, scale: Scale) -> list[dict]:
    """The items of one size: its score run, one training item per strategy (every score at
    every fraction) and its baselines (a random subset at every fraction, the full data)."""
    own = settings.size_overrides(size)
    score = sweeps.score_item(0.0) | {"name": f"{size_tag(size)}_scores"}
    score["overrides"].update(own)
    trained = {"score.workdir": sweeps.workdir(runs_dir, scale, score)}
    fractions = settings.prune_fractions
    items = [
        sweeps.training_item(
            f"{size_tag(size)}_{strategy}",
            0.0,
            strategy=strategy,
            scores=settings.size_scores(size),
            fractions=fractions,
        )
        for strategy in STRATEGIES
    ]
    items.append(
        sweeps.training_item(
            f"{size_tag(size)}_baselines", 0.0, fractions=fractions, full=True, random=True
        )
    )
    for it in items:
        it["overrides"].update(own | trained)
    return [score, *items]


def sweep(scale: Scale, runs_dir: str) -> list[dict]:
    """Every size's items, the score runs first (`sweeps.run_sweep` runs them first anyway)."""
    settings = _settings(scale)
    items = [it for size in settings.sizes for it in size_items(settings, size, runs_dir, scale)]
    return sorted(items, key=lambda it: it["kind"] != "score")


def collect(scale: Scale, items, runs_dir: str) -> list[dict]:
    """One row per (retraining run, seed), with its data size, epochs and the class balance of
    its kept set (`CSV_COLUMNS`)."""
    train = {it["name"]: it for it in items if it["kind"] == "train"}
    configs = {name: sweeps.make_config(scale, it, runs_dir) for name, it in train.items()}
    # Every size is a prefix of the split: the largest size's labels serve them all.
    largest = max(configs.values(), key=lambda c: c.data.num_train_examples)
    labels = np.asarray(data.load_splits(largest.data)[0].labels)
    rows = []
    for name, it in train.items():
        config, balance = configs[name], {}  # one kept set per run, read once for its seeds
        size = {
            "num_examples": int(config.data.num_train_examples),
            "num_epochs": int(config.train.num_epochs),
        }
        for r in sweeps.seed_rows(scale, it, sweeps.load_results(scale, it, runs_dir)):
            if r["strategy"] in ("random", "full"):
                r["score"] = r["strategy"]
            if r["run"] not in balance:
                run_dir = os.path.join(sweeps.workdir(runs_dir, scale, it), "retrain", r["run"])
                balance[r["run"]] = class_balance(run_dir, labels)
            rows.append(r | size | balance[r["run"]])
    return sweeps.columns_first(rows, CSV_COLUMNS)


def class_balance(run_dir: str, labels: np.ndarray) -> dict:
    """How evenly a run's kept set (`run_dir/kept.npz`) covers the classes.

    Returns:
      {'classes_kept': classes with at least one kept example, 'smallest_class_share': the
      smallest class's count over an even share, M / C, of the M kept examples (1.0: even;
      0.0: a class missing)}.
    """
    with np.load(os.path.join(run_dir, "kept.npz")) as k:
        kept = k["index"]
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels[kept], minlength=num_classes)
    share = counts.min() / (len(kept) / num_classes)
    return {"classes_kept": int((counts > 0).sum()), "smallest_class_share": round(float(share), 4)}


def protocol_table(scale: Scale, items, runs_dir: str) -> list[dict]:
    """The protocol of every size (`report.protocol`): its budget, epochs and steps of a full
    training, batch size, seeds, and its score run's cost as a share of one training."""
    by_name = {it["name"]: it for it in items}
    table = []
    for size in _settings(scale).sizes:
        tag = size_tag(size)
        config = sweeps.make_config(scale, by_name[f"{tag}_baselines_noise00"], runs_dir)
        p = protocol.fields(config, size.num_examples)
        cost = protocol.score_run_cost(sweeps.workdir(runs_dir, scale, by_name[f"{tag}_scores"]))
        table.append(
            {
                "N": size.num_examples,
                "protocol": p["protocol"],
                "full-data training": f"{p['num_epochs']} epochs, {p['num_steps']} steps",
                "batch size": p["batch_size"],
                "retraining seeds": p["retrain_seeds"],
                "score seeds K": cost["score_seeds"],
                "scoring cost (share of one training)": (
                    f"{cost['cost_k_seeds']:.2f} for K seeds, {cost['cost_one_seed']:.2f} a seed"
                    + ("" if cost["basis"] == "measured" else " (epochs only)")
                ),
            }
        )
    return table


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the study, then writes the CSV, both figures and the summary.

    Args:
      scale_name: 'paper', 'cpu' or 'smoke' (or a `Scale`).
      runs_dir: root of the work directories (RUNS).
      out_dir: output folder (OUT).

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path]}.
    """
    scale = crossover_scale(scale_name)
    settings = _settings(scale)
    items = sweep(scale, runs_dir)
    start = time.time()
    sweeps.run_sweep(scale, items, runs_dir)
    seconds = time.time() - start
    logging.info("Crossover study (%s) done in %.1f s", scale.name, seconds)
    rows = collect(scale, items, runs_dir)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "crossover.csv")
    files.write_csv(csv_path, rows)
    points = report.points(rows)
    figure = report.plot_phase(points, settings.scores, os.path.join(out_dir, "crossover_phase"))
    figure += report.plot_curves(points, settings.scores, os.path.join(out_dir, "crossover_curves"))
    summary_path = report.write_summary(
        os.path.join(out_dir, "crossover_summary.md"),
        f"The crossover ({scale.name}): hardest, easiest and random subsets across data sizes",
        points,
        settings.scores,
        [(protocol.HEADING, protocol_table(scale, items, runs_dir))],
    )
    return {"figure": figure, "csv": [csv_path], "summary": [summary_path]}


def main(argv):
    cli.main(argv, "Crossover", reproduce)


if __name__ == "__main__":
    app.run(main)
