"""Every score and selector on one recipe: test accuracy against the fraction pruned, and cost.

  python -m experiments.methods --scale=cpu    # or: make reproduce-methods [SCALE=paper|smoke]

One score run computes every score at once (`configs/studies/methods.py`): EL2N, GraNd, the
logit scores and the features at the score epoch, forgetting, AUM and the training-dynamics
scores over the whole score training. Each method then prunes the training set at each fraction
(the strategy and score of its paper, `METHODS`), a fresh network is trained R times on each
subset, and the random subsets and the full data are the baselines.

Scales:
  paper: CIFAR-10, ResNet18, 10 score seeds, scores at epoch 20, fractions 0.3, 0.5, 0.7, 4 runs
    per point (GPU).
  cpu: Fashion-MNIST (first 5,000 training images), small CNN, 4 score seeds, scores at epoch 1
    of 6, fractions 0.3, 0.5, 0.7, 3 runs per point.
  smoke: 256 examples, fraction 0.5, one run per point, for tests.

Outputs: OUT/methods.{png,pdf} (a panel per family of methods), OUT/methods.csv (one row per
retraining run and seed), OUT/methods_costs.csv and OUT/methods_summary.md: the protocol
(`report.protocol`: fixed steps, epochs and steps of a full training, batch size, seeds, the score
run's cost), accuracy per method and fraction against random (mean ± std (n) of the healthy
retraining seeds beside the 16th-84th percentile band and the verdict), and each method's scoring
cost as a fraction of one full training.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import app, logging

from configs.studies.methods import METHODS, METHODS_SCALES, Method
from configs.studies.scales import Scale, scale_settings
from datadiet_jax.pipeline import plan
from datadiet_jax.report import methods as report
from datadiet_jax.report import summary
from datadiet_jax.scores import pruning
from datadiet_jax.training import files
from experiments import cli, sweeps

CSV_COLUMNS = (
    "method",
    "family",
    "strategy",
    "score",
    "prune_fraction",
    "seed",
    "test_accuracy",
    "num_kept",
    "status",
    "scale",
)
SCORE_ITEM = "methods_scores_noise00"


def methods_scale(scale_name: str | Scale) -> Scale:
    """The scale with the benchmark's base config (its N, score epochs and seeds)."""
    scale, settings = scale_settings(scale_name, METHODS_SCALES, "The methods benchmark")
    return dataclasses.replace(scale, base_config=lambda: settings.base_config(scale))


def _settings(scale: Scale):
    return METHODS_SCALES[scale.name]


def sweep(scale: Scale, runs_dir: str) -> list[dict]:
    """The benchmark's score run, one training item per strategy (all its scores at every
    fraction) and the baselines (random subsets at every fraction, the full data), every
    training item pruning with the files of that score run."""
    settings = _settings(scale)
    score = sweeps.score_item(0.0) | {"name": SCORE_ITEM}
    own_scores = {"score.workdir": sweeps.workdir(runs_dir, scale, score)}
    strategies: dict[str, list[str]] = {}
    for m in METHODS:
        if m.strategy != "random":
            strategies.setdefault(m.strategy, []).append(m.score_name(settings.score_epoch))
    items = [score]
    for strategy, scores in strategies.items():
        items.append(
            sweeps.training_item(
                f"methods_{strategy}",
                0.0,
                strategy=strategy,
                scores=scores,
                fractions=settings.prune_fractions,
            )
        )
    items.append(
        sweeps.training_item(
            "methods_baselines", 0.0, fractions=settings.prune_fractions, full=True, random=True
        )
    )
    for it in items[1:]:
        it["overrides"].update(own_scores)
    return items


def method_of(strategy: str, score: str, epoch: int) -> Method | None:
    """The `METHODS` entry a retraining row belongs to (None for the full data)."""
    for m in METHODS:
        if m.strategy == strategy and (m.strategy == "random" or m.score_name(epoch) == score):
            return m
    return None


def collect(scale: Scale, items, runs_dir: str) -> list[dict]:
    """One row per (retraining run, seed), named by method."""
    epoch = _settings(scale).score_epoch
    rows = []
    for it in items:
        if it["kind"] != "train":
            continue
        for r in sweeps.seed_rows(scale, it, sweeps.load_results(scale, it, runs_dir)):
            m = method_of(r["strategy"], r["score"], epoch)
            name, family = (m.name, m.family) if m else ("full", "baseline")
            rows.append(r | {"method": name, "family": family})
    return sweeps.columns_first(rows, CSV_COLUMNS)


def inputs_of(m: Method, epoch: int) -> list[str]:
    """The score files a method reads: its score, and the features for the selectors that
    select on them and the feature scores computed from them."""
    score = m.score_name(epoch)
    names = [score] if score else []
    if m.strategy in pruning.FEATURE_STRATEGIES or score.partition("@")[0] in FEATURE_SCORES:
        names.append(f"features@{epoch}")
    return list(dict.fromkeys(names))


# Scores computed from the features file (their computation excludes the features').
FEATURE_SCORES = ("moderate", "prototype")


def selection_seconds(scale: Scale, runs_dir: str) -> dict[str, float]:
    """{method: mean wall seconds of its selection over the fractions}, from each training
    item's `selection_seconds.json`."""
    settings, out = _settings(scale), {}
    for m in METHODS:
        item = "methods_baselines" if m.strategy == "random" else f"methods_{m.strategy}"
        path = os.path.join(
            sweeps.workdir(runs_dir, scale, {"name": f"{item}_noise00"}), "selection_seconds.json"
        )
        recorded = files.read_json(path) if os.path.exists(path) else {}
        score, strategy = m.score_name(settings.score_epoch), m.strategy
        if strategy == "random":
            score, strategy = "random", "subset"
        names = [plan.run_name(score, strategy, f) for f in settings.prune_fractions]
        times = [recorded[n] for n in names if n in recorded]
        out[m.name] = float(np.mean(times)) if times else 0.0
    return out


def cost_rows(scale: Scale, runs_dir: str, selected: dict) -> list[dict]:
    """Each method's scoring cost (`report.cost_row`) from the score run's recorded times:
    the score training it needs, the computation of each file it reads and its selection."""
    settings, config = _settings(scale), scale.base_config()
    score_dir = sweeps.workdir(runs_dir, scale, {"name": SCORE_ITEM})
    timing, computed = report.training_seconds(score_dir), report.score_seconds(score_dir)
    train_epochs = config.score.train_epochs
    rows = []
    for m in METHODS:
        epochs, seconds = 0, selected.get(m.name, 0.0)
        for name in inputs_of(m, settings.score_epoch):
            kind, _, at = name.partition("@")
            # A score of the whole score training (forgetting, AUM, the dynamics scores).
            epoch = int(at) if at else train_epochs
            epochs = max(epochs, epoch)
            seconds += computed.get(f"{kind}@{epoch}", 0.0)
        rows.append(
            report.cost_row(
                m.name,
                train_epochs=epochs,
                compute_seconds=seconds,
                num_epochs=config.train.num_epochs,
                timing=timing,
            )
        )
    return rows


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the sweep, then writes the figure, both CSV files and the summary.

    Returns:
      {'figure': paths, 'csv': [paths], 'summary': [path]}.
    """
    scale = methods_scale(scale_name)
    items = sweep(scale, runs_dir)
    start = time.time()
    sweeps.run_sweep(scale, items, runs_dir)
    logging.info("Methods sweep (%s) done in %.1f s", scale.name, time.time() - start)
    rows = collect(scale, items, runs_dir)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "methods.csv")
    files.write_csv(csv_path, [r | {"scale": scale.name} for r in rows])
    families = {m.name: m.family for m in METHODS}
    figure = report.plot_methods(rows, families, os.path.join(out_dir, "methods"))
    table = summary.summary_table(rows, ("method", "prune_fraction", "num_kept"))
    costs = cost_rows(scale, runs_dir, selection_seconds(scale, runs_dir))
    costs_path = os.path.join(out_dir, "methods_costs.csv")
    files.write_csv(costs_path, costs)
    summary_path = report.write_summary(
        os.path.join(out_dir, "methods_summary.md"),
        f"Pruning methods ({scale.name}): test accuracy against random, and scoring cost",
        report.against_random(table),
        costs,
        sweeps.protocol_section(scale, items[-1], runs_dir, items[:1]),
    )
    return {"figure": figure, "csv": [csv_path, costs_path], "summary": [summary_path]}


def main(argv):
    cli.main(argv, "Methods", reproduce)


if __name__ == "__main__":
    app.run(main)
