"""The process cache of the scores' fixed costs (`scores/decisions.py`): reused only for the same
signature, its batch check keyed by values too, and GraNd's race keeping every batch's result."""

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax.scores import api, decisions, model_form, programs
from datadiet_jax.scores.pergrad import guard, jaxpr_norms
from datadiet_jax.scores.pergrad import method as method_lib
from tests.references import function_grand_loop

FEATURES, HIDDEN, CLASSES = 3, 5, 3


def pooled_mlp(params, x):
    """x [B, T, F]: the positions averaged, so every T fits the same params."""
    h = jnp.tanh(x.mean(axis=1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def pooled_relu(params, x):
    """Another model with the same params as `pooled_mlp`."""
    h = jax.nn.relu(x.mean(axis=1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def centered(params, x):
    """`pooled_mlp` of the inputs less the batch's mean: each example depends on the others."""
    return pooled_mlp(params, x - x.mean(axis=0, keepdims=True))


def gated(params, x):
    """Adds `alpha` times the batch's mean: batch-independent exactly when alpha is 0."""
    return pooled_mlp(params, x + params["alpha"] * x.mean(axis=0, keepdims=True))


def _params(num_seeds=2, seed=0, **fixed):
    rng = np.random.default_rng(seed)
    shapes = {"w1": (FEATURES, HIDDEN), "b1": (HIDDEN,), "w2": (HIDDEN, CLASSES), "b2": (CLASSES,)}
    params = {k: rng.normal(size=(num_seeds, *s)) for k, s in shapes.items()}
    params |= {k: np.broadcast_to(v, (num_seeds, *np.shape(v))) for k, v in fixed.items()}
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)


def _data(n, positions=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, positions, FEATURES)).astype(np.float32)
    return images, rng.integers(0, CLASSES, n)


def _delta(fn):
    """(fn(), how much each `decisions.stats()` counter grew during it)."""
    before = decisions.stats()
    out = fn()
    after = decisions.stats()
    return out, {k: after[k] - before[k] for k in decisions.COUNTED}


@pytest.fixture
def fresh():
    """No decision (or program built with a planted fault) leaks into or out of a test."""
    programs.clear_programs()
    yield
    programs.clear_programs()


def test_a_second_call_reuses_every_decision(fresh):
    params = _params()
    images, labels = _data(40)  # 10 batches of 4: the guard's first batch, then a race of 8
    call = lambda p=params: api.grand_scores(pooled_mlp, p, images, labels, batch_size=4)  # noqa: E731
    _, first = _delta(call)
    assert first == {
        "batch_checks": 1,
        "site_finders": 1,
        "guards": 1,
        "races": 1,
        "timed_runs": 2 * method_lib.REPEATS,
        "hits": 0,
    }
    _, again = _delta(call)
    assert again == dict.fromkeys(decisions.COUNTED, 0) | {"hits": 2}
    # EL2N of the same variables and data: the batch check's pass is shared.
    _, el2n = _delta(lambda: api.el2n_scores(pooled_mlp, params, images, labels, batch_size=4))
    assert el2n["batch_checks"] == 0
    # Other values of the same model and shapes: only the batch check runs again.
    _, moved = _delta(lambda: call(_params(seed=1)))
    assert moved == dict.fromkeys(decisions.COUNTED, 0) | {"batch_checks": 1, "hits": 1}
    assert decisions.stats()["setup_seconds"] > 0


@pytest.mark.parametrize("batches", [method_lib.MIN_BATCHES - 1, method_lib.MIN_BATCHES])
def test_a_call_of_min_batches_races_and_a_shorter_one_does_not(fresh, batches):
    """On CPU the guard's run of batch 0 is the sites program's untimed first run, so a call of
    exactly MIN_BATCHES batches has enough for the race, and one batch fewer has not."""
    images, labels = _data(4 * batches)
    _, counts = _delta(
        lambda: api.grand_scores(pooled_mlp, _params(), images, labels, batch_size=4)
    )
    assert counts["races"] == int(batches >= method_lib.MIN_BATCHES)
    assert counts["timed_runs"] == 2 * method_lib.REPEATS * counts["races"]


def test_raced_batches_equal_an_untimed_call_and_the_grad_loop(fresh, caplog):
    params = _params(seed=3)
    images, labels = _data(40, seed=3)
    with caplog.at_level(logging.INFO):
        raced, counts = _delta(
            lambda: api.grand_scores(pooled_mlp, params, images, labels, batch_size=4)
        )
    assert counts["races"] == 1 and counts["timed_runs"] == 2 * method_lib.REPEATS
    logged = [
        r.getMessage() for r in caplog.records if "raced on the first batches" in r.getMessage()
    ]
    assert len(logged) == 1 and "vmap_grad" in logged[0], logged
    np.testing.assert_allclose(
        raced, function_grand_loop(pooled_mlp, params, images, labels), rtol=1e-4
    )
    decisions.clear()  # a stream never races: every batch by the sites' program
    stream = ((images[i : i + 4], labels[i : i + 4]) for i in range(0, 40, 4))
    untimed, counts = _delta(lambda: api.grand_scores(pooled_mlp, params, stream, batch_size=4))
    assert counts["races"] == 0 and counts["guards"] == 1
    np.testing.assert_allclose(raced, untimed, rtol=1e-5)


def test_decisions_are_never_used_for_another_model_shape_or_batch_size(fresh, monkeypatch, caplog):
    params = _params(seed=4)
    images, labels = _data(9, seed=4)
    api.grand_scores(pooled_mlp, params, images, labels, batch_size=8)  # correct rules: decided
    dense = jaxpr_norms._dense_sq_norm
    monkeypatch.setattr(jaxpr_norms, "_dense_sq_norm", lambda *a: 2.0 * dense(*a))
    other_positions = _data(9, positions=6, seed=4)
    calls = {
        "another model": (pooled_relu, images, labels, 8),
        "another input shape": (pooled_mlp, *other_positions, 8),
        "another batch size": (pooled_mlp, images, labels, 4),
    }
    for what, (fn, x, y, batch_size) in calls.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            got, counts = _delta(lambda: api.grand_scores(fn, params, x, y, batch_size=batch_size))  # noqa: B023
        assert counts["guards"] == 1 and counts["batch_checks"] == 1, (what, counts)
        warned = [r.getMessage() for r in caplog.records if "GraNd guard" in r.getMessage()]
        assert warned, what  # the planted fault is found for this signature
        np.testing.assert_allclose(
            got, function_grand_loop(fn, params, x, y), rtol=1e-4, err_msg=what
        )


def test_a_batch_dependent_model_is_refused_after_a_passing_one(fresh):
    params = _params(seed=5)
    images, labels = _data(9, seed=5)
    for fn in (api.el2n_scores, api.grand_scores):
        fn(pooled_mlp, params, images, labels, batch_size=8)
        with pytest.raises(ValueError, match="likely uses batch statistics"):
            fn(centered, params, images, labels, batch_size=8)  # same shapes, other model
    # The same model whose values switch the dependence on the batch on: refused again.
    off = _params(seed=5, alpha=np.float32(0.0))
    for fn in (api.el2n_scores, api.grand_scores):
        fn(gated, off, images, labels, batch_size=8)
    on = off | {"alpha": jnp.asarray([0.0, 0.5])}
    for fn in (api.el2n_scores, api.grand_scores):
        with pytest.raises(ValueError, match=r"\(seed 1, example"):
            fn(gated, on, images, labels, batch_size=8)
    _, counts = _delta(lambda: api.el2n_scores(gated, off, images, labels, batch_size=8))
    assert counts["batch_checks"] == 0  # the pass of these values is remembered, not the failure


def test_the_guard_reruns_while_the_values_hide_sites_from_it(fresh):
    images, labels = _data(9, seed=6)
    zero_head = _params(seed=6, w2=np.zeros((HIDDEN, CLASSES), np.float32))
    call = lambda p: api.grand_scores(pooled_mlp, p, images, labels, batch_size=8)  # noqa: E731
    for _ in range(2):  # w1 and b1 have no gradient behind a zero head: not judged
        _, counts = _delta(lambda: call(zero_head))
        assert counts["guards"] == 1
    _, counts = _delta(lambda: call(_params(seed=7)))  # every site judged: the verdict is kept
    assert counts["guards"] == 1
    got, counts = _delta(lambda: call(zero_head))
    assert counts["guards"] == 0
    np.testing.assert_allclose(
        got, function_grand_loop(pooled_mlp, zero_head, images, labels), rtol=1e-4
    )


def test_an_unhashable_model_is_not_cached(fresh):
    class Unhashable(model_form.FunctionModel):
        __hash__ = None

    form = Unhashable(model_form.ParamsOnly(pooled_mlp))
    variables = {"params": _params(seed=8), "state": {}}
    images, labels = _data(9, seed=8)
    assert decisions.signature(form, variables, images, "unroll", None) is None
    for _ in range(2):
        _, counts = _delta(lambda: api.grand_scores(form, variables, images, labels, batch_size=8))
        assert counts["guards"] == 1 and counts["batch_checks"] == 1


def test_unjudged_sites_hand_values():
    total = np.array([1.0, 2.0])
    exact = {"a": np.array([0.5, 1.0]), "tiny": np.array([1e-7, 2e-6]), "zero": np.zeros(2)}
    assert guard.unjudged_sites(exact, total) == {"tiny", "zero"}  # 2e-6 is the floor of 2.0
    exact["tiny"][1] = 2.1e-6
    assert guard.unjudged_sites(exact, total) == {"zero"}


def test_race_takes_turns_times_after_the_first_runs_and_keeps_the_fastest():
    ran = []

    def program(name, seconds):
        def fn(x):
            ran.append(name)
            time.sleep(seconds)
            return x + 1

        return fn

    race = method_lib.Race({"slow": program("slow", 0.02), "fast": program("fast", 0.0)}, 2)
    results = []
    while race.winner is None:
        results.append(race.run((jnp.asarray(len(results)),)))
    assert ran == ["slow", "fast"] * 3 and race.timed_runs() == 4
    assert [int(r) for r in results] == list(range(1, 7))  # every run's result is returned
    assert race.winner == "fast" and race.best["slow"] >= 0.02
    assert race.overhead() >= 3 * (0.02 - race.best["fast"])  # the loser's three runs
    assert method_lib.fastest({"a": 1.0, "b": 1.0}) == "a"
