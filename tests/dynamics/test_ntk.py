"""The empirical NTK against Jacobian products from `jax.jacrev`, and the kernel distance."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax.dynamics import ntk
from datadiet_jax.scores.pergrad import linen_sites
from tests.references import jacrev_ntk, perturbed


class ConvBnDense(nn.Module):
    """Conv with bias, BatchNorm, strided conv without bias, BatchNorm without scale, Dense."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), padding="SAME")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Conv(5, (3, 3), strides=2, padding=((1, 0), (2, 1)), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, use_scale=False)(x))
        x = nn.Dense(6)(x)  # Dense over positions
        return nn.Dense(3)(nn.relu(x.reshape(x.shape[0], -1)))


class WithFallback(nn.Module):
    """A custom per-channel gain (no rule) and an encoder kernel reused as a decoder (tied)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(3, (3, 3), strides=2)(x)
        x = nn.tanh(x * self.param("gain", nn.initializers.normal(1.0), (3,)))
        x = x.reshape(x.shape[0], -1)
        enc = nn.Dense(4)
        h = nn.tanh(enc(x))
        return nn.Dense(3)(h @ enc.variables["params"]["kernel"].T)


def _stacked(model, images, num_seeds=2):
    """K models with random BatchNorm statistics, scales and biases (eval mode is not identity)."""
    out = []
    for k in range(num_seeds):
        key = jax.random.key(10 + k)
        out.append(perturbed(model.init(key, images[:1], train=False), key))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *out)


def _jacrev_kernels(model, variables, images):
    """(trace [K, n, n], full [K, n*C, n*C]) of K stacked models from their whole Jacobians."""
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    per_seed = [
        jacrev_ntk(apply_fn, jax.tree.map(lambda v, k=k: v[k], variables), images)
        for k in range(jax.tree.leaves(variables)[0].shape[0])
    ]
    return tuple(np.stack(kernels) for kernels in zip(*per_seed, strict=True))


def _rel_err(got, want):
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


def _images(n=6, seed=0):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, 6, 6, 1)), np.float32)


@pytest.mark.parametrize("batch_size", [6, 4])  # one block; blocks with a padded last one
def test_conv_batchnorm_dense_matches_jacrev(batch_size):
    model, images = ConvBnDense(), _images()
    variables = _stacked(model, images)
    trace, full = _jacrev_kernels(model, variables, images)
    got = ntk.ntk_gram(model, variables, images, batch_size=batch_size)
    assert got.shape == (2, 6, 6) and got.dtype == np.float32
    assert _rel_err(got, trace) <= 1e-4
    got_full = ntk.ntk_gram(model, variables, images, batch_size=batch_size, full=True)
    assert got_full.shape == (2, 18, 18)
    assert _rel_err(got_full, full) <= 1e-4
    # The two seeds differ: a seed mix-up would not pass.
    assert _rel_err(trace[0], trace[1]) > 0.1


@pytest.mark.parametrize("route", ntk.ROUTES)
def test_each_site_matches_jacrev_of_its_own_parameters(route):
    # Per site, so that a small layer's error is not hidden by the larger ones.
    model, images = ConvBnDense(), _images()
    one = jax.tree.map(lambda v: v[0], _stacked(model, images))
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    sites, _, inputs, grads = ntk._captures(apply_fn, one, jnp.asarray(images), 3)
    jac = jax.jacrev(lambda p: apply_fn({**one, "params": p}, images))(one["params"])
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(jac))
    for site in sites:
        j = np.concatenate(
            [
                np.asarray(flat[(*site.path, leaf)], np.float64).reshape(6, 3, -1)
                for leaf in site.leaves
            ],
            axis=2,
        )
        want = np.einsum("icp,jcp->ij", j, j)
        args = (site, inputs[site.key], grads[site.key], inputs[site.key], grads[site.key])
        got = ntk.site_gram(*args, route=route)
        assert _rel_err(np.asarray(got), want) <= 1e-5, site.key
        got_full = ntk.site_gram(*args, full=True, route=route)
        want_full = np.einsum("icp,jdp->cidj", j, j)
        assert _rel_err(np.asarray(got_full), want_full) <= 1e-5, site.key


def test_every_site_kind_is_covered_by_a_rule():
    model, images = ConvBnDense(), _images()
    one = jax.tree.map(lambda v: v[0], _stacked(model, images))
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    sites, fallback = linen_sites.find_sites(apply_fn, one, images)
    assert {s.kind for s in sites} == {"conv", "batchnorm", "dense"} and not fallback


def test_fallback_parameters_are_exact():
    model, images = WithFallback(), _images(n=5, seed=1)
    variables = _stacked(model, images)
    one = jax.tree.map(lambda v: v[0], variables)
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    _, fallback = linen_sites.find_sites(apply_fn, one, images)
    assert ("params", "gain") in fallback and ("params", "Dense_0", "kernel") in fallback
    trace, full = _jacrev_kernels(model, variables, images)
    assert _rel_err(ntk.ntk_gram(model, variables, images, batch_size=2), trace) <= 1e-4
    assert _rel_err(ntk.ntk_gram(model, variables, images, full=True), full) <= 1e-4


def test_symmetric_positive_semidefinite_and_trace_of_full():
    model, images = ConvBnDense(), _images(n=7, seed=2)
    variables = _stacked(model, images)
    k = ntk.ntk_gram(model, variables, images, batch_size=3)
    np.testing.assert_array_equal(k, np.swapaxes(k, 1, 2))
    for seed in range(2):
        eig = np.linalg.eigvalsh(k[seed].astype(np.float64))
        assert eig.min() >= -1e-5 * eig.max()
    full = ntk.ntk_gram(model, variables, images, full=True).reshape(2, 7, 3, 7, 3)
    np.testing.assert_allclose(np.einsum("kicjc->kij", full), k, rtol=1e-5, atol=1e-5)


def test_kernel_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    k = a @ a.T
    assert ntk.kernel_distance(k, k) == pytest.approx(0.0, abs=1e-12)
    assert ntk.kernel_distance(k, 3.0 * k) == pytest.approx(0.0, abs=1e-12)  # scale-free
    # <K1, K2> = 1*1 = 1, ||K1|| = sqrt(3), ||K2|| = sqrt(1 + 4) -> 1 - 1 / sqrt(15).
    k1, k2 = np.array([[1.0, 1.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 2.0]])
    assert ntk.kernel_distance(k1, k2) == pytest.approx(1 - 1 / np.sqrt(15), rel=1e-12)
    batch = ntk.kernel_distance(np.stack([k1, k1]), np.stack([k2, k1]))
    np.testing.assert_allclose(batch, [1 - 1 / np.sqrt(15), 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="zero"):
        ntk.kernel_distance(k1, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shapes"):
        ntk.kernel_distance(k1, np.eye(3))


def test_bad_inputs_are_refused():
    model, images = ConvBnDense(), _images()
    variables = _stacked(model, images)
    with pytest.raises(ValueError, match="not a float"):
        ntk.ntk_gram(model, variables, (images * 10).astype(np.int32))
    with pytest.raises(ValueError, match="no leading seed axis"):
        ntk.ntk_gram(model, jax.tree.map(lambda v: v[0], variables), images)
    with pytest.raises(ValueError, match="batch_size"):
        ntk.ntk_gram(model, variables, images, batch_size=0)
