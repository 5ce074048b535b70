"""Pictures of one run, from its work directory alone: its scores, kept sets and accuracies.

`write_run_figures` draws into `WORKDIR/report/` (each as PNG and PDF, titled with the run's
name, the work directory's own name):

  scores_<score>           a histogram of the score per seed and of the seed mean (one figure per
                           score file; '@' becomes '_' in the file name)
  class_balance            kept and pruned examples per class, one panel per kept set
  accuracy_vs_pruned       test accuracy against the pruned fraction: the mean over the healthy
                           seeds and their range (min-max), one line per score and strategy
                           (only when the run has several fractions)
  spearman                 Spearman rank correlation of the scores between seeds (one panel
                           per score file) and of the seed means between epochs (one panel per
                           score with several epochs)

The numbers behind each figure come from `run_numbers` (no drawing), so they can be checked.
Nothing is trained and no dataset is read.

Usage:

    from datadiet_jax.report import run_figures, run_summary
    config = run_summary.read_config("runs/fm")
    paths = run_figures.write_run_figures(config, "runs/fm", rows)   # rows: summary_rows
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from datadiet_jax.pipeline import artifacts, config_check, plan, retrain
from datadiet_jax.report import numbers, plots, score_export

# Bins of the score histograms.
HISTOGRAM_BINS = 40


def run_title(workdir: str) -> str:
    """The run's name in figure titles: its work directory's own name (no absolute path)."""
    return os.path.basename(os.path.abspath(workdir).rstrip(os.sep))


def loaded_scores(config, workdir: str, scores_config=None) -> dict[str, np.ndarray]:
    """{score name: per-seed scores [K, N]} of the run's score files that exist (features
    files left out), each checked by `artifacts.load_scores`."""
    source = config.score.workdir or workdir
    spec = config_check.score_spec(scores_config or config)
    out = {}
    for name, path in score_export.score_files(spec, source).items():
        per_seed = artifacts.load_scores(path)["per_seed"]
        if per_seed.ndim == 2:
            out[name] = np.asarray(per_seed)
    return out


def kept_sets(config, workdir: str) -> dict[str, np.ndarray]:
    """{run name: kept indices [M]} of every planned run whose kept.npz is written."""
    out = {}
    for run in plan.planned_runs(config.prune):
        kept, _ = retrain.read_kept(os.path.join(workdir, "retrain", run.name, "kept.npz"))
        if kept is not None:
            out[run.name] = kept
    return out


def class_balance(kept: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """{run name: [2, C] int64}: per class, the kept (row 0) and pruned (row 1) examples."""
    num_classes = int(np.max(labels)) + 1
    out = {}
    for name, index in kept.items():
        pruned = np.setdiff1d(np.arange(len(labels)), index)
        rows = [
            numbers.class_counts(np.asarray(i, np.int64), labels, num_classes)
            for i in (index, pruned)
        ]
        out[name] = np.stack(rows)
    return out


def accuracy_curves(rows: list[dict]) -> dict[str, np.ndarray]:
    """{'<score> <strategy>': [P, 4] (pruned fraction, mean, min, max)} of the runs with a
    healthy accuracy, sorted by fraction, the full-data run (fraction 0) on every line; only
    lines with two pruned fractions or more."""
    done = [r for r in rows if r["acc_mean"] is not None and not r.get("offset")]
    full = [r for r in done if not r["prune_fraction"]]
    lines: dict[str, list] = {}
    for r in done:
        if r["prune_fraction"]:
            lines.setdefault(f"{r['score'] or ''} {r['strategy']}".strip(), []).append(r)
    out = {}
    for name, members in lines.items():
        points = sorted(
            (r["prune_fraction"], r["acc_mean"], r["acc_min"], r["acc_max"]) for r in full + members
        )
        if len({p[0] for p in points if p[0]}) >= 2:
            out[name] = np.asarray(points, np.float64)
    return out


def spearman_panels(scores: dict[str, np.ndarray]) -> dict[str, tuple[list[str], np.ndarray]]:
    """{panel title: (names, [M, M] Spearman matrix)}: between the seeds of each score file
    with K >= 2, and between the epochs of each score computed at several epochs (the seed
    means)."""
    out = {}
    for name, per_seed in scores.items():
        if per_seed.shape[0] >= 2:
            seeds = {f"seed {k}": row for k, row in enumerate(per_seed)}
            out[f"{name}: between seeds"] = numbers.spearman_matrix(seeds)
    by_kind: dict[str, dict] = {}
    for name, per_seed in scores.items():
        kind, _, epoch = name.partition("@")
        if epoch:
            by_kind.setdefault(kind, {})[f"epoch {epoch}"] = per_seed.mean(0)
    for kind, epochs in by_kind.items():
        if len(epochs) >= 2:
            out[f"{kind}: between epochs"] = numbers.spearman_matrix(epochs)
    return out


def run_numbers(config, workdir: str, rows: list[dict], scores_config=None) -> dict:
    """Every number the run's figures show: {'scores': `loaded_scores`, 'class_balance',
    'accuracy': `accuracy_curves`, 'spearman': `spearman_panels`}."""
    scores = loaded_scores(config, workdir, scores_config)
    labels = score_export.read_labels(workdir)
    balance = {}
    if labels is not None:
        balance = class_balance(kept_sets(config, workdir), labels["labels"])
    return {
        "scores": scores,
        "class_balance": balance,
        "accuracy": accuracy_curves(rows),
        "spearman": spearman_panels(scores),
    }


def write_run_figures(config, workdir: str, rows: list[dict], scores_config=None) -> list[str]:
    """Draws the run's figures (those it has the numbers for) into `WORKDIR/report/`.

    Args:
      config: the run's config (`run_summary.read_config`).
      workdir: its work directory.
      rows: its `run_summary.summary_rows`.
      scores_config: the config of the run in `config.score.workdir`, when its scores come
        from there.

    Returns:
      The written paths (PNG, PDF of each figure).
    """
    found = run_numbers(config, workdir, rows, scores_config)
    out_dir, title = os.path.join(workdir, "report"), run_title(workdir)
    paths = []
    for name, per_seed in found["scores"].items():
        stem = os.path.join(out_dir, f"scores_{name.replace('@', '_')}")
        paths += _histograms(name, per_seed, f"{title}: {name}", stem)
    if found["class_balance"]:
        stem = os.path.join(out_dir, "class_balance")
        paths += _class_balance(found["class_balance"], title, stem)
    if found["accuracy"]:
        stem = os.path.join(out_dir, "accuracy_vs_pruned")
        paths += _accuracy(found["accuracy"], title, stem)
    if found["spearman"]:
        paths += _spearman(found["spearman"], title, os.path.join(out_dir, "spearman"))
    return paths


def _grid(count: int, width: float, height: float):
    ncols = min(4, count)
    nrows = -(-count // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, axes


def _histograms(name: str, per_seed: np.ndarray, title: str, stem: str) -> list[str]:
    named = {f"seed {k}": row for k, row in enumerate(per_seed)} | {"mean": per_seed.mean(0)}
    hists = numbers.score_histograms(named, bins=HISTOGRAM_BINS)
    fig, axes = _grid(len(hists), 3.0, 2.4)
    for ax, (label, (counts, edges, num_inf)) in zip(axes, hists.items(), strict=False):
        ax.stairs(counts, edges, fill=True, alpha=0.7)
        ax.set_title(label if not num_inf else f"{label} (+{num_inf} at +inf, not shown)")
        ax.set_xlabel(name)
    axes[0].set_ylabel("examples")
    fig.suptitle(title)
    return plots.save_figure(fig, stem)


def _class_balance(balance: dict, title: str, stem: str) -> list[str]:
    fig, axes = _grid(len(balance), 3.6, 2.6)
    for ax, (name, counts) in zip(axes, balance.items(), strict=False):
        classes = np.arange(counts.shape[1])
        ax.bar(classes - 0.2, counts[0], width=0.4, label="kept")
        ax.bar(classes + 0.2, counts[1], width=0.4, label="pruned")
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("class")
    axes[0].set_ylabel("examples")
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{title}: kept and pruned examples per class")
    return plots.save_figure(fig, stem)


def _accuracy(curves: dict, title: str, stem: str) -> list[str]:
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for name, points in curves.items():
        line = ax.plot(points[:, 0], points[:, 1], marker="o", label=name)[0]
        ax.fill_between(points[:, 0], points[:, 2], points[:, 3], alpha=0.2, color=line.get_color())
    ax.set_xlabel("fraction of the training set pruned")
    ax.set_ylabel("test accuracy (band: seed range)")
    ax.legend(fontsize="small")
    ax.set_title(f"{title}: accuracy against the pruned fraction")
    return plots.save_figure(fig, stem)


def _spearman(panels: dict, title: str, stem: str) -> list[str]:
    size = max(len(names) for names, _ in panels.values())
    fig, axes = _grid(len(panels), 1.6 + 0.55 * size, 1.2 + 0.5 * size)
    for ax, (panel, (names, matrix)) in zip(axes, panels.items(), strict=False):
        image = ax.imshow(matrix, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        ax.set_yticks(range(len(names)), names, fontsize="small")
        for (i, j), value in np.ndenumerate(matrix):
            color = "white" if np.isfinite(value) and abs(value) > 0.6 else "black"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small", color=color)
        ax.set_title(panel, fontsize="small")
    fig.colorbar(image, ax=list(axes[: len(panels)]), label="Spearman correlation")
    fig.suptitle(f"{title}: rank agreement of the scores")
    return plots.save_figure(fig, stem)
