"""The crossover study's figures: the phase diagram and the accuracy-against-kept curves.

The phase diagram reads `report.crossover.phase` rows, the curves `report.crossover.points`
(nothing trains); `report.crossover.plot_phase` computes the rows of each score and calls it.

Usage:

    from datadiet_jax.report import crossover, crossover_plots
    pts = crossover.points(rows)
    crossover_plots.plot_phase([("el2n@1", crossover.phase(pts, "el2n@1"))], "out/phase")
    crossover_plots.plot_curves(pts, ["el2n@1", "grand@1"], "out/crossover_curves")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.colors
import numpy as np
from matplotlib.figure import Figure

from datadiet_jax.report import plots

COLORS = {"hardest": "tab:red", "easiest": "tab:blue", "random": "tab:gray", "tie": "white"}
# Margins over random of this many seed spreads or more get the full colour.
FULL_COLOUR_SPREADS = 4.0


def plot_phase(panels: Sequence[tuple[str, Sequence[Mapping]]], out_stem) -> list[str]:
    """The phase diagram: a panel per (score, its `crossover.phase` rows), data size (rows)
    against fraction pruned (columns).

    Each cell is coloured by the better of hardest (red) and easiest (blue), paler the smaller
    its margin over random in seed spreads, hatched where it falls below random, and says that
    margin ('H +2.1σ'; 'n/a' without a
    spread). Writes `out_stem`.png and .pdf and returns their paths.
    """
    panels = [(s, rows) for s, rows in panels if rows]
    # Every panel on the same grid: a size or fraction a score was not ranked at stays grey.
    sizes = sorted({r["num_examples"] for _, rows in panels for r in rows})
    fractions = sorted({r["prune_fraction"] for _, rows in panels for r in rows})
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 1.2 + 0.6 * max(1, len(sizes))))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (score, rows) in zip(axes, panels, strict=False):
        ax.set_facecolor("0.85")
        for r in rows:
            x, y = fractions.index(r["prune_fraction"]), sizes.index(r["num_examples"])
            m = r["margin_in_spread"]
            below = r["margin"] is not None and r["margin"] < 0
            strength = 0.5 if m is None else min(1.0, max(0.15, m / FULL_COLOUR_SPREADS))
            ax.add_patch(_square(x, y, COLORS[r["better"]], strength, hatch="//" if below else ""))
            label = "n/a" if m is None else f"{m:+.1f}\N{GREEK SMALL LETTER SIGMA}"
            box = dict(facecolor="white", alpha=0.85, edgecolor="none", pad=1.5)
            text = f"{r['better'][0].upper()} {label}"
            ax.text(x, y, text, ha="center", va="center", size=8, bbox=box)
        ax.set_xlim(-0.5, len(fractions) - 0.5)
        ax.set_ylim(-0.5, len(sizes) - 0.5)
        ax.set_xticks(range(len(fractions)), [f"{f:g}" for f in fractions])
        ax.set_yticks(range(len(sizes)), [f"{n:,}" for n in sizes])
        ax.set_xlabel("fraction pruned")
        ax.set_ylabel("training examples N")
        ax.set_title(f"{score}: better of hardest (H) / easiest (E)", size=9)
    fig.suptitle(
        "margin of the better over random, in seed spreads \N{GREEK SMALL LETTER SIGMA} "
        "(paler: a smaller margin; hatched: below random; grey: not ranked)",
        size=9,
    )
    fig.tight_layout()
    return plots.save_figure(fig, out_stem)


def _square(x: float, y: float, color: str, alpha: float, hatch: str = ""):
    from matplotlib.patches import Rectangle

    corner, face = (x - 0.5, y - 0.5), matplotlib.colors.to_rgba(color, alpha)
    return Rectangle(corner, 1.0, 1.0, facecolor=face, edgecolor="0.45", hatch=hatch)


def plot_curves(pts: Sequence[Mapping], scores: Sequence[str], out_stem) -> list[str]:
    """Test accuracy against examples kept: a row of panels per score, a panel per data size,
    hardest, easiest and random as means with the seeds' std as error bars, and the full data
    as a dashed line. Writes `out_stem`.png and .pdf and returns their paths."""
    sizes = sorted({p["num_examples"] for p in pts})
    rows = [s for s in scores if any(p["score"] == s for p in pts)]
    fig = Figure(figsize=(3.0 * len(sizes), 2.6 * max(1, len(rows))))
    axes = fig.subplots(max(1, len(rows)), len(sizes), squeeze=False)
    for i, score in enumerate(rows):
        for j, n_examples in enumerate(sizes):
            ax = axes[i][j]
            here = [p for p in pts if p["num_examples"] == n_examples and p["mean"] is not None]
            for strategy in ("hardest", "easiest", "random"):
                line = [
                    p for p in here if p["strategy"] == strategy and p["score"] in (score, "random")
                ]
                _errorbar(ax, line, strategy)
            for p in (p for p in here if p["strategy"] == "full"):
                ax.axhline(p["mean"], color="k", linestyle="--", linewidth=1, label="full")
            if not any(p["score"] == score for p in here):
                ax.text(0.5, 0.5, "not ranked at this N", transform=ax.transAxes, ha="center")
            ax.set_title(f"{score}, N = {n_examples:,}", size=9)
            ax.set_xlabel("examples kept")
            if j == 0:
                ax.set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return plots.save_figure(fig, out_stem)


def _errorbar(ax, line: Sequence[Mapping], strategy: str) -> None:
    line = sorted(line, key=lambda p: p["num_kept"])
    if not line:
        return
    kept = np.array([p["num_kept"] for p in line], np.float64)
    mean = np.array([p["mean"] for p in line], np.float64)
    std = np.array([p["std"] or 0.0 for p in line], np.float64)
    ax.errorbar(kept, mean, yerr=std, color=COLORS[strategy], marker="o", ms=3, label=strategy)
