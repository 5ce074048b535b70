"""Figure 1: test accuracy against the epoch of scoring (top) and the fraction pruned (bottom).

  python -m experiments.fig1 --scale=cpu    # or: make reproduce-fig1 [SCALE=paper|smoke]

Top: the hardest examples by EL2N and by GraNd computed at each scored epoch, at one pruned
fraction. Bottom: the hardest examples by each method (paper: EL2N at epoch 20, GraNd at
initialization and at epoch 20, forgetting events over the whole training), a random subset and
the full data, against the fraction pruned. Clean labels only.

The score run is the clean score run of Figure 2 (same work directory, trained once), and the
full-data and random baselines are shared with it too.

Scales (see `configs/studies/scales.py`):
  paper: CIFAR-10, ResNet18, 10 score seeds, scores at epochs 0-40, 9 pruned fractions, 4 runs
    per point (GPU).
  cpu: Fashion-MNIST (first 10,000 training images), small CNN, 4 score seeds, scores at epochs
    0, 1, 2, forgetting over 3 epochs, fractions 0.3, 0.6, 0.8, 2 runs per point. Measured with
    `make reproduce-fig1` on a 2-core CPU after `make reproduce-fig2`: 24 minutes (17 retrainings
    of about 85 s; the score run and the full and random-40% baselines are Figure 2's).
  smoke: the same stages on 256 examples, about a minute.

Outputs: OUT/fig1_pruning.{png,pdf}, OUT/fig1_epochs.{png,pdf}, OUT/fig1.csv (one row per
retraining seed and panel; a run used by both panels appears in both), OUT/fig1_summary.md (the
protocol, `report.protocol`, then both panels) and OUT/reports/fig1_*.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app

from configs.studies.scales import Scale
from datadiet_jax.report import plots, run_reports, summary
from experiments import cli, sweeps

CSV_COLUMNS = (
    "panel",
    "method",
    "score",
    "score_epoch",
    "prune_fraction",
    "seed",
    "test_accuracy",
    "num_kept",
    "noise_fraction",
    "scale",
)


def scored_epochs(scale: Scale, kind: str) -> tuple[int, ...]:
    """Epochs at which the base config computes score `kind` ('el2n' or 'grand')."""
    return tuple(getattr(scale.base_config().score, f"{kind}_epochs"))


def epoch_panel_scores(scale: Scale) -> list[str]:
    """Every score of the epoch panel, e.g. ['el2n@0', 'el2n@1', 'grand@0', ...]."""
    return [f"{k}@{e}" for k in scale.fig1_epoch_kinds for e in scored_epochs(scale, k)]


def sweep(scale: Scale) -> list[dict]:
    """Items of Figure 1: the clean score run and baselines (shared with Figure 2), random subsets
    of the other fractions, the pruning panel, and the epoch-panel runs the pruning panel does not
    already train."""
    fixed = scale.fig1_epoch_prune_fraction
    in_pruning = np.isclose(scale.fig1_prune_fractions, fixed).any()
    extra = [s for s in epoch_panel_scores(scale) if not (in_pruning and s in scale.fig1_methods)]
    shared = sweeps.fig2_prune_fraction(scale)
    randoms = [f for f in scale.fig1_prune_fractions if not np.isclose(f, shared)]
    items = [sweeps.score_item(0.0), sweeps.baseline_item(scale, 0.0)]
    if randoms:
        items.append(sweeps.training_item("fig1_random", 0.0, fractions=randoms, random=True))
    items.append(
        sweeps.training_item(
            "fig1_pruning", 0.0, scores=scale.fig1_methods, fractions=scale.fig1_prune_fractions
        )
    )
    if extra:
        items.append(sweeps.training_item("fig1_epochs", 0.0, scores=extra, fractions=(fixed,)))
    return items


def panel_rows(scale: Scale, rows: list[dict]) -> list[dict]:
    """Rows of both panels from the saved seed rows, `CSV_COLUMNS` first.

    Pruning panel: each method at each fraction, random at those fractions, full data (fraction
    0). Epoch panel: each score kind at each epoch at the fixed fraction, full data. 'method'
    is the score name ('el2n@2'), 'random' or 'full'; 'score' its kind ('el2n', 'random', ...).
    """
    fractions = np.asarray(scale.fig1_prune_fractions, np.float64)
    epoch_scores = set(epoch_panel_scores(scale))
    out = []
    for r in rows:
        method = r["score"] if r["strategy"] == "hardest" else r["strategy"]
        kind, _, epoch = method.partition("@")
        base = dict(method=method, score=kind, score_epoch=int(epoch) if epoch else "")
        on_grid = np.isclose(fractions, r["prune_fraction"]).any()
        if r["strategy"] == "full" or (on_grid and method in (*scale.fig1_methods, "random")):
            out.append(r | base | dict(panel="pruning"))
        fixed = np.isclose(r["prune_fraction"], scale.fig1_epoch_prune_fraction)
        if r["strategy"] == "full" or (fixed and method in epoch_scores):
            out.append(r | base | dict(panel="epochs"))
    return sweeps.columns_first(out, CSV_COLUMNS)


def collect(scale: Scale, items, runs_dir: str) -> list[dict]:
    """CSV rows of Figure 1 from the saved training runs."""
    rows = []
    for it in items:
        if it["kind"] == "train":
            rows += sweeps.seed_rows(scale, it, sweeps.load_results(scale, it, runs_dir))
    return panel_rows(scale, rows)


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the sweep, then writes both figures, the CSV, summary and reports.

    Args:
      scale_name: 'paper', 'cpu' or 'smoke' (or a `Scale`).
      runs_dir: root of the work directories (RUNS).
      out_dir: output folder (OUT).

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path], 'reports': paths}.
    """
    scale, items, rows, csv_path = sweeps.run_and_collect(
        scale_name, runs_dir, out_dir, "fig1", sweep, collect
    )
    pruning = [r for r in rows if r["panel"] == "pruning"]
    epochs = [r for r in rows if r["panel"] == "epochs"]
    figure = plots.plot_pruning_curves(pruning, os.path.join(out_dir, "fig1_pruning"))
    figure += plots.plot_score_epoch_curves(epochs, os.path.join(out_dir, "fig1_epochs"))
    score = sweeps.score_item(0.0)
    sections = [
        sweeps.protocol_section(scale, sweeps.baseline_item(scale, 0.0), runs_dir, [score]),
        ("Pruning panel", summary.summary_table(pruning, ("method", "prune_fraction", "num_kept"))),
        (
            f"Epoch panel ({scale.fig1_epoch_prune_fraction:.0%} pruned)",
            summary.summary_table(epochs, ("score", "score_epoch", "num_kept")),
        ),
    ]
    summary_path = summary.write_summary(
        os.path.join(out_dir, "fig1_summary.md"),
        f"Figure 1 ({scale.name}): test accuracy",
        sections,
    )
    score_dir = sweeps.workdir(runs_dir, scale, score)
    train_dirs = sweeps.train_dirs(scale, items, runs_dir)
    written = run_reports.write_reports(
        "fig1", {sweeps.noise_tag(0.0): score_dir}, train_dirs, scale.fig1_methods, out_dir
    )
    return {"figure": figure, "csv": [csv_path], "summary": [summary_path], "reports": written}


def main(argv):
    cli.main(argv, "Figure 1", reproduce)


if __name__ == "__main__":
    app.run(main)
