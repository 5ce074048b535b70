"""Results without code: the summary table and per-example scores of one run's work directory.

Logs the summary table of the run in DIR (finished or partial: every planned run with its
status, kept count and test accuracy) and writes DIR/report/ (`run_summary.write_report`): the
table as CSV, Markdown, PNG and PDF, the per-example scores as CSV, the run's figures (score
histograms, class balance, accuracy against the pruned fraction, Spearman correlations) and,
with --export=parquet, the scores and kept sets as Parquet. Nothing is trained and no dataset is
read; a folder that is not a run's work directory or a refused score file exits with one
`error:` line.

Usage:

    python -m datadiet_jax.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist
    python -m datadiet_jax.report --workdir=runs/fashion_mnist    # finished or partial
    python -m datadiet_jax.report --workdir=runs/fashion_mnist --export=parquet
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from datadiet_jax.report import run_summary

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a run (finished or not).")
_EXPORT = flags.DEFINE_enum(
    "export",
    None,
    ["parquet"],
    "Also write the per-example scores and the kept sets as Parquet (report/scores.parquet, "
    "report/kept/<run>.parquet).",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; pass --workdir (and --export).")
    try:
        report = run_summary.write_report(_WORKDIR.value, _EXPORT.value or "")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    logging.info("%s", run_summary.describe(report))


if __name__ == "__main__":
    app.run(main)
