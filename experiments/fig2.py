"""Figure 2: test accuracy of training on a window of the hardest-first order, against its offset.

  python -m experiments.fig2 --scale=cpu    # or: make reproduce-fig2 [SCALE=paper|smoke]

The training set is sorted by the mean EL2N score of the score seeds (hardest first); each run
trains on the window argsort_desc[offset : offset + keep * N] for offsets from 0 up to
(1 - keep) * N, with clean labels and with 10% of the labels permuted among the chosen examples.
Full-data and random-subset baselines are drawn as horizontal lines.

Scales (see `configs/studies/scales.py`):
  paper: CIFAR-10, ResNet18, EL2N of 10 seeds at epoch 10, 40% kept, 12 offsets up to 60% of N,
    4 runs per point (GPU).
  cpu: Fashion-MNIST (first 10,000 training images, full test split), small CNN, EL2N of 4 seeds
    at epoch 1, 40% kept, 6 offsets up to 60% of N, 2 runs per point, 3 epochs of training.
    Measured with `make reproduce-fig2` on a 2-core CPU: 27.5 minutes (two score runs of 2-2.5
    minutes, then 16 retrainings of about 65 s each, each tested on the 10,000 test images).
  smoke: the same stages on 256 examples, about a minute.

Outputs: OUT/fig2.{png,pdf}, OUT/fig2.csv (one row per retraining seed), OUT/fig2_summary.md (the
protocol, `report.protocol`, then one table per noise level) and OUT/reports/fig2_*. Runs live
in RUNS/<scale>/ and are resumed or skipped when run again.
"""

from __future__ import annotations

import os

from absl import app

from configs.studies.scales import Scale
from datadiet_jax.report import plots, run_reports, summary
from experiments import cli, sweeps

CSV_COLUMNS = ("offset", "noise_fraction", "strategy", "seed", "test_accuracy", "num_kept", "scale")


def sweep(scale: Scale) -> list[dict]:
    """Items of Figure 2: per noise level the score run, the baselines and the offset windows."""
    num_examples = sweeps.num_train_examples(scale.base_config())
    offsets = sweeps.offsets_for(scale.fig2_offset_fractions, num_examples)
    fraction = sweeps.fig2_prune_fraction(scale)
    items = []
    for noise in scale.noise_fractions:
        items += [
            sweeps.score_item(noise),
            sweeps.baseline_item(scale, noise),
            sweeps.training_item(
                f"offset_{scale.fig2_score.replace('@', '')}",
                noise,
                strategy="offset",
                scores=(scale.fig2_score,),
                fractions=(fraction,),
                offsets=offsets,
            ),
        ]
    return items


def collect(scale: Scale, items, runs_dir: str) -> list[dict]:
    """CSV rows of the saved training runs: one per (run, seed), `CSV_COLUMNS` first."""
    rows = []
    for it in items:
        if it["kind"] == "train":
            rows += sweeps.seed_rows(scale, it, sweeps.load_results(scale, it, runs_dir))
    return sweeps.columns_first(rows, CSV_COLUMNS)


def summary_sections(rows) -> list[tuple[str, list[dict]]]:
    """One summary table per noise level (strategy, offset, kept), plus its best offset."""
    sections = []
    for noise in sorted({r["noise_fraction"] for r in rows}):
        panel = [r for r in rows if r["noise_fraction"] == noise]
        table = summary.summary_table(panel, ("strategy", "offset", "num_kept"))
        offsets = [t for t in table if t["strategy"] == "offset"]
        if offsets:
            best = max(offsets, key=lambda t: t["mean"])
            table.append(dict(best) | {"strategy": "best offset"})
        sections.append((f"label noise {noise:.0%}", table))
    return sections


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the sweep, then writes the figure, CSV, summary and reports.

    Args:
      scale_name: 'paper', 'cpu' or 'smoke' (or a `Scale`).
      runs_dir: root of the work directories (RUNS).
      out_dir: output folder (OUT).

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path], 'reports': paths}.
    """
    scale, items, rows, csv_path = sweeps.run_and_collect(
        scale_name, runs_dir, out_dir, "fig2", sweep, collect
    )
    figure = plots.plot_offset_curves(rows, os.path.join(out_dir, "fig2"))
    summary_path = summary.write_summary(
        os.path.join(out_dir, "fig2_summary.md"),
        f"Figure 2 ({scale.name}): test accuracy of offset windows, "
        f"{scale.fig2_keep_fraction:.0%} kept, ordered by {scale.fig2_score}",
        [
            sweeps.protocol_section(
                scale,
                sweeps.baseline_item(scale, 0.0),
                runs_dir,
                [it for it in items if it["kind"] == "score"],
            ),
            *summary_sections(rows),
        ],
    )
    score_dirs = {
        sweeps.noise_tag(it["noise"]): sweeps.workdir(runs_dir, scale, it)
        for it in items
        if it["kind"] == "score"
    }
    train_dirs = sweeps.train_dirs(scale, items, runs_dir)
    written = run_reports.write_reports(
        "fig2", score_dirs, train_dirs, (scale.fig2_score,), out_dir
    )
    return {"figure": figure, "csv": [csv_path], "summary": [summary_path], "reports": written}


def main(argv):
    cli.main(argv, "Figure 2", reproduce)


if __name__ == "__main__":
    app.run(main)
