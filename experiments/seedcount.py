"""Seed count: how well few score seeds rank the examples, and the subsets they select.

  python -m experiments.seedcount --scale=cpu    # or: make reproduce-seedcount [SCALE=...]

The paper's appendix: a score from one training run ranks the examples differently from the mean
of many (Spearman about 0.75 against the 10-run mean on CIFAR-10) and selects a worse subset.
For every score file of the clean score run (shared with Figures 1 and 2), the Spearman
correlation of each seed and of the mean of the first k seeds with the K-seed mean (and with the
mean of the other seeds, a disjoint comparison); then the training set is pruned with the mean
of the first k seeds of one score (`prune.num_score_seeds = k`) for k = 1, 2, 4, ..., K, a fresh
network is trained on each subset, and its test accuracy is compared with random and full data
(the baselines of Figure 2, shared).

Scales (`configs/studies/seedcount.py`; the pruned fraction is Figure 2's):
  paper: CIFAR-10, ResNet18, EL2N at epoch 20 of 10 seeds, k = 1, 2, 4, 8, 10, 60% pruned (GPU).
  cpu: Fashion-MNIST (first 10,000 training images), small CNN, EL2N at epoch 1 of 4 seeds,
    k = 1, 2, 4, 60% pruned, 2 runs per point. Measured on 2 cores: 12 minutes (3 retrainings of
    about 2.4 minutes, and the full and random baselines), plus 7 minutes for the shared score
    run unless another figure ran it.
  smoke: the same stages on 256 examples, K = 2, under a minute.

Outputs: OUT/seedcount.{png,pdf}, OUT/seedcount.csv (one row per retraining seed),
OUT/seedcount_spearman.csv (one row per score file and comparison) and OUT/seedcount_summary.md
(the protocol, `report.protocol`, first).
"""

from __future__ import annotations

import os

from absl import app

from configs.studies.scales import Scale, scale_settings
from configs.studies.seedcount import SEEDCOUNT
from datadiet_jax.pipeline import artifacts
from datadiet_jax.report import dynamics_plots, seed_count, summary
from datadiet_jax.training import files
from experiments import cli, sweeps

CSV_COLUMNS = ("method", "num_seeds", "score", "prune_fraction", "seed", "test_accuracy", "scale")


def counts(scale: Scale) -> tuple[int, ...]:
    """k = 1, 2, 4, ..., K of the scale's score run."""
    return seed_count.seed_counts(scale.base_config().score.num_seeds)


def sweep(scale: Scale) -> list[dict]:
    """The clean score run and baselines (shared with Figure 2) and one pruning run per k."""
    score = SEEDCOUNT[scale.name].score
    fraction = sweeps.fig2_prune_fraction(scale)
    items = [sweeps.score_item(0.0), sweeps.baseline_item(scale, 0.0)]
    for k in counts(scale):
        it = sweeps.training_item(
            f"seedcount_{score.replace('@', '')}_k{k}", 0.0, scores=(score,), fractions=(fraction,)
        )
        it["overrides"]["prune.num_score_seeds"] = k
        items.append(it)
    return items


def collect(scale: Scale, items, runs_dir: str) -> list[dict]:
    """Rows of the pruned runs ('k seeds') and of the baselines at the same fraction."""
    fraction = sweeps.fig2_prune_fraction(scale)
    k_of = {it["name"]: it["overrides"].get("prune.num_score_seeds") for it in items}
    rows = []
    for it in items:
        if it["kind"] != "train":
            continue
        for r in sweeps.seed_rows(scale, it, sweeps.load_results(scale, it, runs_dir)):
            if r["strategy"] == "hardest":
                rows.append(r | dict(method="k seeds", num_seeds=k_of[it["name"]]))
            elif r["strategy"] == "full" or abs(r["prune_fraction"] - fraction) < 1e-9:
                rows.append(r | dict(method=r["strategy"], num_seeds=""))
    return sweeps.columns_first(rows, CSV_COLUMNS)


def spearman_rows(scale: Scale, runs_dir: str) -> list[dict]:
    """Seed-count correlations of every score file of the clean score run."""
    paths = sweeps.load_results(scale, sweeps.score_item(0.0), runs_dir)["scores"]
    rows = []
    for name, path in paths.items():
        per_seed = artifacts.load_scores(path)["per_seed"]
        rows += [dict(score=name) | r for r in seed_count.seed_count_correlations(per_seed)]
    return rows


def summary_sections(rows, spearman) -> list[tuple[str, list[dict]]]:
    """Accuracy per k, the first-k correlations per score, and the single-seed correlations."""
    accuracy = summary.summary_table(rows, ("method", "num_seeds", "num_kept"))
    first_k = []
    for score in dict.fromkeys(r["score"] for r in spearman):
        line = {"score": score}
        for r in spearman:
            if r["score"] == score and r["comparison"].startswith("first_k"):
                line[f"{r['comparison'].removeprefix('first_k_')} k={r['num_seeds']}"] = r[
                    "spearman"
                ]
        first_k.append(line)
    single = []
    for score in dict.fromkeys(r["score"] for r in spearman):
        for comparison in ("seed_vs_all", "seed_vs_rest"):
            values = [
                r["spearman"]
                for r in spearman
                if r["score"] == score and r["comparison"] == comparison
            ]
            if values:
                single.append(
                    dict(
                        score=score,
                        comparison=comparison,
                        seeds=len(values),
                        mean=sum(values) / len(values),
                        min=min(values),
                        max=max(values),
                    )
                )
    return [
        ("Test accuracy of the subsets pruned with the mean of the first k seeds", accuracy),
        ("Spearman: mean of the first k seeds vs all K seeds / vs the other K - k", first_k),
        ("Spearman: one seed vs the mean of all K / of the other K - 1", single),
    ]


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the sweep, then writes the figure, both CSV files and the summary.

    Returns:
      {'figure': paths, 'csv': [paths], 'summary': [path]}.
    """
    scale, _ = scale_settings(scale_name, SEEDCOUNT, "Seed count")
    scale, items, rows, csv_path = sweeps.run_and_collect(
        scale, runs_dir, out_dir, "seedcount", sweep, collect
    )
    spearman = spearman_rows(scale, runs_dir)
    spearman_path = os.path.join(out_dir, "seedcount_spearman.csv")
    files.write_csv(spearman_path, [dict(r, scale=scale.name) for r in spearman])
    figure = dynamics_plots.plot_seed_count(spearman, rows, os.path.join(out_dir, "seedcount"))
    summary_path = summary.write_summary(
        os.path.join(out_dir, "seedcount_summary.md"),
        f"Seed count ({scale.name}): pruning with {SEEDCOUNT[scale.name].score} averaged over "
        f"the first k seeds, {sweeps.fig2_prune_fraction(scale):.0%} pruned",
        [
            sweeps.protocol_section(scale, items[1], runs_dir, [items[0]]),
            *summary_sections(rows, spearman),
        ],
    )
    return {"figure": figure, "csv": [csv_path, spearman_path], "summary": [summary_path]}


def main(argv):
    cli.main(argv, "Seed count", reproduce)


if __name__ == "__main__":
    app.run(main)
