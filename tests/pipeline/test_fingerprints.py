"""Stale results: a rerun redoes exactly the stages whose inputs changed, and nothing else.

The suite's finished smoke run is copied for each case; trainings are counted by wrapping the real
training steps of the K-seed loop.
"""

import json
import os
import shutil

import numpy as np
import pytest

from datadiet_jax.pipeline import artifacts, fingerprint, retrain
from datadiet_jax.pipeline import run as run_lib
from datadiet_jax.scores import pruning
from datadiet_jax.training import files, loop

EL2N_RUN = "el2n-1_hardest_f0.50"


def smoke_config(**overrides):
    """The config of the suite's `smoke_run` (configs/fashion_mnist.py:smoke) with overrides."""
    from configs import fashion_mnist

    config = fashion_mnist.get_config("smoke")
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture
def finished(smoke_run):
    """The suite's finished smoke run (copied by each test before it changes anything)."""
    return smoke_run[0]


@pytest.fixture
def trainings(monkeypatch):
    """The names of the trainings that ran training steps (the real loop, counted)."""
    names = []
    real = loop._Training.steps

    def counted(self, state, stats, start):
        names.append(self.spec.name)
        return real(self, state, stats, start)

    monkeypatch.setattr(loop._Training, "steps", counted)
    return names


def _copy(finished, tmp_path, name="run"):
    dst = str(tmp_path / name)
    shutil.copytree(finished, dst)
    return dst


def _kept(workdir, run=EL2N_RUN):
    return np.load(os.path.join(workdir, "retrain", run, "kept.npz"))["index"]


def _reverse(path):
    """Rewrites a score file with its scores negated: a valid file that ranks the other way."""
    s = artifacts.load_scores(path)
    artifacts.save_scores(path, -s["per_seed"], s["index"], s["provenance"])
    return -s["mean"]


def test_unchanged_rerun_redoes_nothing(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    before = open(os.path.join(workdir, "results.json")).read()
    run_lib.run(smoke_config(), workdir)
    assert trainings == []
    assert open(os.path.join(workdir, "results.json")).read() == before
    assert run_lib.is_current(smoke_config(), workdir)


def test_reversed_scores_retrain_the_pruned_run_only(finished, tmp_path, trainings, caplog):
    workdir = _copy(finished, tmp_path)
    old = _kept(workdir)
    mean = _reverse(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    assert not run_lib.is_current(smoke_config(), workdir)
    results = run_lib.run(smoke_config(), workdir)
    assert trainings == [EL2N_RUN]  # the full and random runs do not depend on the scores
    new = _kept(workdir)
    np.testing.assert_array_equal(new, np.sort(np.argsort(-mean, kind="stable")[:64]))
    assert len(np.intersect1d(old, new)) == 0  # the other half of the examples
    record = retrain.read_record(os.path.join(workdir, "retrain", EL2N_RUN, "kept.npz"))
    sha = fingerprint.file_sha256(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    assert record["kept"]["scores"]["el2n@1"]["sha256"] == sha
    result = {r["name"]: r for r in results["runs"]}[EL2N_RUN]
    assert result["made_from"]["training"]["kept_sha256"] == fingerprint.array_sha256(new)
    said = [r.getMessage() for r in caplog.records if "again from scratch" in r.getMessage()]
    assert len(said) == 1 and "scores/el2n_epoch001.npz changed" in said[0], said
    assert "0 in common" in said[0]
    assert run_lib.is_current(smoke_config(), workdir)


def test_changed_selection_setting_follows(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    scores = artifacts.load_scores(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    seed0 = pruning.kept_indices(scores["per_seed"][0], "hardest", prune_fraction=0.5)
    assert not np.array_equal(seed0, _kept(workdir))  # the case changes the kept set
    run_lib.run(smoke_config(**{"prune.num_score_seeds": 1}), workdir)
    assert trainings == [EL2N_RUN]
    np.testing.assert_array_equal(_kept(workdir), seed0)
    assert json.load(open(os.path.join(workdir, "config.json")))["prune"]["num_score_seeds"] == 1


def test_setting_that_keeps_the_same_examples_redoes_nothing(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    before = _kept(workdir)
    run_lib.run(smoke_config(**{"prune.ccs_beta": 0.3}), workdir)  # unused by 'hardest'
    assert trainings == []
    np.testing.assert_array_equal(_kept(workdir), before)
    record = retrain.read_record(os.path.join(workdir, "retrain", EL2N_RUN, "kept.npz"))
    assert record["kept"]["selection"]["ccs_beta"] == 0.3  # the record follows


def test_retraining_setting_change_retrains_every_run(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    results = run_lib.run(smoke_config(**{"retrain.num_seeds": 2}), workdir)
    assert sorted(trainings) == sorted(["full", EL2N_RUN, "random_subset_f0.50"])
    assert all(len(r["test_accuracy"]) == 2 for r in results["runs"])


def test_changed_score_workdir_source_follows(finished, tmp_path, trainings):
    source = _copy(finished, tmp_path, "source")
    config = smoke_config(**{"score.workdir": source})
    consumer = str(tmp_path / "consumer")
    run_lib.run(config, consumer)
    assert len(trainings) == 3
    old = _kept(consumer)
    np.testing.assert_array_equal(old, _kept(source))
    mean = _reverse(os.path.join(source, "scores", "el2n_epoch001.npz"))
    assert not run_lib.is_current(config, consumer)
    results = run_lib.run(config, consumer)
    assert trainings[3:] == [EL2N_RUN]
    np.testing.assert_array_equal(_kept(consumer), np.sort(np.argsort(-mean, kind="stable")[:64]))
    relative = os.path.join("..", "source", "scores", "el2n_epoch001.npz")
    assert results["scores"]["el2n@1"] == relative


def test_moved_workdir_is_still_current_and_its_paths_resolve(finished, tmp_path, trainings):
    moved = _copy(finished, tmp_path, "moved")
    assert run_lib.is_current(smoke_config(), moved)
    scores = artifacts.read_results(moved)["scores"]
    assert scores["el2n@1"] == os.path.join(moved, "scores", "el2n_epoch001.npz")
    assert artifacts.load_scores(scores["el2n@1"])["per_seed"].shape == (2, 128)
    run_lib.run(smoke_config(), moved)
    assert trainings == []


def test_run_folder_without_record_is_retrained(finished, tmp_path, trainings, caplog):
    workdir = _copy(finished, tmp_path)
    kept_path = os.path.join(workdir, "retrain", EL2N_RUN, "kept.npz")
    files.save_npz(kept_path, index=_kept(workdir))  # as written before records existed
    run_lib.run(smoke_config(), workdir)
    assert trainings == [EL2N_RUN]
    assert any("no record" in r.getMessage() for r in caplog.records)


def test_deleted_score_file_of_an_earlier_epoch_is_recomputed(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    path = os.path.join(workdir, "scores", "grand_epoch000.npz")
    before = open(path, "rb").read()
    os.remove(path)
    run_lib.run(smoke_config(), workdir)
    assert open(path, "rb").read() == before  # from the initialization, not from epoch 1
    assert trainings == []


def test_training_record_ignores_how_the_gradients_are_computed():
    from datadiet_jax.pipeline.config_base import base_config

    config, kept = base_config(), np.arange(10)
    record = fingerprint.training_record(config, kept)
    config.train.fast_backward = "off"
    assert fingerprint.training_record(config, kept) == record
    config.train.learning_rate = 0.05
    assert fingerprint.changes(record, fingerprint.training_record(config, kept)) == [
        "train.learning_rate"
    ]
