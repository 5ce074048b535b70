"""End-to-end runs of the entry point on `:smoke` configs, and its answers to bad input."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datadiet_jax import artifacts
from datadiet_jax import run as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, timeout=600):
    cmd = [sys.executable, "-m", "datadiet_jax.main", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("fm") / "run")
    proc = _main("--config=configs/fashion_mnist.py:smoke", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, proc


def test_fashion_mnist_smoke_writes_scores_and_results(fashion_run):
    workdir, proc = fashion_run
    assert "accuracy" in proc.stderr and "results.csv" in proc.stderr
    expect = {"dataset": "fashion_mnist", "split": "train", "num_examples": 128}
    names = ("el2n_epoch001", "grand_epoch000", "grand_epoch001", "forgetting_epoch001")
    for name in (*names, "aum_epoch001"):
        s = artifacts.load_scores(os.path.join(workdir, "scores", f"{name}.npz"), expect)
        assert s["per_seed"].shape == (2, 128)
        np.testing.assert_array_equal(s["index"], np.arange(128))
        assert s["provenance"]["model"] == "small_cnn" and s["provenance"]["num_seeds"] == 2
    results = json.load(open(os.path.join(workdir, "results.json")))
    runs = {r["name"]: r for r in results["runs"]}
    assert set(runs) == {"full", "el2n-1_hardest_f0.50", "random_subset_f0.50"}
    assert runs["full"]["num_kept"] == 128 and runs["el2n-1_hardest_f0.50"]["num_kept"] == 64
    # Pruned runs train for as many steps as the full-data run.
    assert len({r["steps"] for r in runs.values()}) == 1
    kept = np.load(os.path.join(workdir, "retrain", "el2n-1_hardest_f0.50", "kept.npz"))["index"]
    mean = artifacts.load_scores(os.path.join(workdir, "scores", "el2n_epoch001.npz"))["mean"]
    assert mean[kept].min() >= np.delete(mean, kept).max()  # the highest-EL2N half
    for r in runs.values():
        assert 0.0 <= r["mean_test_accuracy"] <= 1.0
    rows = open(os.path.join(workdir, "results.csv")).read().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("run,score,strategy")


def test_rerun_resumes_without_retraining(fashion_run):
    workdir, _ = fashion_run
    before = open(os.path.join(workdir, "results.json")).read()
    proc = _main("--config=configs/fashion_mnist.py:smoke", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Retraining" not in proc.stderr and "Scores already" in proc.stderr
    assert open(os.path.join(workdir, "results.json")).read() == before


def test_workdir_of_another_run_is_refused(fashion_run):
    workdir, _ = fashion_run
    before = open(os.path.join(workdir, "config.json")).read()
    proc = _main(
        "--config=configs/fashion_mnist.py:smoke", f"--workdir={workdir}", "--config.seed=7"
    )
    assert "different config" in _error_line(proc) and "seed" in _error_line(proc)
    assert open(os.path.join(workdir, "config.json")).read() == before
    assert os.path.exists(os.path.join(workdir, "results.json"))


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.data.name=cifar11", "Unknown dataset"),
        ("--config.model.name=resnet19", "Unknown model"),
        ("--config.prune.fractions=(1.0,)", "outside [0, 1)"),
        ('--config.prune.scores=("grand@7",)', "does not compute"),
    ],
)
def test_bad_config_values_get_one_line_errors(tmp_path, override, message):
    proc = _main("--config=configs/fashion_mnist.py:smoke", f"--workdir={tmp_path}/w", override)
    assert message in _error_line(proc)
    assert not os.path.exists(tmp_path / "w")  # nothing written


def test_typo_in_override_fails_loudly(tmp_path):
    proc = _main(
        "--config=configs/fashion_mnist.py:smoke",
        f"--workdir={tmp_path}/w",
        "--config.train.batch_sise=8",
    )
    line = _error_line(proc)
    assert "batch_sise" in line and 'Did you mean "batch_size"' in line
    assert not os.path.exists(tmp_path / "w")


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    t = time.time()
    proc = _main(
        "--config=configs/cifar10.py:smoke",
        f"--workdir={tmp_path}/w",
        f"--config.data.data_dir={tmp_path}/empty",
    )
    line = _error_line(proc)
    assert "not in" in line and "download=True" in line and "data_dir" in line
    assert time.time() - t < 60  # process start and imports included; no network retries


def test_cifar10_smoke_under_mock_data(tmp_path):
    from configs import cifar10

    config = cifar10.get_config("smoke")
    config.data.download = True  # mocked: nothing is fetched
    config.data.label_noise.fraction = 0.1
    with tfds.testing.mock_data(num_examples=300):
        results = run_lib.run(config, str(tmp_path))
    runs = {r["name"] for r in results["runs"]}
    assert runs == {"full", "el2n-1_hardest_f0.50", "random_subset_f0.50"}
    s = artifacts.load_scores(results["scores"]["grand@0"])
    assert s["per_seed"].shape == (2, 128) and s["provenance"]["dataset"] == "cifar10"
    assert s["provenance"]["label_noise"]["fraction"] == 0.1
    noise = np.load(tmp_path / "label_noise.npz")
    assert len(noise["noisy_index"]) == round(0.1 * 128)
