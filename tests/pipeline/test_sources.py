"""Data sources: a TFDS dataset directory without supervised_keys (built on disk here), `.npz` and
`.npy` array files, and their one-line answers to bad input, given before anything is written."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datadiet_jax.pipeline import artifacts, config_check, data, run, sources
from tests.conftest import smoke_config

NUM_TRAIN, NUM_TEST, HW = 160, 100, 16


def _examples(n, seed):
    """Learnable 16x16 images (the class sets the brightness), with their generation order."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = (rng.integers(0, 60, (n, HW, HW, 1)) + 80 * labels[:, None, None, None]).astype(
        np.uint8
    )
    return [(i, {"pixels": images[i], "target": int(labels[i]), "serial": i}) for i in range(n)]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A prepared TFDS dataset directory of features 'pixels', 'target' and 'serial' (the
    example's generation order) and no supervised_keys, in generation order."""
    features = tfds.features.FeaturesDict(
        {
            "pixels": tfds.features.Image(shape=(HW, HW, 1)),
            "target": tfds.features.ClassLabel(num_classes=3),
            "serial": np.int64,
        }
    )
    builder = tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_unkeyed",
        version="1.0.0",
        features=features,
        split_datasets={"train": _examples(NUM_TRAIN, 0), "test": _examples(NUM_TEST, 1)},
        data_dir=str(tmp_path_factory.mktemp("tfds")),
        disable_shuffling=True,
    )
    assert builder.info.supervised_keys is None
    return str(builder.data_dir)


def tfds_config(path, **overrides):
    keys = {"data.image_key": "pixels", "data.label_key": "target"}
    return smoke_config(**{"data.name": path, **keys, **overrides})


@pytest.fixture(scope="module")
def tfds_run(tfds_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tfds_run") / "run")
    return workdir, run.run(tfds_config(tfds_dir), workdir)


def test_tfds_directory_run_carries_each_examples_tfds_id(tfds_run, tfds_dir):
    workdir, results = tfds_run
    assert all(r["status"] == ["ok"] for r in results["runs"])
    # The ids TFDS itself gives each example, keyed by the example's own generation order.
    ds = tfds.builder_from_directory(tfds_dir).as_dataset(
        split="train", read_config=tfds.ReadConfig(add_tfds_id=True), shuffle_files=False
    )
    serial_of = {ex["tfds_id"].decode(): int(ex["serial"]) for ex in tfds.as_numpy(ds)}
    for name in ("el2n_epoch001", "grand_epoch000", "forgetting_epoch001"):
        path = os.path.join(workdir, "scores", f"{name}.npz")
        with np.load(path) as f:
            assert f["tfds_id"].dtype.kind == "U"
        s = artifacts.load_scores(path)
        np.testing.assert_array_equal(s["index"], np.arange(128))
        assert [serial_of[i] for i in s["tfds_id"]] == list(range(128))
        p = s["provenance"]
        assert p["dataset"] == tfds_dir and p["inputs"] == "images"
        assert p["data_source"] == {
            "kind": "tfds_directory",
            "path": os.path.abspath(tfds_dir),
            "name": "tiny_unkeyed",
            "version": "1.0.0",
        }


def test_tfds_directory_split_is_the_datasets_own_order(tfds_dir):
    train, test = data.load_splits(tfds_config(tfds_dir).data)
    want = _examples(NUM_TRAIN, 0)[:128]
    np.testing.assert_array_equal(train.inputs, np.stack([e["pixels"] for _, e in want]))
    np.testing.assert_array_equal(train.labels, [e["target"] for _, e in want])
    assert train.num_classes == 3 and len(test.labels) == 100
    np.testing.assert_array_equal(test.mean, train.mean)  # the training split's statistics


def test_tfds_without_supervised_keys_names_the_fields_and_features(tfds_dir, tmp_path):
    config = smoke_config(**{"data.name": tfds_dir})
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError) as e:
        run.run(config, workdir)
    assert "set --config.data.image_key and --config.data.label_key" in str(e.value)
    assert "['pixels', 'serial', 'target']" in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists(workdir)
    config = tfds_config(tfds_dir, **{"data.label_key": "label"})
    with pytest.raises(ValueError, match=r"data.label_key='label' is not a feature.*'target'\]"):
        run.run(config, workdir)
    assert not os.path.exists(workdir)


def test_a_folder_without_dataset_info_names_the_version_folders(tfds_dir):
    parent = os.path.dirname(tfds_dir)
    with pytest.raises(FileNotFoundError, match=r"without dataset_info.json.*1\.0\.0"):
        sources.get_builder(parent, None)
    with pytest.raises(FileNotFoundError, match="names no folder"):
        sources.get_builder(parent + "/nowhere", None)


# --- Arrays ----------------------------------------------------------------------------------


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 140), ("test", 100)):
        x = rng.integers(0, 255, (n, 8, 8)).astype(np.uint8)
        y = rng.integers(0, 4, n)
        np.save(tmp_path / f"{split}_x.npy", x)
        np.save(tmp_path / f"{split}_y.npy", y)
        np.savez(tmp_path / f"{split}.npz", image=x, label=y, other=y)
        out[split] = (x, y)
    return tmp_path, out


def array_config(folder, npy=False, **overrides):
    if npy:
        paths = {f"data.arrays.{s}": str(folder / f"{s}_x.npy") for s in ("train", "test")}
        paths |= {f"data.arrays.{s}_labels": str(folder / f"{s}_y.npy") for s in ("train", "test")}
    else:
        paths = {f"data.arrays.{s}": str(folder / f"{s}.npz") for s in ("train", "test")}
    return smoke_config(**{"data.name": "arrays", **paths, **overrides})


@pytest.mark.parametrize("npy", [False, True])
def test_array_files_keep_their_row_order(image_files, npy):
    folder, arrays = image_files
    train, test = data.load_splits(array_config(folder, npy).data)
    x, y = arrays["train"]
    np.testing.assert_array_equal(train.inputs, x[:128, :, :, None])  # a channel axis added
    np.testing.assert_array_equal(train.labels, y[:128])
    np.testing.assert_array_equal(train.index, np.arange(128))
    # Classes: the largest training label + 1; normalization: the training split's.
    assert train.num_classes == y[:128].max() + 1
    np.testing.assert_allclose(train.mean, [x[:128].mean() / 255], rtol=1e-5)
    assert train.kind == "images" and train.tfds_id is None
    names = {os.path.basename(f) for f in train.source["files"]}
    assert names == ({"train_x.npy", "train_y.npy"} if npy else {"train.npz"})


def test_a_changed_array_file_changes_the_record(image_files):
    folder, arrays = image_files
    before = data.load_splits(array_config(folder).data)[0].source
    x, y = arrays["train"]
    np.savez(folder / "train.npz", image=x, label=(y + 1) % 4)
    assert data.load_splits(array_config(folder).data)[0].source != before


def refused(config, tmp_path, error, match):
    """run.run refuses `config` with one line matching `match`, writing nothing."""
    workdir = str(tmp_path / "refused")
    with pytest.raises(error, match=match) as e:
        run.run(config, workdir)
    assert "\n" not in str(e.value)
    assert not os.path.exists(workdir)


def test_missing_array_file_is_one_line(image_files, tmp_path):
    folder, _ = image_files
    config = array_config(folder, **{"data.arrays.test": str(folder / "absent.npz")})
    refused(config, tmp_path, FileNotFoundError, r"config.data.arrays.test=.*absent.npz' does not")


def test_labels_of_the_wrong_length_are_one_line(image_files, tmp_path):
    folder, arrays = image_files
    np.save(folder / "train_y.npy", arrays["train"][1][:-3])
    config = array_config(folder, npy=True)
    refused(config, tmp_path, ValueError, "has 140 inputs but 137 labels; give one label per")


def test_an_unknown_key_lists_the_keys_of_the_file(image_files, tmp_path):
    folder, _ = image_files
    config = array_config(folder, **{"data.image_key": "pixels"})
    match = (
        r"no array 'pixels' \(it holds \['image', 'label', 'other'\]\); set --config.data.image_key"
    )
    refused(config, tmp_path, ValueError, match)


def test_an_npy_file_without_its_labels_is_one_line(image_files, tmp_path):
    folder, _ = image_files
    config = array_config(folder, npy=True, **{"data.arrays.test_labels": None})
    refused(config, tmp_path, ValueError, "set --config.data.arrays.test_labels")


def test_augment_on_for_feature_vectors_is_one_line(tmp_path):
    for split in ("train", "test"):
        np.savez(
            tmp_path / f"{split}.npz",
            image=np.ones((130, 5), np.float32),
            label=np.zeros(130, np.int64),
        )
    config = array_config(tmp_path, **{"data.augment": "on"})
    refused(
        config,
        tmp_path,
        ValueError,
        r"augment is 'on' but the inputs are \(5,\) per example, not images",
    )


def test_inputs_of_no_kind_are_one_line(tmp_path):
    for split in ("train", "test"):
        np.savez(
            tmp_path / f"{split}.npz",
            image=np.ones((130, 4, 4, 1, 2), np.float32),  # 5-D: no kind
            label=np.zeros(130, np.int64),
        )
    refused(
        array_config(tmp_path),
        tmp_path,
        ValueError,
        r"float32 \(128, 4, 4, 1, 2\), which are not any",
    )
    config = array_config(tmp_path, **{"data.inputs": "tokens"})
    refused(config, tmp_path, ValueError, "which are not tokens")


def test_labels_beyond_num_classes_are_one_line(image_files, tmp_path):
    folder, _ = image_files
    config = array_config(folder, **{"data.num_classes": 2})
    refused(config, tmp_path, ValueError, r"has labels >= 2 \(the number of classes\) at rows")


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"data.name": "arrays"}, "config.data.arrays.train is not set"),
        ({"data.arrays.train": "x.npz"}, "set --config.data.name=arrays"),
        ({"data.name": "function"}, "config.data.function is not set"),
        ({"data.function": "a.b:c"}, "set --config.data.name=function"),
        ({"data.inputs": "pixels"}, "config.data.inputs is 'pixels'"),
    ],
)
def test_source_fields_are_checked_with_the_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        config_check.validate(smoke_config(**overrides))


def test_a_function_that_cannot_be_imported_is_one_line(tmp_path):
    config = smoke_config(**{"data.name": "function", "data.function": "tests.nowhere:load"})
    refused(config, tmp_path, ValueError, r"config.data.function='tests.nowhere:load' cannot be")
