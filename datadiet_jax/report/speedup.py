"""The speedup study's figure from its rows: test accuracy against wall-clock seconds and
against examples seen, one colour per arm (nothing trains).

Each arm is drawn as the mean of its healthy seeds after every epoch, with the range of the
seeds (min to max) shaded; the x of a point is the arm's cumulative seconds (equal for the
seeds, trained together) or the seeds' mean of their examples seen. Arms of one kind share a
hue, the stronger pruning level the lighter shade; the full data is black.

Usage:

    from datadiet_jax.report import speedup
    speedup.plot_speedup(rows, "out/speedup")   # rows: one per (arm, seed, epoch)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure

from datadiet_jax.report import plots, speedup_summary

PANELS = (("seconds", "wall-clock seconds (training)"), ("examples", "examples seen per seed"))


def colours(arms: Sequence[str], kinds: Mapping[str, str]) -> dict[str, tuple]:
    """{arm: colour}: black for 'full'; each kind a hue of tab20 (dark, then light shades for
    its later levels)."""
    table = matplotlib.colormaps["tab20"].colors
    order = list(dict.fromkeys(kinds[a] for a in arms if kinds[a] != "full"))
    used: dict[str, int] = {}
    out = {}
    for arm in arms:
        kind = kinds[arm]
        if kind == "full":
            out[arm] = (0.0, 0.0, 0.0)
            continue
        shade = used.get(kind, 0)
        used[kind] = shade + 1
        out[arm] = table[(2 * order.index(kind) + min(shade, 1)) % len(table)]
    return out


def plot_speedup(rows: Sequence[Mapping], out_stem) -> list[str]:
    """Two panels: test accuracy against seconds, and against examples seen.

    Args:
      rows: one dict per (arm, seed, epoch) with 'arm', 'kind', 'seed', 'epoch', 'steps',
        'seconds', 'examples', 'test_accuracy' and 'status'.
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    arm_curves = speedup_summary.curves(rows)
    kinds = {str(r["arm"]): str(r["kind"]) for r in rows}
    colour = colours(list(arm_curves), kinds)
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    axes = fig.subplots(1, len(PANELS), sharey=True)
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        for arm, c in arm_curves.items():
            if not c["accuracy"].size:
                continue
            x = c[key] if key == "seconds" else c[key].mean(axis=0)
            acc = c["accuracy"]
            style = {"linewidth": 2.0} if arm == "full" else {"linewidth": 1.2}
            ax.plot(x, acc.mean(0), marker="o", markersize=3, color=colour[arm], label=arm, **style)
            ax.fill_between(x, acc.min(0), acc.max(0), color=colour[arm], alpha=0.15, linewidth=0)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize="x-small", loc="lower right", ncol=2)
    left_out = sum(c["left_out"] for c in arm_curves.values())
    if left_out:
        fig.suptitle(f"{left_out} collapsed or diverged seeds left out", fontsize="small")
    return plots.save_figure(fig, out_stem)
