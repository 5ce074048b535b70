"""Tables of the plotted numbers: per-group summaries over healthy runs, Markdown, output files.

Collapsed and diverged runs are left out of every mean and counted in 'left_out'
(`training.health`).

Usage:

    from datadiet_jax.report import plots, summary
    table = summary.summary_table(rows, ("method", "prune_fraction"))   # mean, std, p16, p84, runs
    summary.mean_std_n(table[0])                                          # '0.8848 ± 0.0005 (n=2)'
    summary.write_outputs("out", "fig1", rows, plots.plot_pruning_curves, "Figure 1",
                          [("Test accuracy", table)])   # out/fig1.csv, .png, .pdf, _summary.md
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from datadiet_jax.report import plots
from datadiet_jax.training import files, health


def summary_table(rows: Sequence[Mapping], keys: Sequence[str]) -> list[dict]:
    """Test accuracy summarized per group of `keys`, over healthy runs only.

    Args:
      rows: one dict per (run, seed) with `keys`, 'test_accuracy' and 'status'.
      keys: grouping columns, in output order.

    Returns:
      One dict per group (in first-seen order) with `keys`, 'runs' (healthy runs averaged, the
      n of the mean), 'left_out' (collapsed or diverged runs), 'mean', 'std' (the sample standard
      deviation of the healthy runs, ddof=1; None with fewer than two), 'p16' and 'p84' (None
      when no run of the group is healthy).
    """
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for group, members in groups.items():
        ok, left_out = health.healthy(members)
        stats = dict(mean=None, std=None, p16=None, p84=None)
        if ok:
            values = [float(r["test_accuracy"]) for r in ok]
            mean, p16, p84 = plots.summarize(values)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else None
            stats = dict(mean=mean, std=std, p16=p16, p84=p84)
        out.append(
            dict(zip(keys, group, strict=True)) | dict(runs=len(ok), left_out=left_out) | stats
        )
    return out


def mean_std_n(row: Mapping) -> str:
    """A `summary_table` row's mean as a reader quotes it: '0.8848 ± 0.0005 (n=2)',
    '0.8800 (n=1)' (no spread from one run), or '-' without a healthy run."""
    if row["mean"] is None:
        return "-"
    spread = "" if row["std"] is None else f" ± {row['std']:.4f}"
    return f"{row['mean']:.4f}{spread} (n={row['runs']})"


def markdown_table(table: Sequence[Mapping]) -> str:
    """A Markdown table of dict rows; floats in (0, 1] with 4 decimals."""
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = [
            "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
            for v in row.values()
        ]
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
    files.write_csv(csv_path, rows)
    figure = plot(rows, os.path.join(out_dir, name))
    summary = write_summary(os.path.join(out_dir, f"{name}_summary.md"), title, sections)
    return {"figure": figure, "csv": [csv_path], "summary": [summary]}


def write_summary(path: str, title: str, sections: Sequence[tuple[str, list[dict]]]) -> str:
    """Writes a Markdown summary: a title, then one table per (heading, table) section."""
    parts = [f"# {title}", ""]
    for heading, table in sections:
        parts += [f"## {heading}", "", markdown_table(table) if table else "(no runs)", ""]
    files.atomic_write_bytes(path, "\n".join(parts).encode())
    return path
