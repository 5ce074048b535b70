"""Images that do not fit the model: one line naming the layer, what it takes and the images."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datadiet_jax import models
from datadiet_jax.scores import api

SCORES = [api.el2n_scores, api.grand_scores]


class MLP(nn.Module):
    """Flatten, Dense(16), ReLU, Dense(10): a plain Linen MLP."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))  # Dense_0
        return nn.Dense(10)(x)


class DenseOnly(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x)


def _images(shape, n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 10, n)


def _variables(model, init_shape, num_seeds=2):
    return api.init_variables(model, jax.random.key(0), num_seeds, jnp.zeros((1, *init_shape)))


def _message(fn, model, variables, images, labels) -> str:
    with pytest.raises(ValueError) as err:
        fn(model, variables, images, labels, batch_size=4)
    text = str(err.value)
    assert "\n" not in text
    return text


def _images_part(shape) -> str:
    full = "[" + ", ".join(map(str, shape)) + "]"
    one = "[" + ", ".join(map(str, shape[1:])) + "]"
    return f"images {full} ({one} per example) do not fit the model: "


@pytest.mark.parametrize("fn", SCORES)
def test_small_cnn_on_larger_images_names_the_dense_layer(fn):
    width = 4
    model = models.get_model("small_cnn", 10, width=width)
    variables = _variables(model, (28, 28, 1))
    images, labels = _images((32, 32, 1))
    text = _message(fn, model, variables, images, labels)
    # Two SAME 3x3 convs, each followed by a 2x2 max-pool: side / 4, 2 * width channels.
    takes, gives = (28 // 4) ** 2 * 2 * width, (32 // 4) ** 2 * 2 * width
    assert text.startswith(_images_part(images.shape)), text
    assert f"Dense_0 takes {takes} input features, these images give it {gives}; " in text
    assert "seed axis" not in text and "variables leaf" not in text


@pytest.mark.parametrize("fn", SCORES)
def test_conv_model_on_images_without_channel_axis(fn):
    model = models.get_model("small_cnn", 10, width=4)
    variables = _variables(model, (28, 28, 1))
    images, labels = _images((28, 28))
    text = _message(fn, model, variables, images, labels)
    assert text.startswith(_images_part(images.shape)), text
    assert "Conv_0 expects inputs [B, H, W, 1]; the images lack the channel axis" in text
    # The fix it names works: the same images with the axis added are scored.
    assert fn(model, variables, images[..., None], labels, batch_size=4).shape == (2, 5)


@pytest.mark.parametrize("fn", SCORES)
def test_conv_model_on_images_with_other_channels(fn):
    model = models.get_model("small_cnn", 10, width=4)
    variables = _variables(model, (28, 28, 1))
    images, labels = _images((28, 28, 3))
    text = _message(fn, model, variables, images, labels)
    assert "Conv_0 takes 1 input channel, the images give it 3; " in text, text


@pytest.mark.parametrize("fn", SCORES)
def test_mlp_and_dense_only_models(fn):
    images, labels = _images((32, 32, 1))
    text = _message(fn, MLP(), _variables(MLP(), (28, 28, 1)), images, labels)
    assert text.startswith(_images_part(images.shape)), text
    assert f"Dense_0 takes {28 * 28} input features, these images give it {32 * 32}; " in text
    flat, labels = _images((1024,))
    text = _message(fn, DenseOnly(), _variables(DenseOnly(), (784,)), flat, labels)
    assert text.startswith(_images_part(flat.shape)), text
    assert "Dense_0 takes 784 input features, the images give it 1024; " in text


def test_streamed_images_that_do_not_fit_name_the_item_shape():
    model = models.get_model("small_cnn", 10, width=4)
    variables = _variables(model, (28, 28, 1))
    images, labels = _images((28, 28), n=6)
    stream = ((images[i : i + 3], labels[i : i + 3]) for i in (0, 3))
    with pytest.raises(ValueError, match=re.escape(_images_part((3, 28, 28)))):
        api.el2n_scores(model, variables, stream, batch_size=4)


def test_variables_that_are_wrong_are_still_blamed():
    model = models.get_model("small_cnn", 10, width=4)
    images, labels = _images((28, 28, 1))
    other = _variables(models.get_model("small_cnn", 10, width=8), (28, 28, 1))
    stacked = _variables(model, (28, 28, 1))
    cases = [
        (other, "variables leaf"),  # another width: not an image problem
        (jax.tree.map(lambda v: v[None], stacked), r"variables leaf .* \(1, 2, "),  # two axes
        (jax.tree.map(lambda v: v[0], stacked), "no leading seed axis"),
    ]
    for variables, pattern in cases:
        for fn in SCORES:
            text = _message(fn, model, variables, images, labels)
            assert re.search(pattern, text) and "do not fit the model" not in text, text


def _mlp(params, x):
    h = jnp.tanh(x.reshape(len(x), -1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _own_error(apply_fn, *args) -> str:
    """The first line of the model's own error on one example (the reference text)."""
    try:
        apply_fn(*args)
    except Exception as err:  # noqa: BLE001
        return str(err).strip().splitlines()[0].rstrip(".")
    raise AssertionError("the model ran")


@pytest.mark.parametrize("fn", SCORES)
def test_plain_function_gives_its_own_error_and_the_images_shape(fn):
    rng = np.random.default_rng(1)
    params = {
        "w1": jnp.asarray(rng.normal(size=(2, 36, 5)), jnp.float32),
        "b1": jnp.zeros((2, 5)),
        "w2": jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32),
        "b2": jnp.zeros((2, 3)),
    }
    images, labels = _images((8, 8, 1), n=4)
    text = _message(fn, _mlp, params, images, labels % 3)
    one = jax.tree.map(lambda v: v[0], params)
    assert "the model fails on images [4, 8, 8, 1] ([8, 8, 1] per example)" in text, text
    assert _own_error(_mlp, one, jnp.asarray(images[:1])) in text


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.head = nnx.Linear(4 * 6 * 6, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.conv(x)).reshape(x.shape[0], -1))


@pytest.mark.parametrize("fn", SCORES)
def test_nnx_model_gives_its_own_error_and_the_images_shape(fn):
    @nnx.vmap(in_axes=0)
    def make(key):
        return NnxNet(nnx.Rngs(key))

    graphdef, state = nnx.split(make(jax.random.split(jax.random.key(0), 2)))
    images, labels = _images((6, 6), n=4)
    text = _message(fn, graphdef, state, images, labels % 3)
    assert "the model fails on images [4, 6, 6] ([6, 6] per example)" in text, text
    single = nnx.merge(graphdef, jax.tree.map(lambda v: v[0], state))
    assert _own_error(single, jnp.asarray(images[:1])) in text
