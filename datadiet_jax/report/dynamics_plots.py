"""Figures of the training-dynamics studies (Figures 3 and 4, seed count), from saved rows only.

Each function takes rows and an output path stem, writes `<stem>.png` and `<stem>.pdf`
(`plots.save_figure`) and returns the written paths.

Usage:

    from datadiet_jax.report import dynamics_plots
    dynamics_plots.plot_kernel_velocity(rows, "out/fig3")   # 'noise_fraction', 'epoch', ...
    dynamics_plots.plot_barriers(rows, "out/fig4", bn="recompute")   # connectivity's rows
    dynamics_plots.plot_seed_count(spearman_rows, accuracy_rows, "out/seedcount")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from datadiet_jax.report import plots

SUBSET_STYLES = {
    "highest": {"color": "tab:red", "label": "highest EL2N"},
    "lowest": {"color": "tab:blue", "label": "lowest EL2N"},
    "random": {"color": "tab:gray", "label": "random"},
    "test": {"color": "black", "linestyle": "--", "label": "test set"},
}


def plot_barriers(rows: Sequence[Mapping], out_stem, bn: str = "recompute") -> list[str]:
    """Error barrier at alpha = 1/2 against the spawning epoch, one curve per subset (Figure 4).

    Args:
      rows: measurement rows with 'bn', 'alpha', 'subset', 'spawn_epoch' and 'barrier'.
      out_stem: output path without extension.
      bn: the BatchNorm mode drawn.

    Returns:
      Written paths (PNG, PDF).
    """
    rows = [r for r in rows if r["bn"] == bn and float(r["alpha"]) == 0.5]
    if not rows:
        raise ValueError(f"no rows with bn={bn!r} at alpha 0.5; measure the barriers first")
    fig = Figure(figsize=(5.0, 3.5), layout="constrained")
    ax = fig.subplots()
    for name in dict.fromkeys(r["subset"] for r in rows):
        subset = [r for r in rows if r["subset"] == name]
        xs, ys, _, _ = plots.summarize_by(subset, "spawn_epoch", "barrier")
        style = SUBSET_STYLES.get(name, {"label": name})
        ax.plot(xs, ys, marker="o", markersize=3, **style)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("spawning epoch t*")
    ax.set_ylabel("error barrier at the midpoint")
    ax.set_title(f"children trained from t* to the end (BatchNorm: {bn})", fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return plots.save_figure(fig, out_stem)


def plot_seed_count(spearman_rows: Sequence[Mapping], accuracy_rows: Sequence[Mapping], out_stem):
    """Left: Spearman correlation of the mean of the first k seeds with the mean of all K, per
    score. Right: test accuracy of the subsets pruned with k seeds, with random and full data.

    Args:
      spearman_rows: rows with 'score', 'comparison', 'num_seeds' and 'spearman'
        (comparison 'first_k_vs_all' is drawn).
      accuracy_rows: rows with 'method' ('k seeds', 'random' or 'full'), 'num_seeds' and
        'test_accuracy'.
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    fig = Figure(figsize=(9.0, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    curves = [r for r in spearman_rows if r["comparison"] == "first_k_vs_all"]
    for score in dict.fromkeys(r["score"] for r in curves):
        xs, ys, _, _ = plots.summarize_by(
            [r for r in curves if r["score"] == score], "num_seeds", "spearman"
        )
        left.plot(xs, ys, marker="o", markersize=3, label=score)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
    left.set_xlabel("seeds averaged (k)")
    left.set_ylabel("Spearman vs mean of all seeds")
    left.grid(alpha=0.3)
    left.legend(fontsize="small")
    pruned = [r for r in accuracy_rows if r["method"] == "k seeds"]
    xs, means, lo, hi = plots.summarize_by(pruned, "num_seeds")
    (line,) = right.plot(xs, means, marker="o", markersize=3, label="pruned with k seeds")
    right.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    for name, style in plots.BASELINE_STYLES.items():
        base = [float(r["test_accuracy"]) for r in accuracy_rows if r["method"] == name]
        if base:
            right.axhline(plots.summarize(base)[0], **style)
    right.set_xlabel("seeds averaged (k)")
    right.set_ylabel("test accuracy")
    right.grid(alpha=0.3)
    right.legend(fontsize="small")
    return plots.save_figure(fig, out_stem)


def plot_kernel_velocity(rows: Sequence[Mapping], out_stem) -> list[str]:
    """Kernel velocity against the EL2N rank of the window, one curve per epoch t and one panel
    per label-noise level (Figure 3); the mean over seeds with a 16th-84th percentile band.

    Args:
      rows: rows with 'noise_fraction', 'epoch', 'window_start' and 'velocity' (one per seed).
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    if not rows:
        raise ValueError("no velocity rows; measure the kernel velocities first")
    levels = sorted({float(r["noise_fraction"]) for r in rows})
    fig = Figure(figsize=(4.5 * len(levels), 3.5), layout="constrained")
    axes = fig.subplots(1, len(levels), squeeze=False)[0]
    for ax, noise in zip(axes, levels, strict=True):
        at = [r for r in rows if float(r["noise_fraction"]) == noise]
        for epoch in sorted({int(r["epoch"]) for r in at}):
            xs, ys, lo, hi = plots.summarize_by(
                [r for r in at if int(r["epoch"]) == epoch], "window_start", "velocity"
            )
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=f"epoch {epoch}")
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("EL2N rank of the window's first example (low to high)")
        ax.set_ylabel("kernel velocity (cosine distance, t to t+1)")
        ax.set_title(f"{round(100 * noise)}% random labels", fontsize="small")
        # Early epochs move the kernel tens of times faster than later ones: a log axis keeps
        # every epoch's shape visible (velocities are cosine distances, > 0 in practice).
        if min(float(r["velocity"]) for r in at) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    return plots.save_figure(fig, out_stem)
