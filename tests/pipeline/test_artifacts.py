import json
import os

import numpy as np
import pytest

from datadiet_jax.pipeline import artifacts, config_check, workdir
from datadiet_jax.pipeline.config_base import config_to_dict
from datadiet_jax.training import files

PROV = {"dataset": "fashion_mnist", "split": "train", "num_examples": 4, "label_noise": None}
RUN = {**PROV, "model": "small_cnn", "seed": 0, "num_seeds": 1}


def test_score_file_round_trip(tmp_path):
    path = str(tmp_path / "s.npz")
    per_seed = np.array([[1, 2, 3, 4], [3, 2, 1, 0]], np.float32)
    artifacts.save_scores(path, per_seed, np.arange(4), PROV)
    out = artifacts.load_scores(path, PROV)
    np.testing.assert_array_equal(out["per_seed"], per_seed)
    np.testing.assert_array_equal(out["mean"], [2, 2, 2, 2])
    np.testing.assert_array_equal(out["index"], np.arange(4))
    assert out["provenance"] == PROV
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


@pytest.mark.parametrize(
    "expect,match",
    [
        ({**PROV, "dataset": "cifar10"}, "dataset"),
        ({**PROV, "num_examples": 5}, "num_examples"),
        ({**PROV, "label_noise": {"fraction": 0.1}}, "label_noise"),
    ],
)
def test_score_file_from_other_data_is_refused(tmp_path, expect, match):
    path = str(tmp_path / "s.npz")
    artifacts.save_scores(path, np.ones((1, 4)), np.arange(4), PROV)
    with pytest.raises(ValueError, match=match):
        artifacts.load_scores(path, expect)


def test_score_file_with_nan_or_wrong_length_is_refused(tmp_path):
    path = str(tmp_path / "nan.npz")
    artifacts.save_scores(path, np.array([[1, np.nan, 3, 4]]), np.arange(4), PROV)
    with pytest.raises(ValueError, match="NaN"):
        artifacts.load_scores(path)
    bad = str(tmp_path / "short.npz")
    files.save_npz(
        bad,
        per_seed=np.ones((1, 3)),
        mean=np.ones(3),
        index=np.arange(4),
        provenance=np.asarray(json.dumps(PROV)),
    )
    with pytest.raises(ValueError, match="3 scores for 4"):
        artifacts.load_scores(bad)
    with pytest.raises(ValueError, match="do not match"):
        artifacts.save_scores(path, np.ones((1, 3)), np.arange(4), PROV)


def test_workdir_with_another_config_is_refused_and_kept(tmp_path):
    config = {"seed": 1, "train": {"lr": 2}, "prune": {"fractions": [0.5]}}
    assert workdir.check_config(str(tmp_path), config) == []
    assert workdir.check_config(str(tmp_path), config) == []  # same config: resume
    # A folder of nothing but its config (the run stopped before any output) takes another.
    other = config | {"seed": 2}
    assert workdir.check_config(str(tmp_path), other) == []
    assert json.loads((tmp_path / "config.json").read_text()) == other
    assert workdir.check_config(str(tmp_path), config) == []
    (tmp_path / "label_noise.npz").write_bytes(b"output")  # now the folder holds a run
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="train.lr"):
        workdir.check_config(str(tmp_path), config | {"train": {"lr": 3}})
    assert (tmp_path / "config.json").read_text() == before
    # The plan may change: it is recorded, and the caller learns what changed.
    replanned = config | {"prune": {"fractions": [0.3]}}
    assert workdir.check_config(str(tmp_path), replanned) == ["prune.fractions"]
    assert json.loads((tmp_path / "config.json").read_text()) == replanned
    # A run recorded before `train.fast_backward` existed, or with another value of it, resumes:
    # it chooses how the same gradients are computed.
    faster = replanned | {"train": {"lr": 2, "fast_backward": "off"}}
    assert workdir.check_config(str(tmp_path), faster) == ["train.fast_backward"]
    # So does one on another mesh: the same results on other devices.
    meshed = faster | {"train": {"lr": 2, "fast_backward": "off", "mesh": "2x4"}}
    assert workdir.check_config(str(tmp_path), meshed) == ["train.mesh"]


def test_csv_columns(tmp_path):
    path = str(tmp_path / "r.csv")
    files.write_csv(path, [{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    assert open(path).read().splitlines() == ["a,b,c", "1,2,", "3,,4"]


@pytest.mark.parametrize(
    "other,differs",
    [
        ({"model": "resnet18"}, "model='resnet18'"),
        ({"seed": 7}, "seed=7"),
        ({"num_seeds": 4}, "num_seeds=4"),
    ],
)
def test_score_file_of_another_model_or_seed_needs_allow_transfer(
    tmp_path, monkeypatch, other, differs
):
    path = str(tmp_path / "s.npz")
    artifacts.save_scores(path, np.ones((1, 4)), np.arange(4), {**RUN, **other})
    with pytest.raises(ValueError, match="allow_transfer=True") as err:
        artifacts.load_scores(path, RUN)
    assert differs in str(err.value) and "\n" not in str(err.value)
    warnings = []
    monkeypatch.setattr(artifacts.logging, "warning", lambda msg, *a: warnings.append(msg % a))
    out = artifacts.load_scores(path, RUN, allow_transfer=True)
    np.testing.assert_array_equal(out["per_seed"], np.ones((1, 4)))
    assert len(warnings) == 1 and differs in warnings[0] and path in warnings[0]
    # Other data is refused even with allow_transfer.
    with pytest.raises(ValueError, match="dataset"):
        artifacts.load_scores(path, {**RUN, "dataset": "cifar10"}, allow_transfer=True)


def test_same_model_and_seed_load_without_warning(tmp_path, monkeypatch):
    path = str(tmp_path / "s.npz")
    artifacts.save_scores(path, np.ones((1, 4)), np.arange(4), RUN)
    warnings = []
    monkeypatch.setattr(artifacts.logging, "warning", lambda msg, *a: warnings.append(msg % a))
    artifacts.load_scores(path, RUN)
    assert warnings == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_score_file_names_the_file_and_the_fix(tmp_path, damage):
    path = str(tmp_path / "s.npz")
    artifacts.save_scores(path, np.ones((2, 4)), np.arange(4), RUN)
    payload = open(path, "rb").read()
    for cut in (len(payload) // 2, len(payload) - 30, 100):
        with open(path, "wb") as f:
            if damage == "truncate":
                f.write(payload[:cut])
            elif damage == "garbage":
                f.write(np.random.default_rng(cut).bytes(cut))
        with pytest.raises(ValueError) as err:
            artifacts.load_scores(path, RUN)
        message = str(err.value)
        assert path in message and "delete it" in message and "score.workdir" in message
        assert "\n" not in message and "pickle" not in message


def test_only_forgetting_files_may_hold_plus_infinity(tmp_path):
    scores = np.array([[1, np.inf, 3, 0]], np.float32)
    path = str(tmp_path / "f.npz")
    artifacts.save_scores(path, scores, np.arange(4), {**RUN, "score": "forgetting"})
    out = artifacts.load_scores(path, RUN)
    np.testing.assert_array_equal(out["mean"], [1, np.inf, 3, 0])
    for kind, bad in (("el2n", np.inf), ("forgetting", -np.inf), ("forgetting", np.nan)):
        artifacts.save_scores(
            path, np.array([[1, bad, 3, 0]]), np.arange(4), {**RUN, "score": kind}
        )
        with pytest.raises(ValueError, match=r"NaN or infinite scores \(e.g. examples \[1\]\)"):
            artifacts.load_scores(path, RUN)


def test_score_file_tfds_ids_round_trip_and_are_optional(tmp_path):
    path = str(tmp_path / "s.npz")
    ids = np.array([f"ds-train.tfrecord-00000-of-00001__{i}" for i in range(4)])
    artifacts.save_scores(path, np.ones((1, 4)), np.arange(4), PROV, tfds_id=ids)
    np.testing.assert_array_equal(artifacts.load_scores(path)["tfds_id"], ids)
    with np.load(path) as f:
        assert f.get("tfds_id") is not None
    artifacts.save_scores(path, np.ones((1, 4)), np.arange(4), PROV)
    assert "tfds_id" not in artifacts.load_scores(path)
    with pytest.raises(ValueError, match="tfds_id"):
        artifacts.save_scores(path, np.ones((1, 4)), np.arange(4), PROV, tfds_id=ids[:3])


def test_a_file_without_source_fields_is_one_of_tfds_images(tmp_path):
    """Files written before `data_source` and `inputs` existed: TFDS data by name, images."""
    path = str(tmp_path / "s.npz")
    artifacts.save_scores(path, np.ones((1, 4)), np.arange(4), PROV)
    artifacts.load_scores(path, {**PROV, "data_source": None, "inputs": "images"})
    with pytest.raises(ValueError, match="inputs='images', but this run has inputs='tokens'"):
        artifacts.load_scores(path, {**PROV, "data_source": None, "inputs": "tokens"})
    with pytest.raises(ValueError, match="data_source=None"):
        artifacts.load_scores(path, {**PROV, "data_source": {"kind": "arrays", "files": {}}})


def _at(tree, dotted):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _pop(tree, dotted):
    """Removes a dotted field where it is present (a training record holds some sections)."""
    *parents, name = dotted.split(".")
    for part in parents:
        tree = tree.get(part, {})
    tree.pop(name, None)


def test_records_from_before_a_field_was_added_read_as_its_default(tmp_path):
    from datadiet_jax.pipeline import fingerprint
    from datadiet_jax.pipeline.config_base import ADDED_FIELDS
    from tests.conftest import smoke_config

    config = smoke_config()
    new = config_to_dict(config)
    old = config_to_dict(config)
    at_default = [
        f
        for f in ADDED_FIELDS  # fields an earlier version wrote no value of
        if _at(new, f) == ADDED_FIELDS[f]
    ]
    assert {"data.inputs", "model.kwargs", "track"} <= set(at_default)
    for field in at_default:
        _pop(old, field)
    workdir.check_config(str(tmp_path), old)
    (tmp_path / "label_noise.npz").write_bytes(b"output")  # the folder holds a run
    assert workdir.check_config(str(tmp_path), new) == []  # the same run: it resumes
    kept = np.arange(5)
    record = fingerprint.training_record(config_check.retrain_spec(config), kept)
    for field in at_default:
        _pop(record, field)
    spec = config_check.retrain_spec(config)
    assert fingerprint.changes(record, fingerprint.training_record(spec, kept)) == []
    # A value other than the default is another run.
    config.data.inputs = "features"
    spec = config_check.retrain_spec(config)
    assert fingerprint.changes(record, fingerprint.training_record(spec, kept)) == ["data.inputs"]
    with pytest.raises(ValueError, match="different config.*data.inputs"):
        workdir.check_config(str(tmp_path), config_to_dict(config))
