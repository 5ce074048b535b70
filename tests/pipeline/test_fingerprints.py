"""Stale results: a rerun redoes exactly the stages whose inputs changed, and nothing else.

The suite's finished smoke run is copied for each case; trainings are counted by wrapping the real
training steps of the K-seed loop.
"""

import json
import os
import shutil

import numpy as np
import pytest

from datadiet_jax.pipeline import artifacts, config_check, fingerprint, plan, retrain, run
from datadiet_jax.pipeline import workdir as workdir_lib
from datadiet_jax.pipeline.config_base import base_config, config_to_dict
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


def _kept(workdir, name=EL2N_RUN):
    return np.load(os.path.join(workdir, "retrain", name, "kept.npz"))["index"]


def _reverse(path):
    """Rewrites a score file with its scores negated: a valid file that ranks the other way."""
    s = artifacts.load_scores(path)
    artifacts.save_scores(path, -s["per_seed"], s["index"], s["provenance"])
    return -s["mean"]


def test_unchanged_rerun_redoes_nothing(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    before = open(os.path.join(workdir, "results.json")).read()
    run.run(smoke_config(), workdir)
    assert trainings == []
    assert open(os.path.join(workdir, "results.json")).read() == before
    assert run.is_current(smoke_config(), workdir)


def test_reversed_scores_retrain_the_pruned_run_only(finished, tmp_path, trainings, caplog):
    workdir = _copy(finished, tmp_path)
    old = _kept(workdir)
    mean = _reverse(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    assert not run.is_current(smoke_config(), workdir)
    results = run.run(smoke_config(), workdir)
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
    assert run.is_current(smoke_config(), workdir)


def test_changed_selection_setting_follows(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    scores = artifacts.load_scores(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    seed0 = pruning.kept_indices(scores["per_seed"][0], "hardest", prune_fraction=0.5)
    assert not np.array_equal(seed0, _kept(workdir))  # the case changes the kept set
    run.run(smoke_config(**{"prune.num_score_seeds": 1}), workdir)
    assert trainings == [EL2N_RUN]
    np.testing.assert_array_equal(_kept(workdir), seed0)
    assert json.load(open(os.path.join(workdir, "config.json")))["prune"]["num_score_seeds"] == 1


def test_setting_that_keeps_the_same_examples_redoes_nothing(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    before = _kept(workdir)
    run.run(smoke_config(**{"prune.ccs_beta": 0.3}), workdir)  # unused by 'hardest'
    assert trainings == []
    np.testing.assert_array_equal(_kept(workdir), before)
    record = retrain.read_record(os.path.join(workdir, "retrain", EL2N_RUN, "kept.npz"))
    assert record["kept"]["selection"]["ccs_beta"] == 0.3  # the record follows


def test_retraining_setting_change_retrains_every_run(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    results = run.run(smoke_config(**{"retrain.num_seeds": 2}), workdir)
    assert sorted(trainings) == sorted(["full", EL2N_RUN, "random_subset_f0.50"])
    assert all(len(r["test_accuracy"]) == 2 for r in results["runs"])


def test_changed_score_workdir_source_follows(finished, tmp_path, trainings):
    source = _copy(finished, tmp_path, "source")
    config = smoke_config(**{"score.workdir": source})
    consumer = str(tmp_path / "consumer")
    run.run(config, consumer)
    assert len(trainings) == 3
    old = _kept(consumer)
    np.testing.assert_array_equal(old, _kept(source))
    mean = _reverse(os.path.join(source, "scores", "el2n_epoch001.npz"))
    assert not run.is_current(config, consumer)
    results = run.run(config, consumer)
    assert trainings[3:] == [EL2N_RUN]
    np.testing.assert_array_equal(_kept(consumer), np.sort(np.argsort(-mean, kind="stable")[:64]))
    relative = os.path.join("..", "source", "scores", "el2n_epoch001.npz")
    assert results["scores"]["el2n@1"] == relative


def test_moved_workdir_is_still_current_and_its_paths_resolve(finished, tmp_path, trainings):
    moved = _copy(finished, tmp_path, "moved")
    assert run.is_current(smoke_config(), moved)
    scores = artifacts.read_results(moved)["scores"]
    assert scores["el2n@1"] == os.path.join(moved, "scores", "el2n_epoch001.npz")
    assert artifacts.load_scores(scores["el2n@1"])["per_seed"].shape == (2, 128)
    run.run(smoke_config(), moved)
    assert trainings == []


def test_run_folder_without_record_is_retrained(finished, tmp_path, trainings, caplog):
    workdir = _copy(finished, tmp_path)
    kept_path = os.path.join(workdir, "retrain", EL2N_RUN, "kept.npz")
    files.save_npz(kept_path, index=_kept(workdir))  # as written before records existed
    run.run(smoke_config(), workdir)
    assert trainings == [EL2N_RUN]
    assert any("no record" in r.getMessage() for r in caplog.records)


def test_deleted_score_file_of_an_earlier_epoch_is_recomputed(finished, tmp_path, trainings):
    workdir = _copy(finished, tmp_path)
    path = os.path.join(workdir, "scores", "grand_epoch000.npz")
    before = open(path, "rb").read()
    os.remove(path)
    run.run(smoke_config(), workdir)
    assert open(path, "rb").read() == before  # from the initialization, not from epoch 1
    assert trainings == []


def _training_record(config, kept):
    return fingerprint.training_record(config_check.retrain_spec(config), kept)


def _old_training_record(config, kept):
    """`fingerprint.training_record` as it was computed from the whole config, before specs."""
    sections = {k: config_to_dict(config[k]) for k in ("data", "model", "train", "retrain")}
    for field in workdir_lib.NEUTRAL_FIELDS:
        section, name = field.split(".")
        if section in sections:
            sections[section].pop(name, None)
    return {
        "kept_sha256": fingerprint.array_sha256(np.asarray(kept, np.int64)),
        "num_kept": len(kept),
        "seed": config.seed,
        **sections,
    }


def _old_kept_record(config, planned, scores, num_examples):
    """`fingerprint.kept_record` as it was computed from the whole config, before specs."""
    names = [planned.score]
    if planned.strategy in pruning.FEATURE_STRATEGIES:
        names.append(config.prune.get("features") or f"features@{config.score.feature_epochs[0]}")
    names += ["mean_prob"] if planned.strategy == "dual_sampling" else []
    selection = {
        "score": planned.score,
        "strategy": planned.strategy,
        "prune_fraction": planned.prune_fraction,
        "offset": planned.offset,
        "seed": config.seed,
        "num_examples": num_examples,
    }
    if planned.score not in (None, "random"):
        selection |= {k: config.prune[k] for k in ("num_score_seeds", "ccs_beta")}
    return {"scores": {n: scores[n] for n in names if n in scores}, "selection": selection}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"seed": 3, "prune.num_score_seeds": 1, "prune.ccs_beta": 0.2, "prune.strategy": "ccs"},
        {"prune.strategy": "offset", "prune.offsets": (0, 2), "retrain.num_seeds": 2},
        {"prune.strategy": "moderate", "score.feature_epochs": (1,), "prune.scores": ("el2n@1",)},
        {"data.label_noise.fraction": 0.2, "retrain.budget": "epochs", "train.mesh": "off"},
    ],
)
def test_records_from_specs_hash_as_the_records_from_the_whole_config(overrides):
    """Existing work directories resume: the records (and so their hashes) built from the specs
    are the ones the whole config gave, for the same runs."""
    config = smoke_config(**overrides)
    specs = config_check.validate(config)
    hashes = {n: {"file": f"scores/{n}.npz", "sha256": n * 2} for n in ("el2n@1", "features@1")}
    kept = np.arange(7)
    assert [r.name for r in specs.prune.runs] == [r.name for r in plan.planned_runs(config.prune)]
    for planned in specs.prune.runs:
        new = fingerprint.kept_record(specs.prune, planned, hashes, 60)
        old = _old_kept_record(config, planned, hashes, 60)
        assert json.dumps(new, sort_keys=True) == json.dumps(old, sort_keys=True)
    new = fingerprint.training_record(specs.retrain, kept)
    old = _old_training_record(config, kept)
    assert json.dumps(new, sort_keys=True) == json.dumps(old, sort_keys=True)
    assert fingerprint.training_record(specs.retrain, kept) is not new  # a fresh dict each time
    new["train"]["learning_rate"] = -1.0
    assert fingerprint.training_record(specs.retrain, kept) == _old_training_record(config, kept)


def test_training_record_ignores_how_the_gradients_are_computed():
    config, kept = base_config(), np.arange(10)
    record = _training_record(config, kept)
    config.train.fast_backward = "off"
    assert _training_record(config, kept) == record
    config.train.learning_rate = 0.05
    assert fingerprint.changes(record, _training_record(config, kept)) == ["train.learning_rate"]
