"""Penultimate features: the last linear layer's input, against hand-built references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datadiet_jax import models
from datadiet_jax.scores import api
from datadiet_jax.scores.penultimate import penultimate_features


def _images(n=37, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def small_cnn():
    model = models.get_model("small_cnn", num_classes=10)
    images = _images()
    variables = api.init_variables(model, jax.random.key(0), 2, images[:1])
    # Non-trivial running statistics so eval-mode BatchNorm is not the identity.
    stats = variables["batch_stats"]
    stats = jax.tree.map(
        lambda v: v + 0.3 * jax.random.uniform(jax.random.key(v.size), v.shape), stats
    )
    return model, {**variables, "batch_stats": stats}, images


def test_small_cnn_features_are_the_classifier_input(small_cnn):
    model, variables, images = small_cnn
    got = penultimate_features(model, variables, images, batch_size=16)  # 37 = 2 * 16 + 5
    assert got.shape == (2, 37, 128) and got.dtype == np.float32

    def reference(one):
        # The classifier's input relu(BN(Dense_0(...))), from the submodules' params by hand.
        x = images
        for i in range(2):
            x = jax.lax.conv_general_dilated(
                x,
                one["params"][f"Conv_{i}"]["kernel"],
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            x = nn.relu(_bn(x, one, i))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1)) @ one["params"]["Dense_0"]["kernel"]
        return nn.relu(_bn(x, one, 2))

    for k in range(2):
        one = jax.tree.map(lambda v, k=k: v[k], variables)
        np.testing.assert_allclose(got[k], reference(one), rtol=2e-4, atol=2e-5)
    assert np.abs(got[0] - got[1]).max() > 1e-2  # two seeds, two different feature maps


def _bn(x, one, i):
    p, s = one["params"][f"BatchNorm_{i}"], one["batch_stats"][f"BatchNorm_{i}"]
    return (x - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]


def test_small_cnn_features_equal_intercepted_dense_input(small_cnn):
    model, variables, images = small_cnn
    one = jax.tree.map(lambda v: v[1], variables)
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            seen.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        model.apply(one, images, train=False)
    got = penultimate_features(model, variables, images, np.zeros(37, np.int32), batch_size=10)
    np.testing.assert_allclose(got[1], seen[-1], rtol=1e-5, atol=1e-6)


def test_mlp_function_features_are_explicit():
    rng = np.random.default_rng(1)
    k, d, h, c, n = 2, 5, 7, 3, 13
    params = {
        "w1": rng.normal(size=(k, d, h)).astype(np.float32),
        "b1": rng.normal(size=(k, h)).astype(np.float32),
        "w2": rng.normal(size=(k, h, c)).astype(np.float32),
    }

    def apply_fn(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]

    x = rng.normal(size=(n, d)).astype(np.float32)
    got = penultimate_features(apply_fn, params, x, batch_size=4)
    want = np.tanh(np.einsum("nd,kdh->knh", x, params["w1"]) + params["b1"][:, None])
    assert got.shape == (k, n, h)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Linear(6, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.body(x))))


def test_nnx_features_equal_the_head_input():
    @nnx.vmap(in_axes=0)
    def make(key):
        return _NnxMLP(nnx.Rngs(key))

    model = make(jax.random.split(jax.random.key(3), 2))
    graphdef, state = nnx.split(model)
    x = _images(11, (6,), seed=2)
    got = penultimate_features(graphdef, state, x, batch_size=4)
    assert got.shape == (2, 11, 8)
    for k in range(2):
        one = nnx.merge(graphdef, jax.tree.map(lambda v, k=k: v[k], state))
        one.eval()
        want = nnx.relu(one.bn(one.body(jnp.asarray(x))))
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6)
    assert np.abs(got[0] - got[1]).max() > 1e-2


def test_stream_input_matches_arrays(small_cnn):
    model, variables, images = small_cnn
    labels = np.zeros(37, np.int32)
    stream = ((images[i : i + 9], labels[i : i + 9]) for i in range(0, 37, 9))
    got = penultimate_features(model, variables, stream, batch_size=16)
    want = penultimate_features(model, variables, images, batch_size=16)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_model_without_linear_layer_is_refused():
    def apply_fn(p, x):
        return x * p["s"]

    with pytest.raises(ValueError, match="no last linear layer"):
        penultimate_features(apply_fn, {"s": np.ones((1, 3), np.float32)}, _images(4, (3,)))
