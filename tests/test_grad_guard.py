"""The first-batch guard: a planted rule fault is caught, named, and the scores stay exact."""

import functools
import logging

import flax.linen as nn
import jax
import numpy as np
import pytest

from datadiet_jax import grad_guard, grad_norms, grad_rules, scores


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.max_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
        return nn.Dense(3)(nn.relu(nn.Dense(5, name="hidden")(x)))


def _loop_scores(model, variables, images, labels):
    """[K, N] GraNd by one `jax.grad` per example and seed."""
    apply_fn = lambda v, x: model.apply(v, x, train=False)
    grad_one = jax.jit(
        jax.grad(
            lambda p, v, x, y: grad_norms.cross_entropy(
                apply_fn({**v, "params": p}, x[None]), y[None]
            )[0]
        )
    )
    out = []
    for k in range(jax.tree.leaves(variables)[0].shape[0]):
        one = jax.tree.map(lambda v, k=k: v[k], variables)
        out.append(
            [
                np.sqrt(
                    sum(
                        np.sum(np.asarray(g, np.float64) ** 2)
                        for g in jax.tree.leaves(grad_one(one["params"], one, x, y))
                    )
                )
                for x, y in zip(images, labels, strict=True)
            ]
        )
    return np.array(out)


@pytest.fixture
def fresh_caches():
    """Compiled programs cached with a patched rule must not outlive the test."""
    scores._build_cached.cache_clear()
    scores._exact_cached.cache_clear()
    yield
    scores._build_cached.cache_clear()
    scores._exact_cached.cache_clear()


def _data(n=11):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def test_planted_dense_fault_is_caught_named_and_scores_stay_exact(
    monkeypatch, caplog, fresh_caches
):
    model = TinyCNN()
    images, labels = _data()
    variables = scores.init_variables(model, jax.random.key(0), 2, images[:1])
    dense = grad_rules.RULES["dense"]
    monkeypatch.setitem(grad_rules.RULES, "dense", lambda *args: 2.0 * dense(*args))
    # The fault is real: without the guard the fast path gives wrong norms.
    one = jax.tree.map(lambda v: v[0], variables)
    apply_fn = lambda v, x: model.apply(v, x, train=False)
    faulty = jax.jit(functools.partial(grad_norms.per_example_grad_norms, apply_fn))(
        one, images[:4], labels[:4]
    )
    want = _loop_scores(model, variables, images, labels)
    assert np.min(np.abs(np.asarray(faulty) / want[0, :4] - 1)) > 0.01
    with caplog.at_level(logging.WARNING):
        got = scores.grand_scores(model, variables, images, labels, batch_size=8)
    warned = " ".join(r.getMessage() for r in caplog.records if "GraNd guard" in r.getMessage())
    assert "layer hidden " in warned and "layer Dense_0 " in warned, warned
    assert "Conv_0" not in warned and "BatchNorm_0" not in warned, warned
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_correct_rules_pass_the_guard(caplog, fresh_caches):
    model = TinyCNN()
    images, labels = _data()
    variables = scores.init_variables(model, jax.random.key(1), 1, images[:1])
    with caplog.at_level(logging.WARNING):
        got = scores.grand_scores(model, variables, images, labels, batch_size=8)
    assert not [r for r in caplog.records if "GraNd guard" in r.getMessage()]
    np.testing.assert_allclose(got, _loop_scores(model, variables, images, labels), rtol=1e-4)


def test_disagreement_tolerance_hand_values():
    total = np.array([1.0, 1.0, 1.0, 1.0])
    exact = {"a": np.array([0.5, 0.5, 1e-7, 0.5]), "b": np.array([0.5, np.nan, 0.5, 0.5])}
    fast = {
        "a": np.array([0.5002, 0.5, 3e-7, 0.5]),  # rel 4e-4; near-zero layer off 3x, under floor
        "b": np.array([0.5, 0.5, 0.5, np.nan]),  # NaN exact: not judged; NaN fast: flagged
    }
    bad = grad_guard.disagreeing_layers(fast, exact, total)
    assert list(bad) == ["b"] and bad["b"][0] == 3
    fast["a"][1] = 0.5006  # rel 1.2e-3 > RTOL
    bad = grad_guard.disagreeing_layers(fast, exact, total)
    assert sorted(bad) == ["a", "b"] and bad["a"][0] == 1
    fast["a"][2] = 2e-6  # a near-zero layer off by more than the floor
    assert grad_guard.disagreeing_layers(fast, exact, total)["a"][0] == 2
