"""Tests of `python -m datadiet_jax.report`: the summary table of a finished or partial run and
the per-example scores CSV, against the work directory's files read independently."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from datadiet_jax.pipeline import artifacts
from datadiet_jax.report import run_summary, score_export
from datadiet_jax.training import files
from tests.conftest import SMOKE_ARGS, read_rows, run_main
from tests.references import ROOT

SCORE_FILES = {
    "el2n@1": "el2n_epoch001",
    "grand@0": "grand_epoch000",
    "grand@1": "grand_epoch001",
    "forgetting": "forgetting_epoch001",
    "aum": "aum_epoch001",
}


@pytest.fixture(scope="module")
def seeds_run(smoke_run, tmp_path_factory):
    """A finished run with two retraining seeds per run, pruned by the suite's smoke scores."""
    workdir = str(tmp_path_factory.mktemp("report") / "run")
    proc = run_main(
        *SMOKE_ARGS,
        f"--workdir={workdir}",
        f"--config.score.workdir={smoke_run[0]}",
        "--config.retrain.num_seeds=2",
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir


def _copy(workdir, dst):
    shutil.copytree(workdir, dst, ignore=shutil.ignore_patterns(".lock"))
    return str(dst)


def _statuses(workdir):
    return {r["run"]: r["status"] for r in run_summary.summary_rows(workdir)}


def test_table_accuracy_is_mean_and_range_of_results_json_seeds(seeds_run, smoke_run):
    results = json.load(open(os.path.join(seeds_run, "results.json")))["runs"]
    rows = {r["run"]: r for r in run_summary.summary_rows(seeds_run)}
    assert list(rows) == ["full", "el2n-1_hardest_f0.50", "random_subset_f0.50"]  # plan order
    for r in results:
        acc = np.array(r["test_accuracy"], np.float64)
        assert acc.shape == (2,) and r["status"] == ["ok", "ok"]
        row = rows[r["name"]]
        assert (row["status"], row["num_kept"], row["num_seeds"], row["num_ok"]) == (
            "done",
            r["num_kept"],
            2,
            2,
        )
        assert row["acc_mean"] == pytest.approx(acc.mean(), abs=1e-12)
        assert (row["acc_min"], row["acc_max"]) == (acc.min(), acc.max())
        assert row["acc_mean"] == pytest.approx(r["mean_test_accuracy"], abs=1e-6)
    report = run_summary.write_report(seeds_run)
    written = {os.path.relpath(p, seeds_run) for p in report["paths"]}
    tables = {
        f"report/{f}"
        for f in ("summary.csv", "summary.md", "summary.png", "summary.pdf", "scores.csv")
    }
    assert tables <= written  # and the run's figures (tests/report/test_run_figures.py)
    assert all(p.startswith("report/") and p.endswith((".png", ".pdf")) for p in written - tables)
    # Its scores are the smoke run's (config.score.workdir), read from that folder.
    scores = read_rows(os.path.join(seeds_run, "report", "scores.csv"))
    el2n = np.load(os.path.join(smoke_run[0], "scores", "el2n_epoch001.npz"))["mean"]
    assert list(scores[0]) == ["index", "tfds_id", "label", *SCORE_FILES] and len(scores) == 128
    np.testing.assert_array_equal([np.float32(r["el2n@1"]) for r in scores], el2n)
    csv_rows = read_rows(os.path.join(seeds_run, "report", "summary.csv"))
    assert [float(r["acc_max"]) for r in csv_rows] == [rows[n]["acc_max"] for n in rows]
    markdown = open(os.path.join(seeds_run, "report", "summary.md")).read()
    full = rows["full"]
    assert "| test accuracy mean (min-max) |" in markdown and "min-max" in markdown
    assert f"| full | done | 128 | 2/2 | {full['acc_mean']:.4f} ({full['acc_min']:.4f}-" in markdown


def test_partial_run_shows_in_progress_and_not_started(seeds_run, tmp_path):
    workdir = _copy(seeds_run, tmp_path / "run")
    os.remove(os.path.join(workdir, "retrain", "el2n-1_hardest_f0.50", "result.json"))
    shutil.rmtree(os.path.join(workdir, "retrain", "random_subset_f0.50"))
    # A plan grown by a fraction (prune.* may change between reruns): its runs have not started.
    config = json.load(open(os.path.join(workdir, "config.json")))
    config["prune"]["fractions"] = [0.5, 0.25]
    files.write_json(os.path.join(workdir, "config.json"), config)
    rows = {r["run"]: r for r in run_summary.summary_rows(workdir)}
    assert {n: r["status"] for n, r in rows.items()} == {
        "full": "done",
        "el2n-1_hardest_f0.50": "in progress",
        "random_subset_f0.50": "not started",
        "el2n-1_hardest_f0.25": "not started",
        "random_subset_f0.25": "not started",
    }
    kept = np.load(os.path.join(workdir, "retrain", "el2n-1_hardest_f0.50", "kept.npz"))["index"]
    assert rows["el2n-1_hardest_f0.50"]["num_kept"] == kept.size == 64
    assert rows["random_subset_f0.25"]["num_kept"] is None
    assert all(rows[n]["acc_mean"] is None for n in rows if n != "full")
    text = run_summary.table_text(list(rows.values()))
    assert "in progress" in text and "not started" in text


def test_diverged_and_collapsed_seeds_are_marked_and_left_out(seeds_run, tmp_path):
    workdir = _copy(seeds_run, tmp_path / "run")
    expected = {}
    marked = {"full": ["ok", "diverged"], "random_subset_f0.50": ["collapsed", "ok"]}
    for name, status in marked.items():
        path = os.path.join(workdir, "retrain", name, "result.json")
        result = json.load(open(path))
        # As retrain writes them: a diverged seed's accuracy is empty, a collapsed one's is kept.
        acc = [
            None if s == "diverged" else a
            for a, s in zip(result["test_accuracy"], status, strict=True)
        ]
        files.write_json(path, result | {"status": status, "test_accuracy": acc})
        expected[name] = next(a for a, s in zip(acc, status, strict=True) if s == "ok")
    rows = {r["run"]: r for r in run_summary.summary_rows(workdir)}
    assert rows["full"]["status"] == "diverged" and rows["full"]["num_ok"] == 1
    assert rows["random_subset_f0.50"]["status"] == "collapsed"
    assert rows["el2n-1_hardest_f0.50"]["status"] == "done"
    for name, acc in expected.items():
        assert rows[name]["acc_mean"] == rows[name]["acc_min"] == rows[name]["acc_max"] == acc


def test_scores_csv_holds_each_score_files_mean_in_dataset_order(smoke_run, tmp_path):
    workdir = _copy(smoke_run[0], tmp_path / "run")
    run_summary.write_report(workdir)
    with open(os.path.join(workdir, "report", "scores.csv")) as f:
        header = next(csv.reader(f))
    assert header == ["index", "tfds_id", "label", *SCORE_FILES]  # no label noise columns
    rows = read_rows(os.path.join(workdir, "report", "scores.csv"))
    labels = np.load(os.path.join(workdir, "label_noise.npz"))["labels"]
    for name, stem in SCORE_FILES.items():
        with np.load(os.path.join(workdir, "scores", f"{stem}.npz")) as f:
            np.testing.assert_array_equal([int(r["index"]) for r in rows], f["index"])
            assert [r["tfds_id"] for r in rows] == f["tfds_id"].tolist()
            per_seed = f["per_seed"]
        np.testing.assert_allclose([float(r[name]) for r in rows], per_seed.mean(0), rtol=1e-6)
    np.testing.assert_array_equal([int(r["label"]) for r in rows], labels)


def test_scores_csv_with_tfds_ids_and_label_noise(smoke_run, tmp_path):
    workdir = _copy(smoke_run[0], tmp_path / "run")
    path = os.path.join(workdir, "scores", "el2n_epoch001.npz")
    with np.load(path) as f:
        arrays = dict(f)
    ids = arrays["tfds_id"]  # TFDS ids, as the score stage saved them
    assert ids[0].startswith("fashion_mnist-train.") and len(set(ids.tolist())) == 128
    labels = np.load(os.path.join(workdir, "label_noise.npz"))["labels"]
    noisy_index = np.array([3, 10, 77])
    noisy = labels.copy()
    noisy[noisy_index] = (labels[noisy_index] + 1) % 10
    files.save_npz(
        os.path.join(workdir, "label_noise.npz"),
        noisy_index=noisy_index,
        labels=noisy,
        clean_labels=labels,
    )
    config = json.load(open(os.path.join(workdir, "config.json")))
    config["data"]["label_noise"]["fraction"] = 0.03
    files.write_json(os.path.join(workdir, "config.json"), config)
    run_summary.write_report(workdir)
    rows = read_rows(os.path.join(workdir, "report", "scores.csv"))
    assert list(rows[0])[:5] == ["index", "tfds_id", "label", "clean_label", "noisy"]
    assert [r["tfds_id"] for r in rows] == ids.tolist()
    assert [int(r["label"]) for r in rows] == noisy.tolist()
    assert [int(r["clean_label"]) for r in rows] == labels.tolist()
    assert [i for i, r in enumerate(rows) if r["noisy"] == "1"] == noisy_index.tolist()
    # Score files that disagree on the examples' ids are refused, nothing written.
    files.save_npz(path, **{**arrays, "tfds_id": ids[::-1]})
    os.remove(os.path.join(workdir, "report", "scores.csv"))
    with pytest.raises(ValueError, match="hold different tfds_id arrays"):
        run_summary.write_report(workdir)
    assert not os.path.exists(os.path.join(workdir, "report", "scores.csv"))


@pytest.mark.parametrize("bad", ["nan", "short"])
def test_refused_score_file_is_one_line(smoke_run, tmp_path, bad):
    workdir = _copy(smoke_run[0], tmp_path / "run")
    path = os.path.join(workdir, "scores", "grand_epoch001.npz")
    s = artifacts.load_scores(path)
    per_seed, index = s["per_seed"], s["index"]
    if bad == "nan":
        per_seed[1, 5] = np.nan
    else:
        per_seed, index = per_seed[:, :-1], index[:-1]
    artifacts.save_scores(path, per_seed, index, s["provenance"])
    with pytest.raises(ValueError, match="NaN" if bad == "nan" else "has 127 scores") as e:
        score_export.write_scores_csv(
            run_summary.read_config(workdir), workdir, str(tmp_path / "scores.csv")
        )
    assert "\n" not in str(e.value) and path in str(e.value)
    assert not os.path.exists(tmp_path / "scores.csv")


def _report(*args):
    cmd = [sys.executable, "-m", "datadiet_jax.report", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _files(workdir):
    return {
        os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, names in os.walk(workdir)
        for f in names
    }


def test_cli_writes_png_and_logs_the_table_touching_nothing_else(seeds_run, tmp_path):
    workdir = _copy(seeds_run, tmp_path / "run")
    shutil.rmtree(os.path.join(workdir, "report"), ignore_errors=True)
    before = _files(workdir)
    proc = _report(f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "random_subset_f0.50" in proc.stderr and "min-max" in proc.stderr
    with open(os.path.join(workdir, "report", "summary.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    after = _files(workdir)
    assert {p: after[p] for p in before} == before
    report_dir = os.path.join(workdir, "report")
    assert all(os.path.dirname(p) == report_dir for p in set(after) - set(before))


def test_not_a_run_is_one_error_line(tmp_path):
    with pytest.raises(ValueError, match="not a run's work directory"):
        run_summary.read_config(str(tmp_path))
    proc = _report(f"--workdir={tmp_path}")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert "no config.json" in lines[0] and "--workdir" in lines[0]
    assert not os.listdir(tmp_path)
