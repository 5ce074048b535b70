"""Per-example gradient norms against a Python loop of per-example `jax.grad`."""

import functools

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax.models import BasicBlock, ResNet, get_model
from datadiet_jax.scores.pergrad import fallback, linen_norms, linen_sites, rules
from tests.references import grad_norm_loop, perturbed


class ConvBnDense(nn.Module):
    """Conv with bias, strided conv with explicit padding, BatchNorm, Dense layers."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(6, (3, 3), padding="SAME")(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.Conv(8, (3, 3), strides=2, padding=((1, 0), (2, 1)), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, use_scale=False)(x)
        x = nn.Conv(8, (1, 1), strides=(1, 2), padding="VALID")(nn.relu(x))
        x = nn.Dense(5)(x)  # Dense over an image: per-position inputs
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(12)(x))
        return nn.Dense(4)(x)


class Unusual(nn.Module):
    """Layers without a fast rule: dilated/grouped convs, LayerNorm, a Dense called twice."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), kernel_dilation=2)(x)
        x = nn.Conv(4, (3, 3), feature_group_count=2)(x)
        x = nn.LayerNorm()(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        shared = nn.Dense(x.shape[-1])
        x = shared(nn.tanh(shared(x)))
        x = x + self.param("offset", nn.initializers.normal(1.0), (x.shape[-1],))
        return nn.Dense(3)(x)


class ChannelsFirstBN(nn.Module):
    """BatchNorm over axis 1 of [B, C, H, W] (C, H, W all different)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(jnp.transpose(x, (0, 2, 3, 1)))
        x = nn.BatchNorm(use_running_average=True, axis=1)(jnp.transpose(x, (0, 3, 1, 2)))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class TimeMajor(nn.Module):
    """A Dense over a time-major [T, B, F] array: its leading axis is time, not the batch."""

    @nn.compact
    def __call__(self, x):  # x: [B, T, F]
        h = nn.tanh(nn.Dense(6)(jnp.swapaxes(x, 0, 1)))
        return nn.Dense(3)(jnp.swapaxes(h, 0, 1).reshape(x.shape[0], -1))


class Queries(nn.Module):
    """A Dense over a parameter-derived [Q, F] array: no batch axis at all."""

    num_queries: int = 4

    @nn.compact
    def __call__(self, x):  # x: [B, F]
        q = self.param("queries", nn.initializers.normal(1.0), (self.num_queries, x.shape[-1]))
        keys = nn.Dense(x.shape[-1])(q)
        return nn.Dense(3)(x @ keys.T)


class Tied(nn.Module):
    """An encoder kernel reused, transposed, as a decoder (weight tying)."""

    @nn.compact
    def __call__(self, x):  # x: [B, F]
        enc = nn.Dense(6)
        h = nn.tanh(enc(x))
        return nn.Dense(3)(h @ enc.variables["params"]["kernel"].T)


def _loop_norms(apply_fn, variables, images, labels):
    """The reference: one `jax.grad` per example, in a Python loop."""
    logits_fn = lambda p, x: apply_fn({**variables, "params": p}, x)  # noqa: E731
    return grad_norm_loop(logits_fn, variables["params"], images, labels)


def _fast(apply_fn):
    return jax.jit(functools.partial(linen_norms.per_example_grad_norms, apply_fn))


def _case(model, shape, num_classes, n=5, key=0, train_arg=True):
    key = jax.random.key(key)
    images = jax.random.normal(key, (n, *shape))
    labels = jnp.arange(n) % num_classes
    kwargs = {"train": False} if train_arg else {}
    variables = model.init(jax.random.fold_in(key, 1), images[:1], **kwargs)
    variables = perturbed(variables, jax.random.fold_in(key, 2))
    apply_fn = lambda v, x: model.apply(v, x, **kwargs)
    return apply_fn, variables, images, labels


@pytest.mark.parametrize(
    "name,model,shape,classes",
    [
        ("conv_bn_dense", ConvBnDense(), (9, 10, 2), 4),
        ("small_cnn", get_model("small_cnn", 10), (28, 28, 1), 10),
        ("tiny_resnet", ResNet(block=BasicBlock, stage_sizes=(1, 1), width=8), (16, 16, 3), 10),
    ],
)
def test_fast_norms_equal_per_example_grad_loop(name, model, shape, classes):
    apply_fn, variables, images, labels = _case(model, shape, classes)
    counts = linen_norms.coverage(apply_fn, variables, images)
    assert counts["fallback"] == 0, counts  # every param goes through a fast rule
    assert counts["conv"] > 0 and counts["dense"] > 0 and counts["batchnorm"] > 0
    ours = _fast(apply_fn)(variables, images, labels)
    ref = _loop_norms(apply_fn, variables, images, labels)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4)


@pytest.mark.parametrize(
    "model,shape,n,fallback",
    [
        # Each gave a plausible number 4-94% off before the sites checked axes and uses.
        (ChannelsFirstBN(), (2, 5, 6), 5, []),
        (TimeMajor(), (4, 5), 4, ["Dense_0/kernel", "Dense_0/bias"]),  # T == B == 4
        (Queries(), (7,), 4, ["queries", "Dense_0/kernel", "Dense_0/bias"]),  # Q == B == 4
        (Tied(), (7,), 5, ["Dense_0/kernel"]),  # the tied kernel; its bias keeps the rule
    ],
    ids=["bn_axis1", "time_major_T_eq_B", "param_derived_Q_eq_B", "weight_tying"],
)
def test_batch_axis_feature_axes_and_tying_are_exact(model, shape, n, fallback):
    apply_fn, variables, images, labels = _case(model, shape, 3, n=n, train_arg=False)
    _, left = linen_sites.find_sites(apply_fn, variables, images)
    assert sorted("/".join(p[1:]) for p in left) == sorted(fallback)
    ours = _fast(apply_fn)(variables, images, labels)
    ref = _loop_norms(apply_fn, variables, images, labels)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4)


def test_rule_contractions_run_at_highest_precision():
    a, g = jnp.ones((2, 3, 40)), jnp.ones((2, 3, 50))  # Gram identity branch
    b, h = jnp.ones((2, 30, 4)), jnp.ones((2, 30, 5))  # direct branch
    x, y = jnp.ones((2, 6, 6, 3)), jnp.ones((2, 6, 6, 4))
    jaxprs = [
        jax.make_jaxpr(rules.matmul_sq_norm)(a, g),
        jax.make_jaxpr(rules.matmul_sq_norm)(b, h),
        jax.make_jaxpr(lambda x, y: rules.conv_sq_norm(x, y, (3, 3), (1, 1), "SAME"))(x, y),
        jax.make_jaxpr(lambda x, y: rules.conv_sq_norm(x, y, (1, 1), (1, 1), "SAME"))(x, y),
    ]
    for jaxpr in jaxprs:
        dots = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
        assert dots, jaxpr
        for eqn in dots:
            assert set(eqn.params["precision"]) == {jax.lax.Precision.HIGHEST}, eqn


def _eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jex.jaxprs_in_params(eqn.params):
            yield from _eqns(sub)


def test_capture_gives_per_example_per_class_layer_gradients():
    # The capture API vmapped over logit classes, as an empirical-NTK module would use it.
    apply_fn, variables, images, labels = _case(Tied(), (7,), 3, n=4, train_arg=False)
    cap = jax.vmap(lambda c: linen_norms.capture(apply_fn, variables, images, lambda z: z[:, c]))(
        jnp.arange(3)
    )
    assert [(s.key, s.kind) for s in cap.sites] == [("Dense_0", "dense"), ("Dense_1", "dense")]
    assert cap.fallback == (("params", "Dense_0", "kernel"),)
    for c in range(3):
        for i in range(4):
            want = jax.grad(lambda p, c=c, i=i: apply_fn({"params": p}, images[i : i + 1])[0, c])(
                variables["params"]
            )
            got = jnp.einsum("f,o->fo", cap.inputs["Dense_1"][c, i], cap.out_grads["Dense_1"][c, i])
            np.testing.assert_allclose(got, want["Dense_1"]["kernel"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                cap.out_grads["Dense_0"][c, i], want["Dense_0"]["bias"], rtol=1e-5, atol=1e-6
            )


def test_max_pool_ties_match_jax_grad():
    # Zero background and integer images make 2x2 pooling windows with tied maxima.
    model = get_model("small_cnn", 10)
    apply_fn, variables, _, labels = _case(model, (28, 28, 1), 10, n=4)
    images = (
        jnp.zeros((4, 28, 28, 1))
        .at[:, 8:20, 10:18]
        .set(jnp.round(jax.random.uniform(jax.random.key(5), (4, 12, 8, 1)) * 2))
    )
    ours = _fast(apply_fn)(variables, images, labels)
    ref = _loop_norms(apply_fn, variables, images, labels)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4)


def test_fallback_for_layers_without_rules_is_exact():
    apply_fn, variables, images, labels = _case(Unusual(), (10, 10, 2), 3, train_arg=False)
    counts = linen_norms.coverage(apply_fn, variables, images)
    assert counts["fallback"] > 0 and counts["dense"] > 0  # last Dense has a rule, rest not
    ours = _fast(apply_fn)(variables, images, labels)
    ref = _loop_norms(apply_fn, variables, images, labels)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4)


def test_mask_zeroes_padded_examples_only():
    apply_fn, variables, images, labels = _case(ConvBnDense(), (9, 10, 2), 4, n=4)
    mask = jnp.array([1.0, 0.0, 1.0, 0.0])
    fast = jax.jit(functools.partial(linen_norms.per_example_grad_norms, apply_fn))
    full = fast(variables, images, labels, jnp.ones(4))
    masked = fast(variables, images, labels, mask)
    np.testing.assert_allclose(np.asarray(masked), np.asarray(full) * np.asarray(mask), rtol=1e-6)


def test_vmap_grad_reference_path_matches_loop():
    apply_fn, variables, images, labels = _case(ConvBnDense(), (9, 10, 2), 4, n=3)
    vmap_grad = jax.jit(functools.partial(fallback.linen_sq_norms, apply_fn))
    ours = np.sqrt(np.asarray(vmap_grad(variables, images, labels)))
    np.testing.assert_allclose(ours, _loop_norms(apply_fn, variables, images, labels), rtol=1e-4)


def test_batchnorm_with_batch_statistics_is_rejected():
    model = ConvBnDense()
    _, variables, images, labels = _case(model, (9, 10, 2), 4, n=3)

    def apply_fn(v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"])[0]

    with pytest.raises(ValueError, match="train=False"):
        linen_norms.per_example_grad_norms(apply_fn, variables, images, labels)
