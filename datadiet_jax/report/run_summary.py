"""The summary of a finished or partial run, read back from its work directory alone.

Every run of the plan (`plan.planned_runs` of the `prune` section of `WORKDIR/config.json`, so runs
not yet started are listed too) gets one row: its status, how many examples it keeps, and the test
accuracy of its healthy retraining seeds as the mean and the range (min-max) over those seeds.
Statuses:

  done         result.json written, every seed 'ok'
  diverged     result.json written, at least one seed diverged (its accuracy is left out)
  collapsed    result.json written, at least one seed collapsed and none diverged (left out)
  in progress  the run's folder holds kept.npz, checkpoints or metrics, but no result.json yet
  not started  nothing in its folder

`write_report` writes only under WORKDIR/report/: `summary.csv` (numeric columns acc_mean,
acc_min, acc_max), `summary.md`, `summary.{png,pdf}` (the same table, titled with the run's
name), `scores.csv` (the per-example scores, `score_export`) and the run's figures
(`run_figures`: score histograms, class balance, accuracy against the pruned fraction, Spearman
correlations); with `export='parquet'` also `scores.parquet` and `kept/<run>.parquet`
(`parquet_export`). Nothing is trained and no dataset is read.

Usage:

    from datadiet_jax.report import run_summary
    report = run_summary.write_report("runs/fashion_mnist")   # {'rows': ..., 'paths': ...}
    print(run_summary.describe(report))
    rows = run_summary.summary_rows("runs/fashion_mnist")     # one dict per planned run
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from datadiet_jax.pipeline import plan
from datadiet_jax.report import parquet_export, plots, run_figures, score_export, summary
from datadiet_jax.training import files, health

DONE, DIVERGED, COLLAPSED = "done", "diverged", "collapsed"
IN_PROGRESS, NOT_STARTED = "in progress", "not started"
ACCURACY_COLUMN = "test accuracy mean (min-max)"
DISPLAY_COLUMNS = ("run", "status", "kept", "seeds ok", ACCURACY_COLUMN)
ACCURACY_NOTE = "test accuracy: mean and range (min-max) over the healthy ('ok') retraining seeds"
# Files of a run folder that show its retraining has begun.
_STARTED_FILES = ("kept.npz", "ckpt", "metrics.jsonl")
_STATUS_COLORS = {
    DONE: "#d9f2d9",
    DIVERGED: "#f8d0d0",
    COLLAPSED: "#f8d0d0",
    IN_PROGRESS: "#fdf1c7",
    NOT_STARTED: "#eeeeee",
}


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config of the run in `workdir`, read back from its `config.json`.

    Raises:
      ValueError: one line naming the folder and the fix when it holds no `config.json`.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"{os.path.abspath(workdir)} is not a run's work directory (it has no config.json); "
            "pass the --workdir given to `python -m datadiet_jax.main`."
        )
    try:
        return ml_collections.ConfigDict(files.read_json(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({type(e).__name__}); rerun that run.") from None


def run_row(workdir: str, run: plan.PlannedRun, num_seeds: int) -> dict:
    """The summary row of one planned run, from `WORKDIR/retrain/<run>/`.

    Args:
      workdir: the run's work directory.
      run: one run of the plan.
      num_seeds: the planned number of retraining seeds (`config.retrain.num_seeds`).

    Returns:
      {'run', 'score', 'strategy', 'prune_fraction', 'offset', 'status', 'num_kept',
      'num_seeds', 'num_ok', 'acc_mean', 'acc_min', 'acc_max'}; the accuracies cover the 'ok'
      seeds only and are None when there is none (or no result yet), as is what is not known yet.
    """
    run_dir = os.path.join(workdir, "retrain", run.name)
    row = {
        "run": run.name,
        "score": run.score,
        "strategy": run.strategy,
        "prune_fraction": run.prune_fraction,
        "offset": run.offset,
        "status": NOT_STARTED,
        "num_kept": None,
        "num_seeds": num_seeds,
        "num_ok": None,
        "acc_mean": None,
        "acc_min": None,
        "acc_max": None,
    }
    result_path = os.path.join(run_dir, "result.json")
    if os.path.isfile(result_path):
        return row | _result_fields(files.read_json(result_path))
    if any(os.path.exists(os.path.join(run_dir, f)) for f in _STARTED_FILES):
        row["status"] = IN_PROGRESS
        kept_path = os.path.join(run_dir, "kept.npz")
        if os.path.isfile(kept_path):
            with np.load(kept_path, allow_pickle=False) as f:
                row["num_kept"] = int(f["index"].size)
    return row


def _result_fields(result: dict) -> dict:
    """Status, kept count and accuracy statistics of one `result.json` (`retrain.train_run`)."""
    accuracies = result["test_accuracy"]
    statuses = result.get("status") or [health.OK] * len(accuracies)
    ok = [float(a) for a, s in zip(accuracies, statuses, strict=True) if s == health.OK]
    status = (
        DIVERGED
        if health.DIVERGED in statuses
        else COLLAPSED
        if health.COLLAPSED in statuses
        else DONE
    )
    stats = dict(acc_mean=None, acc_min=None, acc_max=None)
    if ok:
        stats = dict(acc_mean=float(np.mean(ok)), acc_min=min(ok), acc_max=max(ok))
    return (
        dict(status=status, num_kept=result["num_kept"], num_seeds=len(statuses), num_ok=len(ok))
        | stats
    )


def summary_rows(workdir: str) -> list[dict]:
    """One `run_row` per planned run of the run in `workdir`, in plan order."""
    config = read_config(workdir)
    runs = plan.planned_runs(config.prune)
    return [run_row(workdir, run, config.retrain.num_seeds) for run in runs]


def display_rows(rows: list[dict]) -> list[dict]:
    """The rows as people read them: text cells, the accuracy as 'mean (min-max)'."""
    out = []
    for r in rows:
        seeds = f"{'-' if r['num_ok'] is None else r['num_ok']}/{r['num_seeds']}"
        accuracy = "-"
        if r["acc_mean"] is not None:
            accuracy = f"{r['acc_mean']:.4f} ({r['acc_min']:.4f}-{r['acc_max']:.4f})"
        kept = "-" if r["num_kept"] is None else str(r["num_kept"])
        cells = (r["run"], r["status"], kept, seeds, accuracy)
        out.append(dict(zip(DISPLAY_COLUMNS, cells, strict=True)))
    return out


def table_text(rows: list[dict]) -> str:
    """The display rows as fixed-width text, for the log."""
    table = display_rows(rows)
    columns = DISPLAY_COLUMNS
    widths = {c: max([len(c)] + [len(r[c]) for r in table]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in table]
    return "\n".join(line.rstrip() for line in lines)


def plot_table(rows: list[dict], title: str, out_stem: str) -> list[str]:
    """Draws the display rows as a table; writes `<out_stem>.{png,pdf}` (`plots.save_figure`).

    Returns:
      The written paths, PNG first.
    """
    table = display_rows(rows)
    columns = list(DISPLAY_COLUMNS)
    text = [list(r.values()) for r in table] or [["(no runs planned)"] + [""] * (len(columns) - 1)]
    fig = Figure(figsize=(8, 0.6 + 0.18 * (len(table) + 1)))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    cells = ax.table(
        cellText=text, colLabels=columns, loc="upper center", cellLoc="left", colLoc="left"
    )
    cells.auto_set_font_size(False)
    cells.set_fontsize(8)
    cells.auto_set_column_width(list(range(len(columns))))
    status_col = columns.index("status")
    for i, r in enumerate(table, start=1):
        cells[i, status_col].set_facecolor(_STATUS_COLORS[r["status"]])
    return plots.save_figure(fig, out_stem)


def write_report(workdir: str, export: str = "") -> dict:
    """Writes the summary table (CSV, Markdown, PNG and PDF), the per-example scores CSV and the
    figures of the run in `workdir` into `WORKDIR/report/`; with `export='parquet'` also the
    per-example scores and the kept sets as Parquet (`parquet_export`).

    Returns:
      {'rows': the `summary_rows`, 'paths': every written path}.

    Raises:
      ValueError: one line when `workdir` is not a run or a score file is refused
        (`artifacts.load_scores`).
    """
    if export not in ("", "parquet"):
        raise ValueError(f"export is {export!r}; pass --export=parquet, or leave it out.")
    config = read_config(workdir)
    rows = summary_rows(workdir)
    out_dir = os.path.join(workdir, "report")
    stem = os.path.join(out_dir, "summary")
    files.write_csv(f"{stem}.csv", rows)
    title = f"Run summary of {run_figures.run_title(workdir)}"
    markdown = f"# {title}\n\n{ACCURACY_NOTE}.\n\n{summary.markdown_table(display_rows(rows))}\n"
    files.atomic_write_bytes(f"{stem}.md", markdown.encode())
    paths = [f"{stem}.csv", f"{stem}.md"]
    paths += plot_table(rows, f"{title}\n{ACCURACY_NOTE}", stem)
    scores_config = _scores_config(config) if config.score.workdir else None
    scores_csv = os.path.join(out_dir, "scores.csv")
    scores_path = score_export.write_scores_csv(config, workdir, scores_csv, scores_config)
    if scores_path:
        paths.append(scores_path)
    paths += run_figures.write_run_figures(config, workdir, rows, scores_config)
    if export == "parquet":
        paths += parquet_export.write_parquet(config, workdir, scores_config)
    return {"rows": rows, "paths": paths}


def _scores_config(config) -> ml_collections.ConfigDict:
    """The config of the run in `config.score.workdir`, whose score files this run pruned with."""
    try:
        return read_config(config.score.workdir)
    except ValueError as e:
        raise ValueError(f"config.score.workdir={config.score.workdir}: {e}") from None


def describe(report: dict) -> str:
    """A few lines for people: the table and where the files are."""
    written = "\n".join(f"  {p}" for p in report["paths"])
    return f"\n{table_text(report['rows'])}\nWrote:\n{written}"
