import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datadiet_jax.pipeline import data


def test_fashion_mnist_loads_in_tfds_order():
    split = data.load_split("fashion_mnist", "train", num_examples=500)
    reference = tfds.load("fashion_mnist", split="train", download=False, batch_size=-1)
    np.testing.assert_array_equal(split.labels, reference["label"][:500])
    np.testing.assert_array_equal(split.inputs, reference["image"][:500])
    np.testing.assert_array_equal(split.index, np.arange(500))
    assert split.inputs.dtype == np.uint8 and split.inputs.shape == (500, 28, 28, 1)
    assert split.num_classes == 10


def test_full_split_sizes():
    assert data.load_split("fashion_mnist", "test").num_examples == 10_000


def test_normalize_by_hand():
    x = np.array([[[[0], [255]]]], np.uint8)
    out = data.normalize(x, [0.5], [0.25])
    np.testing.assert_allclose(out.ravel(), [-2.0, 2.0])
    assert out.dtype == np.float32


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.get_builder("cifar11", None)


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    t = time.time()
    with pytest.raises(FileNotFoundError, match="data_dir") as e:
        data.load_split("cifar10", "train", data_dir=str(tmp_path))
    assert time.time() - t < 10
    assert "download=True" in str(e.value)


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.get_builder("fashion_mnist", str(tmp_path))


@pytest.mark.parametrize("mode", ["replace", "permute"])
def test_label_noise(mode):
    labels = np.arange(1000) % 10
    noisy, chosen = data.label_noise(labels, 10, 0.2, mode, seed=3)
    assert len(chosen) == 200 and len(np.unique(chosen)) == 200
    untouched = np.setdiff1d(np.arange(1000), chosen)
    np.testing.assert_array_equal(noisy[untouched], labels[untouched])
    if mode == "permute":  # The same labels, shuffled among the chosen examples.
        np.testing.assert_array_equal(np.sort(noisy[chosen]), np.sort(labels[chosen]))
    # Most chosen labels change (a random label agrees 1 time in 10).
    assert np.mean(noisy[chosen] != labels[chosen]) > 0.7
    again, chosen2 = data.label_noise(labels, 10, 0.2, mode, seed=3)
    np.testing.assert_array_equal(again, noisy)
    np.testing.assert_array_equal(chosen2, chosen)
    other, _ = data.label_noise(labels, 10, 0.2, mode, seed=4)
    assert not np.array_equal(other, noisy)


def test_label_noise_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        data.label_noise(np.zeros(4), 2, 0.5, "flip", 0)
    with pytest.raises(ValueError, match="outside"):
        data.label_noise(np.zeros(4), 2, 1.5, "replace", 0)


def test_with_label_noise_records_clean_labels(synthetic_split):
    noisy = data.with_label_noise(synthetic_split, 0.25, "replace", 0)
    np.testing.assert_array_equal(noisy.clean_labels, synthetic_split.labels)
    assert len(noisy.noisy_index) == 16


def test_test_split_is_normalized_with_the_training_statistics():
    from tests.conftest import smoke_config

    sizes = {"data.num_train_examples": 32, "data.num_test_examples": 20}
    config = smoke_config(**{"data.name": "kmnist", "data.download": True, **sizes})
    with tfds.testing.mock_data(num_examples=40):  # kmnist has no constants in NORMALIZATION
        train, test = data.load_splits(config.data)
    assert "kmnist" not in data.NORMALIZATION
    by_hand = train.inputs.reshape(-1, 1).astype(np.float64) / 255.0
    np.testing.assert_allclose(train.mean, by_hand.mean(0), rtol=1e-6)
    np.testing.assert_allclose(train.std, by_hand.std(0), rtol=1e-6)
    np.testing.assert_array_equal(test.mean, train.mean)
    np.testing.assert_array_equal(test.std, train.std)
    own = test.inputs.reshape(-1, 1).astype(np.float64).mean(0) / 255.0
    assert abs(own[0] - train.mean[0]) > 1e-4  # the test split's own mean is another number


def test_known_dataset_keeps_its_constants():
    test = data.load_split(
        "fashion_mnist", "test", num_examples=10, normalization=(np.array([0.9]), np.array([0.1]))
    )
    np.testing.assert_allclose(test.mean, [0.2860])
    np.testing.assert_allclose(test.std, [0.3530])
