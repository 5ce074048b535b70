"""Any JAX model: Flax NNX modules and plain functions, against loops of per-example `jax.grad`."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datadiet_jax.scores import api, model_form, programs
from datadiet_jax.scores.pergrad import jaxpr_norms, jaxpr_sites
from tests.references import cross_entropy, function_grand_loop, seed, tree_norm


class NnxCNN(nnx.Module):
    """Conv (no bias) + BatchNorm + ReLU + pool, Dropout, Linear: the NNX layers with fast rules."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(4 * 3 * 3, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        return self.head(self.drop(x.reshape(x.shape[0], -1)))


def _nnx_model(num_seeds: int):
    """K stacked NnxCNNs with non-trivial running statistics (eval BatchNorm is no identity)."""

    @nnx.vmap(in_axes=0)
    def make(key):
        return NnxCNN(nnx.Rngs(key))

    model = make(jax.random.split(jax.random.key(0), num_seeds))
    rng = np.random.default_rng(1)
    model.bn.mean.value = jnp.asarray(rng.normal(size=(num_seeds, 4)), jnp.float32)
    model.bn.var.value = jnp.asarray(rng.uniform(0.5, 2.0, (num_seeds, 4)), jnp.float32)
    model.bn.scale.value = jnp.asarray(rng.uniform(0.5, 1.5, (num_seeds, 4)), jnp.float32)
    return model


def _data(n=7, shape=(6, 6, 1)):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 3, n)


def _nnx_loop(model, images, labels):
    """[K, N] GraNd and logits [K, N, C] by nnx.grad per example on each seed's own module."""
    graphdef, state = nnx.split(model)
    grand, logits = [], []
    for k in range(jax.tree.leaves(state)[0].shape[0]):
        one = nnx.merge(graphdef, seed(state, k))
        one.eval()
        loss = lambda m, x, y: cross_entropy(m(x[None]), y[None])[0]  # noqa: E731
        grand.append(
            [tree_norm(nnx.grad(loss)(one, x, y)) for x, y in zip(images, labels, strict=True)]
        )
        logits.append(np.asarray(one(jnp.asarray(images))))
    return np.array(grand), np.array(logits)


def _el2n(logits, labels):
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.linalg.norm(probs - np.eye(logits.shape[-1])[labels], axis=-1)


def mlp(params, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _mlp_params(num_seeds, d_in=36):
    rng = np.random.default_rng(2)
    shapes = {"w1": (d_in, 5), "b1": (5,), "w2": (5, 3), "b2": (3,)}
    return {
        k: jnp.asarray(rng.normal(size=(num_seeds, *s)) * 0.5, jnp.float32)
        for k, s in shapes.items()
    }


MEAN = jnp.float32(0.1)  # a closed-over constant, shared by the seeds


def cnn(params, x):
    """NCHW/OIHW `lax.conv_general_dilated` CNN with bias, written without any library."""
    x = jnp.transpose(x - MEAN, (0, 3, 1, 2))
    y = jax.lax.conv_general_dilated(
        x, params["conv"]["w"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    y = jax.nn.relu(y + params["conv"]["b"][None, :, None, None])
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return jnp.dot(y.reshape(y.shape[0], -1), params["dense"][0]) + params["dense"][1]


def _cnn_params(num_seeds):
    rng = np.random.default_rng(3)
    p = {
        "conv": {
            "w": rng.normal(size=(num_seeds, 4, 1, 3, 3)) * 0.5,
            "b": rng.normal(size=(num_seeds, 4)),
        },
        "dense": [rng.normal(size=(num_seeds, 36, 3)) * 0.3, rng.normal(size=(num_seeds, 3))],
    }
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), p)


def test_nnx_grand_and_el2n_equal_per_example_loops():
    model = _nnx_model(2)
    images, labels = _data()
    want_grand, logits = _nnx_loop(model, images, labels)
    got = api.grand_scores(*nnx.split(model), images, labels, batch_size=4)
    assert got.shape == (2, 7)
    np.testing.assert_allclose(got, want_grand, rtol=1e-4)
    el2n = api.el2n_scores(*nnx.split(model), images, labels, batch_size=4)
    np.testing.assert_allclose(el2n, _el2n(logits, labels), rtol=1e-5, atol=1e-6)
    assert not model.bn.use_running_average  # the given module is left in train mode


def test_nnx_single_module_is_one_seed():
    model = NnxCNN(nnx.Rngs(3))
    images, labels = _data(n=5)
    graphdef, state = nnx.split(model)
    stacked = nnx.merge(graphdef, jax.tree.map(lambda v: v[None], state))
    want, _ = _nnx_loop(stacked, images, labels)
    got = api.grand_scores(model, None, images, labels, batch_size=8)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_nnx_fast_path_covers_conv_batchnorm_linear():
    graphdef, state = nnx.split(_nnx_model(1))
    adapted, packed = model_form.from_pair(graphdef, state)
    one = jax.tree.map(lambda v: v[0], packed)
    images = jnp.zeros((4, 6, 6, 1))
    sites, fallback, _ = jaxpr_sites.find_sites(adapted.logits, one["params"], one["state"], images)
    kinds = {s.key: s.kind for s in sites}
    assert kinds == {
        "conv/kernel": "conv",
        "bn/scale": "scale",
        "bn/bias": "shift",
        "head/kernel": "dense",
        "head/bias": "shift",
    }
    assert fallback == ()


@pytest.mark.parametrize("form", ["mlp", "cnn"])
def test_plain_function_grand_and_el2n_equal_per_example_loops(form):
    apply_fn, params = (mlp, _mlp_params(2)) if form == "mlp" else (cnn, _cnn_params(2))
    images, labels = _data()
    got = api.grand_scores(apply_fn, params, images, labels, batch_size=4)
    np.testing.assert_allclose(
        got, function_grand_loop(apply_fn, params, images, labels), rtol=1e-4
    )
    logits = np.stack(
        [np.asarray(apply_fn(jax.tree.map(lambda v, k=k: v[k], params), images)) for k in range(2)]
    )
    el2n = api.el2n_scores(apply_fn, params, images, labels, batch_size=4)
    np.testing.assert_allclose(el2n, _el2n(logits, labels), rtol=1e-5, atol=1e-6)
    one = jax.tree.map(lambda v: v[0], params)
    sites, fallback, _ = jaxpr_sites.find_sites(
        lambda p, s, x: apply_fn(p, x), one, {}, jnp.asarray(images)
    )
    assert fallback == () and len(sites) == 4  # every leaf has a fast rule


def test_tied_weight_goes_to_the_fallback_and_stays_exact():
    def tied(params, x):  # an autoencoder-style reuse of w: x @ w, then h @ w.T
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w"])
        return (h @ params["w"].T) @ params["out"]

    rng = np.random.default_rng(4)
    params = {
        "w": jnp.asarray(rng.normal(size=(1, 36, 5)) * 0.3, jnp.float32),
        "out": jnp.asarray(rng.normal(size=(1, 36, 3)) * 0.3, jnp.float32),
    }
    images, labels = _data()
    one = jax.tree.map(lambda v: v[0], params)
    sites, fallback, _ = jaxpr_sites.find_sites(
        lambda p, s, x: tied(p, x), one, {}, jnp.asarray(images)
    )
    assert [s.key for s in sites] == ["out"] and fallback == (1,)  # leaves: out, w
    got = api.grand_scores(tied, params, images, labels, batch_size=4)
    np.testing.assert_allclose(got, function_grand_loop(tied, params, images, labels), rtol=1e-4)


def test_model_mixing_examples_is_refused_before_scoring():
    def mixing(params, x):  # the batch mean mixes examples; dataflow still sees a dense site
        h = x.reshape(x.shape[0], -1)
        return (h - jnp.mean(h, axis=0)) @ params["w"] + params["b"]

    rng = np.random.default_rng(5)
    params = {
        "w": jnp.asarray(rng.normal(size=(1, 36, 3)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(1, 3)), jnp.float32),
    }
    images, labels = _data(n=6)
    for fn in (api.grand_scores, api.el2n_scores):
        with pytest.raises(ValueError, match="likely uses batch statistics") as err:
            fn(mixing, params, images, labels, batch_size=8)
        assert "\n" not in str(err.value)


def test_stateful_function_takes_per_seed_state():
    def fn(params, state, x):
        return mlp(params, (x - state["mean"]) / state["std"])

    params = _mlp_params(2)
    state = {"mean": jnp.asarray([0.5, -0.5]), "std": jnp.asarray([2.0, 0.5])}
    images, labels = _data()
    got = api.grand_scores(
        model_form.stateful(fn), {"params": params, "state": state}, images, labels, batch_size=4
    )
    for k in range(2):
        s = jax.tree.map(lambda v, k=k: v[k], state)
        want = function_grand_loop(
            lambda p, x, s=s: fn(p, s, x),
            jax.tree.map(lambda v, k=k: v[k : k + 1], params),
            images,
            labels,
        )
        np.testing.assert_allclose(got[k], want[0], rtol=1e-4)


def test_planted_rule_fault_is_caught_by_the_guard(monkeypatch, caplog):
    programs.clear_programs()
    dense = jaxpr_norms._dense_sq_norm
    monkeypatch.setattr(jaxpr_norms, "_dense_sq_norm", lambda *a: 2.0 * dense(*a))
    model = _nnx_model(2)
    images, labels = _data(n=9)
    try:
        with caplog.at_level(logging.WARNING):
            got = api.grand_scores(*nnx.split(model), images, labels, batch_size=8)
    finally:
        programs.clear_programs()
    warned = " ".join(r.getMessage() for r in caplog.records if "GraNd guard" in r.getMessage())
    assert "layer head/kernel " in warned and "conv/kernel" not in warned, warned
    np.testing.assert_allclose(got, _nnx_loop(model, images, labels)[0], rtol=1e-4)


def test_bad_models_and_params_raise_one_line_value_errors():
    images, labels = _data(n=4)
    params = _mlp_params(2)
    cases = [
        (lambda: api.grand_scores(NnxCNN(nnx.Rngs(0)), {}, images, labels), "passed alone"),
        (
            lambda: api.grand_scores(mlp, {**params, "b2": params["b2"][:1]}, images, labels),
            "same leading",
        ),
        (
            lambda: api.grand_scores(mlp, jax.tree.map(lambda v: v[0], params), images, labels),
            "same leading",
        ),
        (
            lambda: api.grand_scores(mlp, {**params, "w1": params["w1"][:, :9]}, images, labels),
            r"the model fails on images \[4, 6, 6, 1\] \(\[6, 6, 1\] per example\) with the params",
        ),
        (
            lambda: api.grand_scores(
                mlp, {**params, "b2": jnp.zeros((2, 3), jnp.int32)}, images, labels
            ),
            "differentiated",
        ),
        (lambda: api.el2n_scores(42, params, images, labels), "model must be"),
        (
            lambda: api.el2n_scores(
                lambda p, x: x.reshape(len(x), -1)[:, 0], params, images, labels
            ),
            "logits",
        ),
    ]
    for call, words in cases:
        with pytest.raises(ValueError, match=words) as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("seed_axis", ["vmap", "map"])
def test_seed_axes_agree_for_nnx(seed_axis):
    model = _nnx_model(2)
    images, labels = _data(n=5)
    got = api.grand_scores(*nnx.split(model), images, labels, batch_size=4, seed_axis=seed_axis)
    np.testing.assert_allclose(got, _nnx_loop(model, images, labels)[0], rtol=1e-4)
