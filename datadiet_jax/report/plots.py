"""Figures built from saved results only (never from training).

Each plotting function takes data plus an output path stem, writes `<stem>.png` and `<stem>.pdf`
atomically (a temporary file in the same folder, then `os.replace`) and returns the written paths.
Figures are drawn on `matplotlib.figure.Figure` objects with no pyplot state, so the Agg (PNG) and
PDF canvases are used whatever the interactive backend of a notebook is, and nothing leaks between
calls. Curves show the mean over runs with a 16th-84th percentile band (one standard deviation
for normally distributed accuracies). Runs whose 'status' is 'collapsed' or 'diverged' (see
`datadiet_jax.training.health`) are left out of every curve, and the figure says how many.

Usage:

    from datadiet_jax.report import plots
    rows = [{"method": "el2n@1", "prune_fraction": 0.3, "test_accuracy": 0.9}, ...]
    paths = plots.plot_pruning_curves(rows, "out/fig1")     # out/fig1.png, out/fig1.pdf
    mean, p16, p84 = plots.summarize([0.90, 0.91, 0.89])
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from absl import logging
from matplotlib.figure import Figure

from datadiet_jax.training import files, health

FORMATS = ("png", "pdf")
BASELINE_STYLES = {
    "full": {"color": "black", "linestyle": "--", "label": "full data"},
    "random": {"color": "tab:gray", "linestyle": ":", "label": "random"},
}


def summarize(values) -> tuple[float, float, float]:
    """Mean and 16th/84th percentiles (linear interpolation) of repeated measurements.

    Args:
      values: `[R]` float, one value per run.

    Returns:
      (mean, p16, p84).
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("summarize got no values; each plotted point needs at least one run")
    p16, p84 = np.percentile(arr, [16.0, 84.0])
    return float(arr.mean()), float(p16), float(p84)


def summarize_by(rows: Sequence[Mapping], x_key: str, y_key: str = "test_accuracy"):
    """Groups rows by `x_key` and summarizes `y_key` per group.

    Args:
      rows: dicts with numeric (or numeric string) values under `x_key` and `y_key`.
      x_key: grouping key (e.g. 'offset').
      y_key: summarized key.

    Returns:
      (xs, means, p16s, p84s): four `[G] float64` arrays, xs ascending.
    """
    groups: dict[float, list[float]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(_number(row, x_key, i), []).append(_number(row, y_key, i))
    xs = np.array(sorted(groups), dtype=np.float64)
    stats = np.array([summarize(groups[x]) for x in sorted(groups)], dtype=np.float64)
    stats = stats.reshape(-1, 3)
    return xs, stats[:, 0], stats[:, 1], stats[:, 2]


def _number(row: Mapping, key: str, index: int) -> float:
    try:
        return float(row[key])
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"row {index} has {key}={row[key]!r}, which is not a number; fix the results CSV"
        ) from e


def _check_rows(rows, keys: Sequence[str], fn_name: str) -> list[Mapping]:
    rows = list(rows)
    if not rows:
        raise ValueError(f"{fn_name} got no rows; collect the results CSV first")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i} is a {type(row).__name__}; pass dicts (csv.DictReader rows)")
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(
                f"row {i} lacks {', '.join(missing)}; {fn_name} needs keys {', '.join(keys)}"
            )
    return rows


def _healthy(rows: list[Mapping], fn_name: str) -> tuple[list[Mapping], str]:
    """The rows of healthy runs, and a note saying how many were left out ('' if none)."""
    kept, left_out = health.healthy(rows)
    if not left_out:
        return kept, ""
    logging.warning(
        "%s leaves out %d collapsed or diverged runs of %d.", fn_name, left_out, len(rows)
    )
    if not kept:
        raise ValueError(f"{fn_name}: every run collapsed or diverged; nothing to plot")
    return kept, f"{left_out} of {len(rows)} runs left out (collapsed or diverged)"


def _out_paths(out_stem) -> tuple[Path, list[Path]]:
    stem = Path(out_stem)
    if stem.suffix in {f".{fmt}" for fmt in FORMATS}:
        stem = stem.with_suffix("")
    return stem, [stem.parent / f"{stem.name}.{fmt}" for fmt in FORMATS]


def save_figure(fig: Figure, out_stem) -> list[str]:
    """Writes `fig` as `<out_stem>.png` and `<out_stem>.pdf`, each atomically.

    Args:
      fig: the figure.
      out_stem: path without extension (a '.png' or '.pdf' ending is dropped); missing parent
        folders are created.

    Returns:
      The written paths, PNG first.
    """
    stem, paths = _out_paths(out_stem)
    for fmt, path in zip(FORMATS, paths, strict=True):
        buf = io.BytesIO()
        # No creation date in the PDF, so identical results give identical files.
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
        files.atomic_write_bytes(str(path), buf.getvalue())
    logging.info("Wrote %s", ", ".join(str(p) for p in paths))
    return [str(p) for p in paths]


def band(ax, rows, x_key, label, **style):
    """Draws the mean test accuracy of `rows` against `x_key` with its 16-84 band on `ax`."""
    xs, means, lo, hi = summarize_by(rows, x_key)
    (line,) = ax.plot(xs, means, marker="o", markersize=3, label=label, **style)
    ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def baseline(ax, rows, style):
    """Draws the mean test accuracy of `rows` as a horizontal line with its 16-84 band."""
    mean, lo, hi = summarize([_number(r, "test_accuracy", i) for i, r in enumerate(rows)])
    ax.axhline(mean, **style)
    ax.axhspan(lo, hi, color=style["color"], alpha=0.08, linewidth=0)


def plot_offset_curves(rows: Sequence[Mapping], out_stem) -> list[str]:
    """Test accuracy against the number of hardest examples skipped (paper Figure 2).

    Args:
      rows: one dict per training run with 'offset' (hardest examples skipped), 'noise_fraction',
        'test_accuracy' and 'strategy' ('offset', 'random' or 'full'); one panel per noise
        fraction, with 'full' and 'random' drawn as horizontal reference lines.
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    keys = ("offset", "noise_fraction", "test_accuracy", "strategy")
    rows = _check_rows(rows, keys, "plot_offset_curves")
    for i, row in enumerate(rows):
        if row["strategy"] not in ("offset", "random", "full"):
            raise ValueError(
                f"row {i} has strategy={row['strategy']!r}; use 'offset', 'random' or 'full'"
            )
    rows, note = _healthy(rows, "plot_offset_curves")
    fractions = sorted({_number(r, "noise_fraction", i) for i, r in enumerate(rows)})
    fig = Figure(figsize=(4.0 * len(fractions), 3.2), layout="constrained")
    if note:
        fig.suptitle(note, fontsize="small")
    axes = fig.subplots(1, len(fractions), squeeze=False)[0]
    for ax, fraction in zip(axes, fractions, strict=True):
        panel = [r for i, r in enumerate(rows) if _number(r, "noise_fraction", i) == fraction]
        for name, style in BASELINE_STYLES.items():
            group = [r for r in panel if r["strategy"] == name]
            if group:
                baseline(ax, group, style)
        offsets = [r for r in panel if r["strategy"] == "offset"]
        if offsets:
            band(ax, offsets, "offset", "offset window", color="tab:blue")
        ax.set_title(f"label noise {fraction:.0%}")
        ax.set_xlabel("offset (hardest examples skipped)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize="small")
    return save_figure(fig, out_stem)


def _method_curves(rows, group_key, x_key, xlabel, out_stem) -> list[str]:
    rows, note = _healthy(rows, "a pruning figure")
    fig = Figure(figsize=(5.0, 3.5), layout="constrained")
    ax = fig.subplots()
    if note:
        ax.set_title(note, fontsize="small")
    groups: dict[str, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(str(row[group_key]), []).append(row)
    for name, group in groups.items():
        if name == "full":
            baseline(ax, group, BASELINE_STYLES["full"])
        elif name == "random":
            band(ax, group, x_key, name, color="tab:gray", linestyle=":")
        else:
            band(ax, group, x_key, name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out_stem)


def plot_pruning_curves(rows: Sequence[Mapping], out_stem) -> list[str]:
    """Test accuracy against the fraction pruned, one line per method (paper Figure 1, bottom).

    Args:
      rows: one dict per run with 'method' (e.g. 'el2n@20', 'grand@0', 'forgetting', 'random',
        'full'), 'prune_fraction' and 'test_accuracy'; 'full' is drawn as a horizontal line.
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    keys = ("method", "prune_fraction", "test_accuracy")
    rows = _check_rows(rows, keys, "plot_pruning_curves")
    return _method_curves(rows, "method", "prune_fraction", "fraction of data pruned", out_stem)


def plot_score_epoch_curves(rows: Sequence[Mapping], out_stem) -> list[str]:
    """Test accuracy against the epoch scores were computed at (paper Figure 1, top).

    Args:
      rows: one dict per run with 'score' (e.g. 'el2n', 'grand'), 'score_epoch' and
        'test_accuracy'; one line per score kind ('full' is drawn as a horizontal line).
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    keys = ("score", "score_epoch", "test_accuracy")
    rows = _check_rows(rows, keys, "plot_score_epoch_curves")
    return _method_curves(rows, "score", "score_epoch", "epoch of scoring", out_stem)


def plot_score_histograms(hists: Mapping[str, tuple], out_stem) -> list[str]:
    """One histogram panel per score vector.

    Args:
      hists: {name: (counts `[B]`, edges `[B + 1]`[, number of +inf scores])}, as from
        `numbers.score_histograms`; the +inf count is written in the panel's title.
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    if not hists:
        raise ValueError("plot_score_histograms got no histograms; pass {name: (counts, edges)}")
    ncols = min(4, len(hists))
    nrows = -(-len(hists) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, hist) in zip(axes, hists.items(), strict=False):
        counts, edges = (np.asarray(a) for a in hist[:2])
        num_inf = int(hist[2]) if len(hist) > 2 else 0
        if edges.shape != (counts.shape[0] + 1,):
            raise ValueError(
                f"histogram {name!r} has {counts.shape[0]} counts and {edges.shape[0]} edges; "
                "pass (counts, edges) from np.histogram"
            )
        ax.stairs(counts, edges, fill=True, alpha=0.7)
        ax.set_title(name if not num_inf else f"{name} (+{num_inf} at +inf, not shown)")
        ax.set_xlabel("score")
    for ax in axes[len(hists) :]:
        ax.set_axis_off()
    axes[0].set_ylabel("examples")
    return save_figure(fig, out_stem)


def plot_spearman(names: Sequence[str], matrix, out_stem) -> list[str]:
    """Heat map of Spearman rank correlations, with values written in the cells.

    Args:
      names: M labels.
      matrix: `[M, M]` float in [-1, 1] (NaN allowed), as from `numbers.spearman_matrix`.
      out_stem: output path without extension.

    Returns:
      Written paths (PNG, PDF).
    """
    names = [str(n) for n in names]
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(names), len(names)) or not names:
        raise ValueError(
            f"matrix has shape {matrix.shape} for {len(names)} names; pass the output of "
            "numbers.spearman_matrix"
        )
    size = 1.0 + 0.7 * len(names)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if np.isfinite(value) and abs(value) > 0.6 else "black"
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="small", color=color)
    fig.colorbar(image, ax=ax, label="Spearman correlation")
    return save_figure(fig, out_stem)


def _display(image: np.ndarray) -> tuple[np.ndarray, dict]:
    if image.shape[-1] == 1:
        image = image[..., 0]
    if np.issubdtype(image.dtype, np.integer):
        return image, {"vmin": 0, "vmax": 255}
    # Normalized float images are rescaled per image to [0, 1] for display.
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image), {
        "vmin": 0,
        "vmax": 1,
    }


def plot_image_grid(
    images, labels, indices_by_class: Mapping, out_stem, class_names=None
) -> list[str]:
    """Grid of the hardest and easiest examples of each class.

    Rows are classes; columns are the k hardest (highest score first) then the k easiest (lowest
    first). Each cell is titled with the example index; when `labels[index]` differs from the
    row's class (e.g. clean labels against rows built from noisy labels) the label is shown in red.

    Args:
      images: `[N, H, W, C]` float or uint8, C = 1 or 3.
      labels: `[N]` int labels to compare with the rows.
      indices_by_class: {class: {'hardest': [int], 'easiest': [int]}}, as from
        `numbers.top_bottom_per_class`.
      out_stem: output path without extension.
      class_names: optional names indexed by class.

    Returns:
      Written paths (PNG, PDF).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images have shape {images.shape}; pass [N, H, W, C] with C = 1 or 3")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels have shape {labels.shape}; pass [{images.shape[0]}] labels")
    if not indices_by_class:
        raise ValueError("indices_by_class is empty; pass numbers.top_bottom_per_class output")
    classes = sorted(indices_by_class)
    for c in classes:
        entry = indices_by_class[c]
        if not isinstance(entry, Mapping) or not {"hardest", "easiest"} <= set(entry):
            raise ValueError(f"class {c} needs {{'hardest': [...], 'easiest': [...]}} indices")
        for i in [*entry["hardest"], *entry["easiest"]]:
            if not 0 <= int(i) < images.shape[0]:
                raise ValueError(f"index {i} of class {c} is outside the {images.shape[0]} images")
    k = max(1, max(max(len(e["hardest"]), len(e["easiest"])) for e in indices_by_class.values()))
    fig = Figure(figsize=(1.1 * 2 * k + 0.8, 1.25 * len(classes) + 0.4), layout="constrained")
    axes = fig.subplots(len(classes), 2 * k, squeeze=False)
    fig.suptitle(f"left: {k} hardest (highest score)   right: {k} easiest (lowest score)")
    for row, c in enumerate(classes):
        entry = indices_by_class[c]
        cells = [*entry["hardest"], *[None] * (k - len(entry["hardest"]))]
        cells += [*entry["easiest"], *[None] * (k - len(entry["easiest"]))]
        for col, index in enumerate(cells):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if index is not None:
                shown, scale = _display(images[int(index)])
                ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, **scale)
                label = labels[int(index)]
                title = f"#{int(index)}" + (f" y={label}" if label != c else "")
                ax.set_title(title, fontsize=6, color="red" if label != c else "black")
            elif col > 0:
                ax.set_axis_off()
        axes[row, 0].set_ylabel(str(class_names[c]) if class_names is not None else str(c))
    return save_figure(fig, out_stem)
