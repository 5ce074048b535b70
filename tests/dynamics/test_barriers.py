"""Error barriers: hand-made linear classifiers, identical networks, BatchNorm statistics."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from datadiet_jax import models
from datadiet_jax.dynamics import barriers
from datadiet_jax.pipeline.config_base import base_config
from datadiet_jax.training import keys, train


class Linear(nn.Module):
    """logits = [0, w . x]: class 1 when w . x > 0, class 0 otherwise (argmax ties go to 0)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(2, use_bias=False)(x.reshape(x.shape[0], -1))


class DenseBN(nn.Module):
    """x [B, 1] -> w x -> BatchNorm, to read the statistics of a known activation."""

    momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(1, use_bias=False)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=self.momentum)(x)


def _linear(w):
    kernel = np.array([[0.0, w[0]], [0.0, w[1]]], np.float32)
    return {"params": {"Dense_0": {"kernel": kernel}}}


# A = (1, 0) and B = (0, 1), both of class 1. w1 = (1, -2) gets A right and B wrong, w2 = (-2, 1)
# the reverse. w(a) = (1 - 3a, -2 + 3a): A is right iff a < 1/3, B iff a > 2/3, so the error is
# 1/2 outside [1/3, 2/3] and 1 inside it (at a = 1/3 and 2/3 the logit is 0, a tie, class 0).
POINTS = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
LABELS = np.array([1, 1], np.int32)
W1, W2 = _linear((1.0, -2.0)), _linear((-2.0, 1.0))


def test_hand_made_linear_pair_has_the_known_barrier():
    alphas = [i / 12 for i in range(13)]
    curves = barriers.error_curves(
        Linear(),
        W1,
        W2,
        {"both": (POINTS, LABELS), "A": (POINTS[:1], LABELS[:1])},
        alphas=alphas,
        batch_size=3,
    )
    expected = [1.0 if 1 / 3 - 1e-9 <= a <= 2 / 3 + 1e-9 else 0.5 for a in alphas]
    assert curves["both"]["errors"] == pytest.approx(expected)
    assert curves["both"]["error_1"] == curves["both"]["error_2"] == 0.5
    assert curves["both"]["barrier"] == pytest.approx(0.5)
    assert curves["both"]["max_barrier"] == pytest.approx(0.5)
    assert curves["both"]["argmax_alpha"] == pytest.approx(4 / 12)  # the first a of the plateau
    # On {A} alone: w1 is right, w2 wrong, the midpoint (-0.5, -0.5) wrong: 1 - (0 + 1) / 2.
    assert curves["A"]["errors"][0] == 0.0 and curves["A"]["errors"][-1] == 1.0
    assert curves["A"]["barrier"] == pytest.approx(0.5)


def test_interpolation_is_linear_in_every_leaf():
    mid = barriers.interpolate({"a": np.array([1.0, 2.0])}, {"a": np.array([3.0, 6.0])}, 0.25)
    np.testing.assert_allclose(mid["a"], [1.5, 3.0])
    with pytest.raises(ValueError, match="differ in structure"):
        barriers.interpolate({"a": 1.0}, {"b": 1.0}, 0.5)


def test_subset_error_pads_and_masks():
    x = np.array([[1.0, 0.0]] * 5 + [[-1.0, 0.0]] * 2, np.float32)
    y = np.array([1] * 5 + [1, 0], np.int32)  # w = (1, 0): wrong only on example 5
    for batch_size in (1, 3, 4, 7, 16):
        error = barriers.subset_error(Linear(), _linear((1.0, 0.0)), x, y, batch_size)
        assert error == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="M >= 1"):
        barriers.subset_error(Linear(), W1, x[:0], y[:0], 4)


@pytest.mark.parametrize("bn", barriers.BN_MODES)
def test_identical_networks_have_no_barrier(bn):
    model = models.get_model("small_cnn", 3, width=4)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 40).astype(np.int32)
    tx = train.make_optimizer(base_config().train, 10)
    state = train.init_states(model, tx, keys.init_keys(0, 1, 1), images[:1], seed_axis="map")
    one = jax.tree.map(lambda x: x[0], {"params": state.params, **state.model_state})
    curves = barriers.error_curves(
        model,
        one,
        one,
        {"all": (images, labels), "few": (images[:7], labels[:7])},
        bn=barriers.BatchNormRule(bn, images, 8),
        batch_size=16,
    )
    for curve in curves.values():
        assert curve["barrier"] == 0.0 and curve["max_barrier"] == 0.0
        assert len(set(curve["errors"])) == 1


def _bn_vars(w, stats=None):
    variables = {
        "params": {
            "Dense_0": {"kernel": np.array([[w]], np.float32)},
            "BatchNorm_0": {"scale": np.ones(1, np.float32), "bias": np.zeros(1, np.float32)},
        },
        "batch_stats": {"BatchNorm_0": {"mean": np.zeros(1), "var": np.ones(1)}},
    }
    if stats is not None:
        variables["batch_stats"] = stats
    return variables


X = np.array([[1.0], [2.0], [4.0], [-1.0], [0.5], [3.0], [-2.0], [5.0], [7.0]], np.float32)


def _hand_stats(w):
    """Mean over the two full batches of 4 (the 9th example left out) of batch mean and var."""
    batches = (w * X[:8, 0]).reshape(2, 4)
    return batches.mean(1).mean(), batches.var(1).mean()


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_recomputed_statistics_are_the_average_of_batch_statistics(momentum):
    model = DenseBN(momentum=momentum)
    v = _bn_vars(2.0)
    stats = barriers.recompute_batch_stats(model, v["params"], v["batch_stats"], X, 4)
    mean, var = _hand_stats(2.0)
    assert float(stats["BatchNorm_0"]["mean"][0]) == pytest.approx(mean, rel=1e-5)
    assert float(stats["BatchNorm_0"]["var"][0]) == pytest.approx(var, rel=1e-5)


def test_interpolated_statistics_are_wrong_at_the_midpoint_and_recomputed_ones_right():
    # Endpoints w = 1 and w = 3 with their own (recomputed) statistics (m, v) and (3m, 9v). The
    # midpoint w = 2 has statistics (2m, 4v); interpolating gives (2m, 5v).
    model = DenseBN()
    ends = []
    for w in (1.0, 3.0):
        v = _bn_vars(w)
        stats = barriers.recompute_batch_stats(model, v["params"], v["batch_stats"], X, 4)
        ends.append(_bn_vars(w, stats))
    m, v = _hand_stats(1.0)
    recomputed = barriers.path_variables(
        model, *ends, 0.5, barriers.BatchNormRule("recompute", X, 4)
    )["batch_stats"]
    interpolated = barriers.path_variables(
        model, *ends, 0.5, barriers.BatchNormRule("interpolate")
    )["batch_stats"]
    assert float(recomputed["BatchNorm_0"]["mean"][0]) == pytest.approx(2 * m, rel=1e-5)
    assert float(recomputed["BatchNorm_0"]["var"][0]) == pytest.approx(4 * v, rel=1e-5)
    assert float(interpolated["BatchNorm_0"]["mean"][0]) == pytest.approx(2 * m, rel=1e-5)
    assert float(interpolated["BatchNorm_0"]["var"][0]) == pytest.approx(5 * v, rel=1e-5)
    # So the midpoint's normalized outputs have about 4/5 of the variance they should have.
    total = float(np.var(2.0 * X[:8, 0]))  # over all 8 examples: close to 4 v
    for bn, var in (("interpolate", 5 * v), ("recompute", 4 * v)):
        variables = barriers.path_variables(model, *ends, 0.5, barriers.BatchNormRule(bn, X, 4))
        out = model.apply(variables, X[:8])
        assert float(np.var(out)) == pytest.approx(total / (var + 1e-5), rel=1e-4)


def test_bad_alphas_and_modes_are_refused():
    with pytest.raises(ValueError, match="contain 0, 0.5 and 1"):
        barriers.error_curves(Linear(), W1, W2, {"s": (POINTS, LABELS)}, alphas=(0.0, 1.0))
    with pytest.raises(ValueError, match="unknown BatchNorm mode"):
        barriers.BatchNormRule("average")
    with pytest.raises(TypeError, match="pass a BatchNormRule"):
        barriers.path_variables(Linear(), W1, W2, 0.5, "recompute")
    v = _bn_vars(1.0)
    with pytest.raises(ValueError, match="needs images"):
        barriers.path_variables(DenseBN(), v, v, 0.5, barriers.BatchNormRule("recompute"))
    with pytest.raises(ValueError, match="no full batch"):
        barriers.recompute_batch_stats(DenseBN(), v["params"], v["batch_stats"], X[:3], 4)
