"""Float images [N, H, W, C] (and [N, H, W]): read, standardized per channel, augmented, and
run through the command line and the notebook path (`pipeline/input_kinds.py`). References
are numpy computations of the same definitions."""

import os

import numpy as np
import pytest

import datadiet_jax as dd
from datadiet_jax.pipeline import artifacts, config_check, data
from tests.conftest import run_main


def float_images(n=48, size=8, channels=3, seed=0):
    """[n, size, size, channels] float32 with per-channel offsets and scales, and labels 0-2."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = rng.normal(size=(n, size, size, channels)) * [2.0, 0.5, 3.0][:channels]
    x = x + [5.0, -1.0, 0.25][:channels] + labels[:, None, None, None]
    return x.astype(np.float32), labels


def standardized(x, mean, std):
    return (x.astype(np.float64) - mean) / std


def test_float_images_are_standardized_with_the_training_statistics():
    x, y = float_images()
    train = dd.split_from_arrays(x, y)
    mean, std = x.astype(np.float64).mean((0, 1, 2)), x.astype(np.float64).std((0, 1, 2))
    assert train.kind == "images" and train.inputs.shape == x.shape
    np.testing.assert_allclose(train.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(train.std, std, rtol=1e-5)
    np.testing.assert_allclose(train.model_inputs(), standardized(x, mean, std), atol=1e-5)
    tx, ty = float_images(12, seed=1)
    test = dd.split_from_arrays(tx, ty, split="test", train=train)  # the training constants
    np.testing.assert_array_equal(test.mean, train.mean)
    np.testing.assert_allclose(test.model_inputs(), standardized(tx, mean, std), atol=1e-5)


def test_already_standardized_images_are_not_normalized_twice():
    x, y = float_images()
    x64 = x.astype(np.float64)
    once = ((x64 - x64.mean((0, 1, 2))) / x64.std((0, 1, 2))).astype(np.float32)
    split = dd.split_from_arrays(once, y)
    np.testing.assert_allclose(split.mean, 0, atol=1e-5)
    np.testing.assert_allclose(split.std, 1, atol=1e-5)
    np.testing.assert_allclose(split.model_inputs(), once, atol=1e-5)
    kept = dd.split_from_arrays(x, y, normalization=(0.0, 1.0))  # as given, exactly
    np.testing.assert_array_equal(kept.model_inputs(), x)


def test_grayscale_float_images_take_a_given_normalization():
    x, y = float_images(channels=1)
    split = dd.split_from_arrays(x[..., 0].astype(np.float64), y, normalization=(0.5, 0.25))
    assert split.inputs.shape == x.shape and split.inputs.dtype == np.float32
    np.testing.assert_allclose(split.model_inputs(), (x - 0.5) / 0.25, rtol=1e-6)


def test_float_images_in_pixel_units_give_the_uint8_model_inputs():
    rng = np.random.default_rng(3)
    u8, y = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8), np.arange(40) % 4
    from_uint8 = dd.split_from_arrays(u8, y).model_inputs()
    from_float = dd.split_from_arrays(u8 / 255.0, y).model_inputs()
    np.testing.assert_allclose(from_float, from_uint8, atol=1e-4)


def _crops(image):
    """Every reflect-pad-4 crop of `image` [H, W, C], unflipped and flipped: [162, H, W, C]."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    crops = [padded[i : i + h, j : j + w] for i in range(9) for j in range(9)]
    return np.concatenate([crops, [c[:, ::-1] for c in crops]])


def test_float_images_are_augmented_with_crops_and_flips():
    x, y = float_images(n=20, size=32)
    split = dd.split_from_arrays(x, y)
    kept = np.arange(20)
    batch = next(iter(dd.pruned_dataset(split, kept, batch_size=8, augment=True)))
    plain = next(iter(dd.pruned_dataset(split, kept, batch_size=8)))
    np.testing.assert_array_equal(batch["index"], plain["index"])
    inputs = split.model_inputs()
    changed = 0
    for image, i in zip(batch["image"], batch["index"], strict=True):
        distances = np.abs(_crops(inputs[i]) - image).max(axis=(1, 2, 3))
        assert distances.min() < 1e-5  # one of the 162 crops and flips, exactly
        changed += not np.allclose(image, inputs[i])
    assert changed > 0


@pytest.mark.parametrize(
    "inputs, match",
    [
        (np.zeros((6, 4, 4, 2, 2), np.float32), r"set split_from_arrays\(kind=...\) to match"),
        (np.zeros((6, 3, 16, 16), np.float32), r"channels-first .*split_from_arrays\(kind=...\)"),
        (np.full((6, 4, 4), np.nan, np.float32), "NaN or inf images at rows"),
    ],
)
def test_notebook_messages_name_the_argument(inputs, match):
    with pytest.raises(ValueError, match=match) as e:
        dd.split_from_arrays(inputs, np.arange(6) % 2)
    assert "config.data" not in str(e.value) and "\n" not in str(e.value)


def test_float_images_through_the_command_line(tmp_path):
    paths = {}
    for split, n, seed in (("train", 150, 0), ("test", 60, 1)):
        x, y = float_images(n, size=8, channels=1, seed=seed)
        paths[split] = str(tmp_path / f"{split}.npz")
        np.savez(paths[split], image=x[..., 0], label=y)  # [N, H, W] float32
    workdir = str(tmp_path / "run")
    proc = run_main(
        "--config=configs/fashion_mnist.py:smoke",
        f"--workdir={workdir}",
        "--config.data.name=arrays",
        f"--config.data.arrays.train={paths['train']}",
        f"--config.data.arrays.test={paths['test']}",
        "--config.data.num_train_examples=0",  # all 150 rows (the config keeps 128)
        "--config.data.num_test_examples=0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = float_images(150, size=8, channels=1)[0].astype(np.float64)
    scores = artifacts.load_scores(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    assert scores["per_seed"].shape[1] == 150
    p = scores["provenance"]
    assert p["inputs"] == "images"
    np.testing.assert_allclose(p["normalization"]["mean"], [x.mean()], rtol=1e-5)
    np.testing.assert_allclose(p["normalization"]["std"], [x.std()], rtol=1e-5)
    assert np.isfinite(scores["per_seed"]).all()


def test_own_normalization_from_the_config(tmp_path):
    from tests.conftest import smoke_config

    x, y = float_images(channels=1)
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", image=x, label=y)
    overrides = {f"data.arrays.{s}": str(tmp_path / f"{s}.npz") for s in ("train", "test")}
    config = smoke_config(
        **{"data.name": "arrays", "data.num_train_examples": 0, "data.num_test_examples": 0},
        **overrides,
    )
    config.data.mean, config.data.std = (0.5,), (0.25,)
    train, test = data.load_splits(config.data)
    np.testing.assert_allclose(train.model_inputs(), (x - 0.5) / 0.25, rtol=1e-6)
    np.testing.assert_array_equal(test.std, [0.25])


def test_own_normalization_needs_both_mean_and_std():
    from tests.conftest import smoke_config

    config = smoke_config()
    config.data.mean = (0.5,)
    with pytest.raises(ValueError, match=r"config.data.mean and config.data.std are set together"):
        config_check.check_source(config.data)
    config.data.std = (0.0,)
    config_check.check_source(config.data)  # both set: the values are checked with the data
    x, y = float_images(channels=1)
    with pytest.raises(ValueError, match=r"normalization=\.\.\.\) needs finite means and stds > 0"):
        dd.split_from_arrays(x, y, normalization=(0.5, 0.0))
    with pytest.raises(ValueError, match=r"has a mean of 2 values, but the inputs have 1 channels"):
        dd.split_from_arrays(x, y, normalization=((0.5, 0.5), 1.0))


def load_float_images():
    """A `config.data.function`: float images in [0, 1], as many datasets hold them."""
    (x, y), (tx, ty) = float_images(30, seed=0), float_images(12, seed=1)
    return {"train": {"image": x / 10, "label": y}, "test": {"image": tx / 10, "label": ty}}


def test_float_images_from_a_function():
    from tests.conftest import smoke_config

    sizes = {"data.num_train_examples": 0, "data.num_test_examples": 0}
    function = f"{__name__}:load_float_images"
    config = smoke_config(**{"data.name": "function", "data.function": function, **sizes})
    train, test = data.load_splits(config.data)
    x = float_images(30)[0].astype(np.float64) / 10
    mean, std = x.mean((0, 1, 2)), x.std((0, 1, 2))
    assert train.kind == test.kind == "images" and train.num_classes == 3
    np.testing.assert_allclose(train.model_inputs(), standardized(x, mean, std), atol=1e-5)
    np.testing.assert_array_equal(test.mean, train.mean)


def test_train_seeds_takes_float_image_arrays():
    from datadiet_jax import models

    x, y = float_images(32, channels=1)
    model = models.get_model("small_cnn", 3, width=4)
    trained = dd.train_seeds(model, (x, y), num_seeds=2, num_steps=2, batch_size=16)
    train = dd.split_from_arrays(x, y)
    test = dd.split_from_arrays(*float_images(16, channels=1, seed=1), split="test", train=train)
    accuracy, loss = trained.evaluate(test, batch_size=8)
    assert accuracy.shape == (2,) and np.isfinite(loss).all()
    el2n = dd.el2n_scores(trained.model, trained.variables, train.model_inputs(), train.labels)
    assert el2n.shape == (2, 32) and np.isfinite(el2n).all()
