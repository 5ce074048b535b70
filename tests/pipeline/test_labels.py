"""The label rules (`pipeline/labels.py`) on the command line (`data.load_splits`) and in the
notebook path (`split_from_arrays`, `train_seeds`), and the kept indices of the notebook path."""

import logging

import numpy as np
import pytest

import datadiet_jax as dd
from datadiet_jax.pipeline import data
from tests.conftest import smoke_config, tiny_model


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 1)).astype(np.uint8)


def array_config(tmp_path, train_labels, test_labels, **overrides):
    """A smoke config reading `.npz` files of 8x8 images with these labels (all rows kept)."""
    paths = {}
    for split, labels in (("train", train_labels), ("test", test_labels)):
        paths[f"data.arrays.{split}"] = str(tmp_path / f"{split}.npz")
        np.savez(paths[f"data.arrays.{split}"], image=images(len(labels)), label=labels)
    sizes = {"data.num_train_examples": 0, "data.num_test_examples": 0}
    return smoke_config(**{"data.name": "arrays", **paths, **sizes, **overrides})


def stray(n=40):
    """Labels 0-3 with one stray 99 at row 7."""
    labels = np.arange(n) % 4
    labels[7] = 99
    return labels


def test_a_stray_training_label_is_refused_on_the_command_line(tmp_path):
    config = array_config(tmp_path, stray(), np.arange(20) % 4)
    with pytest.raises(ValueError, match=r"no examples of classes \[4, 5, .*\(95 in all\)") as e:
        data.load_splits(config.data)
    assert "config.data.num_classes=100" in str(e.value) and "\n" not in str(e.value)
    config.data.num_classes = 100  # said outright: the empty classes are meant
    train, test = data.load_splits(config.data)
    assert train.num_classes == test.num_classes == 100


def test_a_test_label_unseen_in_training_is_refused_naming_its_rows(tmp_path, caplog):
    test_labels = np.arange(20) % 4
    test_labels[[3, 11]] = 4
    config = array_config(tmp_path, np.arange(40) % 4, test_labels)
    match = r"arrays:test has labels \[4\] that never occur in the training split .* rows \[3, 11\]"
    with pytest.raises(ValueError, match=match) as e:
        data.load_splits(config.data)
    assert "config.data.num_classes" in str(e.value)
    config.data.num_classes = 5  # declared: allowed, with a warning naming the rows
    with caplog.at_level(logging.WARNING):
        train, _ = data.load_splits(config.data)
    assert train.num_classes == 5
    assert any(
        "never occur in the training split, at rows [3, 11]" in r.message for r in caplog.records
    )


def test_a_tfds_subset_missing_classes_is_accepted(tmp_path):
    # The number of classes comes from the TFDS metadata: a small subset may miss classes.
    import tensorflow_datasets as tfds

    sizes = {"data.num_train_examples": 3, "data.num_test_examples": 3}
    config = smoke_config(**{"data.name": "kmnist", "data.download": True, **sizes})
    with tfds.testing.mock_data(num_examples=10):
        train, test = data.load_splits(config.data)
    assert train.num_classes == 10 and len(np.unique(train.labels)) <= 3


def test_the_notebook_path_refuses_a_stray_label_naming_its_argument():
    match = r"no examples of classes .* set split_from_arrays\(num_classes=...\)=100"
    with pytest.raises(ValueError, match=match) as e:
        dd.split_from_arrays(images(40), stray())
    assert "config.data" not in str(e.value)
    with pytest.raises(ValueError, match=match):  # arrays given to train_seeds directly
        dd.train_seeds(
            tiny_model(dd.split_from_arrays(images(8), np.arange(8) % 4)), (images(40), stray())
        )
    assert dd.split_from_arrays(images(40), stray(), num_classes=100).num_classes == 100
    with pytest.raises(ValueError, match=r"labels >= 50 \(the number of classes\) at rows \[7\]"):
        dd.split_from_arrays(images(40), stray(), num_classes=50)


def test_a_notebook_test_split_takes_the_training_split_and_checks_its_labels():
    train = dd.split_from_arrays(images(40), np.arange(40) % 4)
    test_labels = np.arange(12) % 4
    test_labels[5] = 6
    match = r"arrays:test has labels \[6\] that never occur .* at rows \[5\]"
    with pytest.raises(ValueError, match=match):
        dd.split_from_arrays(images(12, 1), test_labels, split="test", train=train)
    test = dd.split_from_arrays(images(12, 1), np.arange(12) % 4, split="test", train=train)
    assert test.num_classes == 4
    np.testing.assert_array_equal(test.mean, train.mean)
    with pytest.raises(ValueError, match="the test inputs are float32"):
        dd.split_from_arrays(np.zeros((12, 8, 8, 1), np.float32), test_labels % 4, train=train)


def test_kept_indices_outside_the_split_are_one_value_error(synthetic_split):
    model = tiny_model(synthetic_split)
    with pytest.raises(
        ValueError, match=r"indices in \[0, 64\) of this split; 1 are not, e\.g\. \[5000\]"
    ):
        dd.train_seeds(model, synthetic_split, kept=[0, 5000], num_steps=1)
    with pytest.raises(ValueError, match=r"indices in \[0, 64\).*e\.g\. \[-1\]"):
        dd.train_seeds(model, synthetic_split, kept=[-1, 3], num_steps=1)
    mask = np.zeros(64, bool)
    mask[:10] = True
    with pytest.raises(ValueError, match=r"got bool \(64,\).*np\.flatnonzero"):
        next(iter(dd.pruned_dataset(synthetic_split, mask, batch_size=4)))
