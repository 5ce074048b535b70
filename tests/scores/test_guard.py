"""The first-batch guard: a planted rule fault is caught, named, and the scores stay exact."""

import functools
import logging

import jax
import numpy as np
import pytest

from datadiet_jax.scores import api, programs
from datadiet_jax.scores.pergrad import guard, linen_norms, rules
from tests import references
from tests.references import TinyCNN


def _loop_scores(model, variables, images, labels):
    """[K, N] GraNd by one `jax.grad` per example and seed."""
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    return references.linen_grand_loop(apply_fn, variables, images, labels)


@pytest.fixture
def fresh_caches():
    """Compiled programs cached with a patched rule must not outlive the test."""
    programs.clear_programs()
    yield
    programs.clear_programs()


def _data(n=11):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def test_planted_dense_fault_is_caught_named_and_scores_stay_exact(
    monkeypatch, caplog, fresh_caches
):
    model = TinyCNN(hidden=5)  # the faults are planted in Dense rules
    images, labels = _data()
    variables = api.init_variables(model, jax.random.key(0), 2, images[:1])
    dense = rules.RULES["dense"]
    monkeypatch.setitem(rules.RULES, "dense", lambda *args: 2.0 * dense(*args))
    # The fault is real: without the guard the fast path gives wrong norms.
    one = jax.tree.map(lambda v: v[0], variables)
    apply_fn = lambda v, x: model.apply(v, x, train=False)
    faulty = jax.jit(functools.partial(linen_norms.per_example_grad_norms, apply_fn))(
        one, images[:4], labels[:4]
    )
    want = _loop_scores(model, variables, images, labels)
    assert np.min(np.abs(np.asarray(faulty) / want[0, :4] - 1)) > 0.01
    with caplog.at_level(logging.WARNING):
        got = api.grand_scores(model, variables, images, labels, batch_size=8)
    warned = " ".join(r.getMessage() for r in caplog.records if "GraNd guard" in r.getMessage())
    assert "layer hidden " in warned and "layer Dense_0 " in warned, warned
    assert "Conv_0" not in warned and "BatchNorm_0" not in warned, warned
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_correct_rules_pass_the_guard(caplog, fresh_caches):
    model = TinyCNN(hidden=5)  # the faults are planted in Dense rules
    images, labels = _data()
    variables = api.init_variables(model, jax.random.key(1), 1, images[:1])
    with caplog.at_level(logging.WARNING):
        got = api.grand_scores(model, variables, images, labels, batch_size=8)
    assert not [r for r in caplog.records if "GraNd guard" in r.getMessage()]
    np.testing.assert_allclose(got, _loop_scores(model, variables, images, labels), rtol=1e-4)


def test_disagreement_tolerance_hand_values():
    total = np.array([1.0, 1.0, 1.0, 1.0])
    exact = {"a": np.array([0.5, 0.5, 1e-7, 0.5]), "b": np.array([0.5, np.nan, 0.5, 0.5])}
    fast = {
        "a": np.array([0.5002, 0.5, 3e-7, 0.5]),  # rel 4e-4; near-zero layer off 3x, under floor
        "b": np.array([0.5, 0.5, 0.5, np.nan]),  # NaN exact: not judged; NaN fast: flagged
    }
    bad = guard.disagreeing_layers(fast, exact, total)
    assert list(bad) == ["b"] and bad["b"][0] == 3
    fast["a"][1] = 0.5006  # rel 1.2e-3 > RTOL
    bad = guard.disagreeing_layers(fast, exact, total)
    assert sorted(bad) == ["a", "b"] and bad["a"][0] == 1
    fast["a"][2] = 2e-6  # a near-zero layer off by more than the floor
    assert guard.disagreeing_layers(fast, exact, total)["a"][0] == 2


def test_checked_examples_are_the_largest_valid_gradients():
    grand = np.array([[1.0, 5.0, 3.0, 2.0, 9.0], [1.0, 7.0, 1.0, 2.0, 9.0]])
    # Means 1, 6, 2, 2, 9; the last column is padding (count 4); ties keep batch order.
    assert guard.checked_examples(grand, 4, 2).tolist() == [1, 2]
    assert guard.checked_examples(grand, 4, 3).tolist() == [1, 2, 3]
    assert guard.checked_examples(grand, 2, 4).tolist() == [0, 1]
    grand[0, 0] = np.nan  # a non-finite score is always checked
    assert guard.checked_examples(grand, 4, 1).tolist() == [0]


def test_guard_checks_the_worst_fit_examples_of_the_first_batch(monkeypatch, caplog, fresh_caches):
    # The first four examples are fit to p_y ~ 1 - 1e-7 (gradients ~1e-6, dominated by float32
    # rounding of p - y); the guard must check the others, and still catch a planted fault.
    model = TinyCNN(hidden=5)  # the faults are planted in Dense rules
    images, _ = _data()
    labels = np.array([0, 0, 0, 0, 1, 2, 1, 2, 1, 2, 1])
    variables = api.init_variables(model, jax.random.key(0), 2, images[:1])
    variables["params"]["Dense_0"]["bias"] = (
        variables["params"]["Dense_0"]["bias"].at[:, 0].set(16.0)
    )
    dense = rules.RULES["dense"]
    monkeypatch.setitem(rules.RULES, "dense", lambda *args: 2.0 * dense(*args))
    with caplog.at_level(logging.WARNING):
        got = api.grand_scores(model, variables, images, labels, batch_size=16)
    warned = [r.getMessage() for r in caplog.records if "GraNd guard" in r.getMessage()]
    assert warned and all("example 0:" not in w for w in warned), warned
    checked = {int(w.split("example ")[1].split(":")[0]) for w in warned}
    assert checked <= set(range(4, 11)), warned
    want = _loop_scores(model, variables, images, labels)
    assert np.max(want[:, :4]) < 1e-4 < np.min(want[:, 4:])
    np.testing.assert_allclose(got[:, 4:], want[:, 4:], rtol=1e-4)
