"""The cross-method comparison from saved results: accuracy against random, scoring cost, figure.

Every function reads rows or files a finished sweep left (`experiments/methods.py`); nothing
trains. A method "beats random by more than the spread" at a fraction when the 16th percentile
of its healthy retraining seeds lies above the 84th percentile of the random subsets'.

Usage:

    from datadiet_jax.report import methods, summary
    table = summary.summary_table(rows, ("method", "prune_fraction"))   # rows: one per seed
    compared = methods.against_random(table)       # adds 'vs_random' and 'verdict'
    shown = methods.display_rows(compared)         # 'mean ± std (n)' beside the verdicts
    methods.plot_methods(rows, {"el2n@1": "scores", "herding": "geometry"}, "out/methods")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from datadiet_jax.report import plots, summary
from datadiet_jax.training import files


def against_random(table: Sequence[Mapping]) -> list[dict]:
    """`summary.summary_table` rows keyed by ('method', 'prune_fraction', ...) with the
    difference of each mean from the random subsets' at the same fraction.

    Returns:
      The rows with 'vs_random' (mean minus random's mean; None without both) and 'verdict':
      'better' / 'worse' (the 16-84 bands do not overlap), 'within spread', 'one run' (either
      side has a single healthy run, so no spread), or '' for random, full data and points
      without healthy runs.
    """
    random = {r["prune_fraction"]: r for r in table if r["method"] == "random"}
    out = []
    for r in table:
        base = random.get(r["prune_fraction"])
        row = dict(r, vs_random=None, verdict="")
        if r["method"] not in ("random", "full") and base and None not in (r["mean"], base["mean"]):
            row["vs_random"] = r["mean"] - base["mean"]
            if min(r["runs"], base["runs"]) < 2:
                row["verdict"] = "one run"  # no spread to compare with
            elif r["p16"] > base["p84"]:
                row["verdict"] = "better"
            elif r["p84"] < base["p16"]:
                row["verdict"] = "worse"
            else:
                row["verdict"] = "within spread"
        out.append(row)
    return out


# What to do about a damaged log of a run (its epoch metrics, its score timings).
LOG_FIX = (
    "delete it and rerun that run's command; its records come back for what the rerun computes "
    "again (delete the run's checkpoints or score files to redo those)"
)


def _jsonl(path: str) -> list[dict]:
    """The records of a run's JSON-lines log ([] when missing; a damaged one: one ValueError
    line naming it)."""
    return files.read_jsonl(path, fix=LOG_FIX)


def training_seconds(score_dir: str) -> dict:
    """Per-seed epoch cost of a score run, from `scores/train/metrics.jsonl`.

    Returns:
      {'epoch_seconds': median wall seconds of one epoch of the K-seed training (the first
      epoch of each process, which compiles, is left out when there are others),
      'num_seeds': K, 'seed_epoch_seconds': that divided by K}.

    Raises:
      ValueError: the run recorded no epoch times.
    """
    lines = _jsonl(os.path.join(score_dir, "scores", "train", "metrics.jsonl"))
    seconds = [float(r["seconds"]) for r in lines if "seconds" in r]
    if not seconds:
        raise ValueError(
            f"{score_dir} records no epoch times (scores/train/metrics.jsonl); rerun its score "
            "training with this version to measure the costs."
        )
    steady = seconds[1:] if len(seconds) > 1 else seconds
    num_seeds = len(lines[-1]["loss"])
    epoch = float(np.median(steady))
    return {"epoch_seconds": epoch, "num_seeds": num_seeds, "seed_epoch_seconds": epoch / num_seeds}


def score_seconds(score_dir: str) -> dict[str, float]:
    """{'el2n@1': seconds, ...}: the last recorded computation of each score at an epoch
    (`scores/timings.jsonl`, all K seeds together)."""
    out = {}
    for r in _jsonl(os.path.join(score_dir, "scores", "timings.jsonl")):
        out[f"{r['score']}@{r['epoch']}"] = float(r["seconds"])
    return out


def cost_row(
    method: str, *, train_epochs: float, compute_seconds: float, num_epochs: int, timing: Mapping
) -> dict:
    """The scoring cost of one method as fractions of one full training of one seed.

    Args:
      method: its name.
      train_epochs: score-training epochs the method needs (0 for random or GraNd at init).
      compute_seconds: wall seconds of its score computation and selection, all K seeds.
      num_epochs: epochs of a full training.
      timing: `training_seconds` of the score run.

    Returns:
      {'method', 'full_training_seconds' (one seed), 'train_epochs', 'compute_seconds',
      'cost_k_seeds' (the K-seed training it needs plus the computation), 'cost_one_seed' (the
      same for one seed, as a single-run peer computes it)}.
    """
    full = num_epochs * timing["seed_epoch_seconds"]
    k = timing["num_seeds"]
    return {
        "method": method,
        "full_training_seconds": round(full, 3),
        "train_epochs": train_epochs,
        "compute_seconds": round(compute_seconds, 3),
        "cost_k_seeds": (k * train_epochs * timing["seed_epoch_seconds"] + compute_seconds) / full,
        "cost_one_seed": (train_epochs * timing["seed_epoch_seconds"] + compute_seconds / k) / full,
    }


def plot_methods(rows: Sequence[Mapping], families: Mapping[str, str], out_stem) -> list[str]:
    """Test accuracy against the fraction pruned, one panel per family of methods, each with
    the random subsets and the full data for reference.

    Args:
      rows: one dict per (run, seed) with 'method', 'prune_fraction', 'test_accuracy', 'status'.
      families: {method: family name}; panels in first-seen order.
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r["test_accuracy"] != ""]
    names = list(dict.fromkeys(families[m] for m in families if m not in ("random", "full")))
    fig = Figure(figsize=(4.0 * len(names), 3.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    for ax, family in zip(axes, names, strict=True):
        for method in ("random", "full", *[m for m, f in families.items() if f == family]):
            group = [r for r in ok if r["method"] == method]
            if not group:
                continue
            if method == "full":
                plots.baseline(ax, group, plots.BASELINE_STYLES["full"])
            elif method == "random":
                plots.band(ax, group, "prune_fraction", "random", color="tab:gray", linestyle=":")
            else:
                plots.band(ax, group, "prune_fraction", method)
        ax.set_title(family)
        ax.set_xlabel("fraction of data pruned")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    axes[0].set_ylabel("test accuracy")
    left_out = len(rows) - len(ok)
    if left_out:
        fig.suptitle(f"{left_out} collapsed or diverged seeds left out", fontsize="small")
    return plots.save_figure(fig, out_stem)


# The column of the summary's accuracy table that quotes each mean with its spread.
MEAN_STD_N = "mean ± std (n)"


def display_rows(compared: Sequence[Mapping]) -> list[dict]:
    """`against_random` rows as the summary shows them: the mean as 'mean ± std (n)'
    (`summary.mean_std_n`) in place of the 'mean', 'std' and 'runs' columns; the band (p16,
    p84), 'vs_random' and the verdict beside it."""
    out = []
    for r in compared:
        row = {}
        for k, v in r.items():
            if k == "mean":
                row[MEAN_STD_N] = summary.mean_std_n(r)
            elif k not in ("std", "runs"):
                row[k] = v
        out.append(row)
    return out


def write_summary(
    path: str,
    title: str,
    accuracy: list[dict],
    costs: list[dict],
    protocol: tuple[str, list[dict]] | None = None,
) -> str:
    """The Markdown summary: the protocol (`report.protocol.section`, when given), accuracy
    per method and fraction against random (`against_random` rows), then costs."""
    heading = (
        "Test accuracy: mean ± sample std (n healthy retraining seeds), the 16th-84th "
        "percentile band the verdict compares with random's"
    )
    sections = [protocol] if protocol else []
    return summary.write_summary(
        path,
        title,
        sections
        + [
            (heading, display_rows(accuracy)),
            ("Scoring cost, as a fraction of one full training of one seed", costs),
        ],
    )
