"""End-to-end runs of the entry point on `:smoke` configs, and its answers to bad input."""

import errno
import json
import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datadiet_jax.pipeline import artifacts, run
from datadiet_jax.training import files
from tests.conftest import run_main


def _main(*args, timeout=600):
    return run_main(*args, timeout=timeout)


def _error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture
def fashion_run(smoke_run):
    return smoke_run


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
        normalization = s["provenance"]["normalization"]
        assert normalization == {"mean": [pytest.approx(0.286)], "std": [pytest.approx(0.353)]}
    results = json.load(open(os.path.join(workdir, "results.json")))
    runs = {r["name"]: r for r in results["runs"]}
    assert set(runs) == {"full", "el2n-1_hardest_f0.50", "random_subset_f0.50"}
    assert runs["full"]["num_kept"] == 128 and runs["el2n-1_hardest_f0.50"]["num_kept"] == 64
    # Pruned runs train for as many steps as the full-data run: 2 epochs of 128 / 32 batches.
    assert {r["steps"] for r in runs.values()} == {2 * 4}
    kept = np.load(os.path.join(workdir, "retrain", "el2n-1_hardest_f0.50", "kept.npz"))["index"]
    mean = artifacts.load_scores(os.path.join(workdir, "scores", "el2n_epoch001.npz"))["mean"]
    assert mean[kept].min() >= np.delete(mean, kept).max()  # the highest-EL2N half
    # Every run learned: healthy, and well above chance (0.1) on the test set.
    for r in runs.values():
        assert r["status"] == ["ok"], r
        assert r["train_accuracy"][0] > r["init_train_accuracy"][0] + 0.2
        assert r["mean_test_accuracy"] > 0.25, r
    assert runs["full"]["mean_test_accuracy"] > 0.3
    rows = open(os.path.join(workdir, "results.csv")).read().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("run,score,strategy")
    assert all(",ok," in row for row in rows[1:])


def test_diverged_retraining_is_reported_not_averaged(fashion_run, tmp_path):
    # Healthy scores, a learning rate that makes every retraining diverge.
    workdir, _ = fashion_run
    proc = _main(
        "--config=configs/fashion_mnist.py:smoke",
        f"--workdir={tmp_path}/w",
        f"--config.score.workdir={workdir}",
        "--config.train.learning_rate=1000",
    )
    line = _error_line(proc)
    assert "3 training(s) diverged" in line and "full seed 0" in line
    assert "no healthy seed" in proc.stderr
    results = json.load(open(os.path.join(tmp_path, "w", "results.json")))
    for r in results["runs"]:
        assert r["status"] == ["diverged"] and r["mean_test_accuracy"] is None
        assert r["test_accuracy"] == [None] and r["nonfinite_step"][0] >= 1


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
        ("--config.train.batch_size=0", "config.train.batch_size is 0; set"),
    ],
)
def test_bad_config_values_get_one_line_errors(tmp_path, override, message):
    proc = _main("--config=configs/fashion_mnist.py:smoke", f"--workdir={tmp_path}/w", override)
    line = _error_line(proc)
    assert message in line
    assert proc.stderr.count(line.removeprefix("error: ")) == 1  # printed once, not logged too
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "w")  # nothing written


def test_retrain_budget_epochs_trains_pruned_runs_for_fewer_steps(fashion_run, tmp_path):
    from configs import fashion_mnist

    score_dir, _ = fashion_run
    config = fashion_mnist.get_config("smoke")
    config.score.workdir = score_dir
    config.retrain.budget = "epochs"
    results = run.run(config, str(tmp_path / "w"))
    runs = {r["name"]: r for r in results["runs"]}
    # 2 epochs: 4 batches of 32 for the 128 examples of the full run, 2 for the 64 kept.
    assert runs["full"]["steps"] == 2 * 4
    assert runs["el2n-1_hardest_f0.50"]["steps"] == runs["random_subset_f0.50"]["steps"] == 2 * 2
    # The steps were trained: the last metrics line of each run is at that step.
    for name, r in runs.items():
        lines = open(tmp_path / "w" / "retrain" / name / "metrics.jsonl").read().splitlines()
        assert json.loads(lines[-1])["step"] == r["steps"]


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        ValueError(f"TensorStore write failed: [{os.strerror(errno.ENOSPC)}]"),
    ],
)
def test_full_disk_is_one_line_saying_to_free_space_and_rerun(tmp_path, monkeypatch, error):
    from configs import fashion_mnist
    from datadiet_jax import main

    def write(path, payload):
        raise error

    monkeypatch.setattr(files, "atomic_write_bytes", write)
    workdir = str(tmp_path / "w")
    with pytest.raises(SystemExit) as exit_info:
        main.run_or_exit(fashion_mnist.get_config("smoke"), workdir)
    message = str(exit_info.value.code)
    assert message.startswith("error: the disk is full") and "\n" not in message
    assert workdir in message and "run the same command again" in message


def test_typo_in_override_fails_loudly(tmp_path):
    proc = _main(
        "--config=configs/fashion_mnist.py:smoke",
        f"--workdir={tmp_path}/w",
        "--config.train.batch_sise=8",
    )
    line = _error_line(proc)
    assert "batch_sise" in line and "did you mean config.train.batch_size" in line
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
        results = run.run(config, str(tmp_path))
    runs = {r["name"] for r in results["runs"]}
    assert runs == {"full", "el2n-1_hardest_f0.50", "random_subset_f0.50"}
    s = artifacts.load_scores(os.path.join(tmp_path, results["scores"]["grand@0"]))
    assert s["per_seed"].shape == (2, 128) and s["provenance"]["dataset"] == "cifar10"
    assert s["provenance"]["label_noise"]["fraction"] == 0.1
    noise = np.load(tmp_path / "label_noise.npz")
    assert len(noise["noisy_index"]) == round(0.1 * 128)


LIBRARY_LINES = ("Load dataset info", "Unable to initialize backend", "Constructing tf.data")


def test_library_info_lines_are_quiet_unless_asked_for(smoke_run):
    _, proc = smoke_run
    assert not [s for s in LIBRARY_LINES if s in proc.stderr]
    assert "Wrote el2n scores" in proc.stderr and "Retraining 1/3" in proc.stderr
    # Another run's seed is refused after the dataset's builder was made: TFDS has spoken then.
    workdir, _ = smoke_run
    loud = _main(
        "--config=configs/fashion_mnist.py:smoke",
        f"--workdir={workdir}",
        "--verbosity=1",
        "--config.seed=7",
    )
    assert "different config" in _error_line(loud)
    assert "Load dataset info" in loud.stderr and "Unable to initialize backend" in loud.stderr


def test_progress_and_score_lines_never_say_nan_and_paths_are_relative(smoke_run):
    workdir, proc = smoke_run
    assert " nan" not in proc.stderr.lower()
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert "workdir" not in results
    assert not [p for p in results["scores"].values() if os.path.isabs(p)]
    assert results["scores"]["el2n@1"] == os.path.join("scores", "el2n_epoch001.npz")


def test_epoch_seconds_and_score_timings_are_recorded(smoke_run):
    workdir, _ = smoke_run
    lines = open(os.path.join(workdir, "scores", "train", "metrics.jsonl")).read().splitlines()
    seconds = [json.loads(line)["seconds"] for line in lines]
    assert len(seconds) == 1 and all(s > 0 for s in seconds)  # the score training: 1 epoch
    timings = open(os.path.join(workdir, "scores", "timings.jsonl")).read().splitlines()
    timings = [json.loads(line) for line in timings]
    # Every score computed at an epoch has one line; forgetting and AUM come from the training.
    assert sorted((t["score"], t["epoch"]) for t in timings) == [
        ("el2n", 1),
        ("grand", 0),
        ("grand", 1),
    ]
    for t in timings:
        assert t["seconds"] > 0 and t["num_seeds"] == 2 and t["num_examples"] == 128, t
