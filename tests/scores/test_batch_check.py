"""The first-batch check: models whose logits depend on the rest of the batch are refused."""

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax import models
from datadiet_jax.scores import api, batch_check, losses, model_form, programs
from datadiet_jax.scores.sharding import Placement

SCORES = [api.el2n_scores, api.grand_scores]


class BatchMean(nn.Module):
    """Conv, then subtracting the batch's mean: every example's output depends on the others."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = x - x.mean(axis=0, keepdims=True)
        return nn.Dense(3)(nn.relu(x).reshape((x.shape[0], -1)))


class BatchStatsNorm(nn.Module):
    """A BatchNorm normalizing with the batch's own statistics (haiku's test_local_stats=True)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        x = (x - mean) / jnp.sqrt(var + 1e-5) * self.param("scale", nn.initializers.ones, (4,))
        return nn.Dense(3)(nn.relu(x).reshape((x.shape[0], -1)))


class MixedBySeed(nn.Module):
    """Adds `alpha` times the batch mean: batch-independent exactly when alpha is 0."""

    @nn.compact
    def __call__(self, x):
        h = x.reshape((x.shape[0], -1))
        h = h + self.param("alpha", nn.initializers.zeros, ()) * h.mean(axis=0)
        return nn.Dense(3)(h)


def _data(n=9, shape=(6, 6, 1), seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, *shape)) * scale).astype(np.float32), rng.integers(0, 3, n)


def _refused(fn, model, variables, images, labels, **kwargs) -> str:
    with pytest.raises(ValueError, match="likely uses batch statistics") as err:
        fn(model, variables, images, labels, **kwargs)
    text = str(err.value)
    assert "\n" not in text
    for fix in ("use_running_average=True", "test_local_stats=False", "inference=True"):
        assert fix in text, text
    return text


@pytest.mark.parametrize("fn", SCORES)
@pytest.mark.parametrize("model", [BatchMean(), BatchStatsNorm()], ids=lambda m: type(m).__name__)
def test_planted_batch_statistics_are_refused(fn, model):
    images, labels = _data()
    for num_seeds in (1, 3):
        variables = api.init_variables(model, jax.random.key(0), num_seeds, images[:1])
        # A full first batch, and a first batch padded from 9 examples to 16 rows.
        for batch_size in (4, 16):
            _refused(fn, model, variables, images, labels, batch_size=batch_size)


@pytest.mark.parametrize("seed_axis", ["unroll", "vmap", "map"])
def test_every_seed_is_checked(seed_axis):
    model = MixedBySeed()
    images, labels = _data(n=8)
    variables = api.init_variables(model, jax.random.key(0), 3, images[:1])
    for fn in SCORES:  # alpha = 0 for every seed: batch-independent, scored
        fn(model, variables, images, labels, batch_size=8, seed_axis=seed_axis)
    variables["params"]["alpha"] = jnp.asarray([0.0, 0.0, 0.5])  # only seed 2 mixes examples
    for fn in SCORES:
        text = _refused(fn, model, variables, images, labels, batch_size=8, seed_axis=seed_axis)
        assert "(seed 2, example" in text, text


def test_plain_functions_with_batch_statistics_are_refused():
    def normalized(params, state, x):  # the batch's statistics, not the stored ones
        h = x.reshape(len(x), -1)
        h = (h - h.mean(0)) / (h.std(0) + 1e-5) * state["gain"]
        return h @ params["w"]

    rng = np.random.default_rng(2)
    variables = {
        "params": {"w": jnp.asarray(rng.normal(size=(2, 36, 3)), jnp.float32)},
        "state": {"gain": jnp.ones((2, 36))},
    }
    images, labels = _data()
    for fn in SCORES:
        _refused(fn, model_form.stateful(normalized), variables, images, labels, batch_size=4)


def _random_running_stats(variables, key):
    """Non-trivial BatchNorm statistics (eval-mode BatchNorm is then no identity)."""
    stats = variables["batch_stats"]
    keys = iter(jax.random.split(key, 2 * len(stats)))
    for layer in stats.values():
        layer["mean"] = jax.random.normal(next(keys), layer["mean"].shape)
        layer["var"] = jax.random.uniform(next(keys), layer["var"].shape, minval=0.5, maxval=2)
    return variables


def test_paper_model_in_eval_mode_always_passes():
    model = models.get_model("small_cnn", 10, width=4)
    for seed in range(4):
        variables = api.init_variables(model, jax.random.key(seed), 2, np.zeros((1, 28, 28, 1)))
        variables = _random_running_stats(variables, jax.random.key(100 + seed))
        adapted, packed = model_form.from_pair(model, variables)
        packed = jax.device_put(packed)
        rng = np.random.default_rng(seed)
        for batch_size in (2, 7, 32):
            for count in sorted({1, batch_size // 2 + 1, batch_size}):
                scale = 10.0 ** rng.uniform(-1, 2)
                images = np.zeros((batch_size, 28, 28, 1), np.float32)
                images[:count] = rng.normal(size=(count, 28, 28, 1)) * scale
                labels = np.zeros(batch_size, np.int32)
                mask = (np.arange(batch_size) < count).astype(np.float32)
                batch = (images, labels, mask, count)
                batch_check.check("el2n", adapted, "unroll", Placement(), packed, batch)


def test_paper_model_scores_equal_one_example_at_a_time(caplog):
    model = models.get_model("small_cnn", 10, width=4)
    variables = api.init_variables(model, jax.random.key(0), 2, np.zeros((1, 28, 28, 1)))
    variables = _random_running_stats(variables, jax.random.key(1))
    images, labels = _data(n=11, shape=(28, 28, 1))
    labels = labels % 10
    with caplog.at_level(logging.INFO, logger="absl"):
        got = api.el2n_scores(model, variables, images, labels, batch_size=8)
    assert any("el2n batch check" in r.getMessage() for r in caplog.records)
    for k in range(2):
        one = jax.tree.map(lambda v, k=k: v[k], variables)
        want = [
            float(losses.el2n(model.apply(one, x[None], train=False), jnp.asarray([y]))[0])
            for x, y in zip(images, labels, strict=True)
        ]
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6)


def test_batch_size_one_cannot_be_checked_and_equals_one_example_at_a_time():
    model = BatchMean()
    images, labels = _data(n=5)
    variables = api.init_variables(model, jax.random.key(0), 1, images[:1])
    got = api.el2n_scores(model, variables, images, labels, batch_size=1)  # not refused
    one = jax.tree.map(lambda v: v[0], variables)
    want = [
        float(losses.el2n(model.apply(one, x[None]), jnp.asarray([y]))[0])
        for x, y in zip(images, labels, strict=True)
    ]
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


@pytest.mark.parametrize("count", [1, 2, 5, 8])
def test_altered_batch_keeps_half_and_changes_the_rest(count):
    size = 8
    rng = np.random.default_rng(count)
    images = np.zeros((size, 3), np.float32)
    images[:count] = rng.normal(size=(count, 3))
    altered, kept, moved = batch_check.altered_batch(images, count)
    assert altered.shape == images.shape and altered.dtype == images.dtype
    assert len(kept) == max(1, count // 2) and set(kept) <= set(range(count))
    for i, j in zip(kept, moved, strict=True):
        np.testing.assert_array_equal(altered[j], images[i])
    real = images[:count]
    copies = np.setdiff1d(np.arange(size), moved)
    for row in copies:  # every other row: 2 x + 1 of a real one
        assert any(np.array_equal(altered[row], 2 * x + 1) for x in real)
    assert not np.allclose(altered.mean(0), images.mean(0))  # the batch statistics moved
    # Every slice of two rows (a device's shard under a mesh) with a kept example has a copy.
    for lo in range(0, size, 2):
        if set(range(lo, lo + 2)) & set(moved):
            assert set(range(lo, lo + 2)) & set(copies)


def test_changed_by_hand():
    before = np.array([[[1.0, -2.0], [0.0, 0.0], [np.nan, 1.0], [3.0, 4.0]]])
    tol = batch_check.ATOL + batch_check.RTOL * 2.0  # example 0: max |l| = 2
    after = before.copy()
    after[0, 0] = [1.0 + 0.9 * tol, -2.0]  # within the tolerance
    after[0, 1] = [2 * batch_check.ATOL, 0.0]  # logits near zero: beyond ATOL
    after[0, 3] = [np.inf, 4.0]  # finite turned non-finite
    moved, diff = batch_check.changed(before, after)
    np.testing.assert_array_equal(moved, [[False, True, False, True]])
    np.testing.assert_allclose(diff[0, :2], [0.9 * tol, 2 * batch_check.ATOL])
    after[0, 0, 0] = 1.0 + 1.1 * tol
    assert batch_check.changed(before, after)[0][0, 0]


def test_logits_program_is_compiled_once():
    model = models.get_model("small_cnn", 10, width=4)
    variables = api.init_variables(model, jax.random.key(0), 2, np.zeros((1, 28, 28, 1)))
    programs.clear_programs()
    for n in (20, 30):  # two calls, three batches each: the check runs once per call
        images, labels = _data(n=n, shape=(28, 28, 1))
        api.el2n_scores(model, variables, images, labels % 10, batch_size=8)
    adapted, _ = model_form.from_pair(model, variables)
    program = batch_check.logits_program(adapted, "unroll", None)
    assert program is batch_check.logits_program(adapted, "unroll", None)
    assert program._cache_size() == 1
