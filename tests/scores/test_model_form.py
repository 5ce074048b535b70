"""The model form: init and apply of Linen, NNX and plain-function models."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datadiet_jax.scores import api, losses, model_form
from tests.references import TinyCNN

X = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))


class DropNNX(nnx.Module):
    def __init__(self, *, rngs):
        self.linear = nnx.Linear(64, 3, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.linear(self.dropout(x.reshape((x.shape[0], -1))))


def test_linen_init_and_modes_are_the_modules_own():
    module = TinyCNN()
    model = model_form.model_form(module)
    params, state = model.init(jax.random.key(1), X[:1])
    variables = module.init(jax.random.key(1), X[:1], train=False)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, variables["params"]))
    logits, new_state = model.apply(params, state, X, train=True, rng=jax.random.key(2))
    want, updates = module.apply(variables, X, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(logits, want)
    np.testing.assert_array_equal(
        new_state["batch_stats"]["BatchNorm_0"]["mean"],
        updates["batch_stats"]["BatchNorm_0"]["mean"],
    )
    assert not np.array_equal(
        new_state["batch_stats"]["BatchNorm_0"]["mean"], state["batch_stats"]["BatchNorm_0"]["mean"]
    )
    np.testing.assert_array_equal(
        model.logits(params, state, X), module.apply(variables, X, train=False)
    )


def test_nnx_dropout_draws_from_the_step_rng_only():
    model = model_form.model_form(DropNNX)
    assert isinstance(model, model_form.NNXModel) and len(model.key_paths) == 1
    params, state = jax.jit(model.init)(jax.random.key(0), X[:1])
    key_data = jax.tree.leaves(state)
    assert all(not jnp.issubdtype(v.dtype, jax.dtypes.prng_key) for v in key_data)
    run = functools.partial(model.apply, params, state, X, train=True)
    a, b, c = (run(rng=jax.random.key(r))[0] for r in (5, 5, 6))
    np.testing.assert_array_equal(a, b)  # the same rng, the same masks
    assert not np.array_equal(a, c)
    # Eval mode: no dropout, the plain linear map of the module built from the same key.
    module = DropNNX(rngs=nnx.Rngs(jax.random.key(0)))
    np.testing.assert_allclose(
        model.logits(params, state, X), module.linear(X.reshape((6, -1))), rtol=1e-6
    )
    # Dropout in train mode zeroes about half the inputs: train logits differ from eval's.
    assert not np.allclose(a, model.logits(params, state, X))


def test_function_models_pass_through():
    class Affine:
        def init(self, key, sample):
            return {"w": jax.random.normal(key, (64, 3))}, {"calls": jnp.zeros(())}

        def apply(self, params, state, x, *, train, rng):
            new = {"calls": state["calls"] + 1} if train else state
            return x.reshape((x.shape[0], -1)) @ params["w"], new

    model = model_form.model_form(Affine())
    params, state = model.init(jax.random.key(0), X[:1])
    logits, new = model.apply(params, state, X, train=True, rng=None)
    np.testing.assert_allclose(logits, X.reshape((6, -1)) @ params["w"], rtol=1e-6)
    assert float(new["calls"]) == 1
    scores = api.el2n_scores(
        model,
        jax.tree.map(lambda v: v[None], {"params": params, "state": state}),
        X,
        np.zeros(6, int),
    )
    want = losses.el2n(X.reshape((6, -1)) @ params["w"], jnp.zeros(6, jnp.int32))
    np.testing.assert_allclose(scores[0], want, rtol=1e-5)


def test_refusals_are_one_line():
    with pytest.raises(ValueError, match="constructed NNX module .*pass its class or a factory"):
        model_form.model_form(DropNNX(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="got int"):
        model_form.model_form(3)
    model = model_form.model_form(TinyCNN(num_classes=3))
    with pytest.raises(ValueError, match=r"returns \(1, 3\) .* has 10 classes"):
        model_form.check_outputs(model, np.zeros((1, 8, 8, 1), np.float32), 10)
    with pytest.raises(ValueError, match=r"fails on the dataset's inputs \[N, 5\] float32: "):
        model_form.check_outputs(model, np.zeros((1, 5), np.float32), 3)
    model_form.check_outputs(model, np.zeros((1, 8, 8, 1), np.float32), 3)  # fits


def test_linen_modules_without_train_or_state():
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    model = model_form.model_form(Plain())
    assert model.flags == ()
    params, state = model.init(jax.random.key(0), X[:1])
    assert state == {}
    logits, new = model.apply(params, state, X, train=True, rng=jax.random.key(1))
    assert new == {} and logits.shape == (6, 3)
    again = model_form.model_form(Plain())
    assert again == model and hash(again) == hash(model)  # compiled programs are shared
