"""The run's own figures (`report/run_figures.py`): each file written by the report, titled with
the run's name, and the plotted numbers against numpy and scipy computed from the run's files."""

import glob
import os
import shutil

import numpy as np
import pytest
from scipy import stats

from datadiet_jax.report import run_figures, run_summary

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report_run(smoke_run, tmp_path_factory):
    """A copy of the smoke run (named 'my_run') with its report written."""
    workdir = str(tmp_path_factory.mktemp("figures") / "my_run")
    shutil.copytree(smoke_run[0], workdir, ignore=shutil.ignore_patterns(".lock"))
    return workdir, run_summary.write_report(workdir)


def test_report_writes_each_figure_titled_with_the_run_name(report_run):
    workdir, report = report_run
    names = ("scores_el2n_1", "scores_grand_0", "scores_grand_1", "scores_forgetting")
    for name in (*names, "scores_aum", "class_balance", "spearman"):
        for ext in ("png", "pdf"):
            path = os.path.join(workdir, "report", f"{name}.{ext}")
            assert path in report["paths"], path
        with open(os.path.join(workdir, "report", f"{name}.png"), "rb") as f:
            assert f.read(8) == PNG
    # One pruned fraction: no accuracy curve to draw.
    assert not os.path.exists(os.path.join(workdir, "report", "accuracy_vs_pruned.png"))
    markdown = open(os.path.join(workdir, "report", "summary.md")).read()
    assert markdown.startswith("# Run summary of my_run\n")
    assert os.path.abspath(workdir) not in markdown


def test_class_balance_counts_kept_and_pruned_examples_per_class(report_run):
    workdir, _ = report_run
    config = run_summary.read_config(workdir)
    found = run_figures.run_numbers(config, workdir, run_summary.summary_rows(workdir))
    labels = np.load(os.path.join(workdir, "label_noise.npz"))["labels"]
    kept_files = glob.glob(os.path.join(workdir, "retrain", "*", "kept.npz"))
    assert sorted(found["class_balance"]) == sorted(p.split(os.sep)[-2] for p in kept_files)
    for path in kept_files:
        kept = np.load(path)["index"]
        pruned = np.ones(len(labels), bool)
        pruned[kept] = False
        counts = found["class_balance"][path.split(os.sep)[-2]]
        np.testing.assert_array_equal(counts[0], np.bincount(labels[kept], minlength=10))
        np.testing.assert_array_equal(counts[1], np.bincount(labels[pruned], minlength=10))


def test_spearman_panels_match_scipy_between_seeds_and_epochs(report_run):
    workdir, _ = report_run
    config = run_summary.read_config(workdir)
    panels = run_figures.run_numbers(config, workdir, [])["spearman"]
    scores = os.path.join(workdir, "scores")
    el2n = np.load(os.path.join(scores, "el2n_epoch001.npz"))["per_seed"]
    names, matrix = panels["el2n@1: between seeds"]
    assert names == ["seed 0", "seed 1"]
    assert matrix[0, 1] == pytest.approx(stats.spearmanr(el2n[0], el2n[1]).statistic)
    grand = [np.load(os.path.join(scores, f"grand_epoch00{e}.npz"))["mean"] for e in (0, 1)]
    names, matrix = panels["grand: between epochs"]
    assert names == ["epoch 0", "epoch 1"]
    assert matrix[0, 1] == pytest.approx(stats.spearmanr(grand[0], grand[1]).statistic)


def _row(fraction, accuracies, score="el2n@1", strategy="hardest"):
    return {
        "score": score if fraction else None,
        "strategy": strategy if fraction else "full",
        "prune_fraction": fraction,
        "offset": None,
        "acc_mean": float(np.mean(accuracies)),
        "acc_min": min(accuracies),
        "acc_max": max(accuracies),
    }


def test_accuracy_against_the_pruned_fraction_with_the_seed_range(report_run):
    workdir, _ = report_run
    rows = [
        _row(0.0, [0.9, 0.8]),
        _row(0.5, [0.7, 0.6]),
        _row(0.3, [0.85, 0.75]),
        _row(0.5, [0.5, 0.4], "forgetting", "random"),  # one fraction: no line of its own
    ]
    curves = run_figures.accuracy_curves(rows)
    assert list(curves) == ["el2n@1 hardest"]
    np.testing.assert_allclose(
        curves["el2n@1 hardest"],
        [[0.0, 0.85, 0.8, 0.9], [0.3, 0.8, 0.75, 0.85], [0.5, 0.65, 0.6, 0.7]],
    )
    config = run_summary.read_config(workdir)
    paths = run_figures.write_run_figures(config, workdir, rows)
    path = os.path.join(workdir, "report", "accuracy_vs_pruned.png")
    assert path in paths and open(path, "rb").read(8) == PNG
