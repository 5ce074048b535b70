import functools
import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from datadiet_jax import models
from datadiet_jax.scores import aum, seed_axis
from datadiet_jax.training import checkpoints, keys, train
from tests.conftest import train_cfg, train_tiny


def test_learning_rate_schedule_drops_at_30_60_80_percent():
    cfg = ml_collections.ConfigDict(
        dict(learning_rate=0.1, lr_drop_fractions=(0.3, 0.6, 0.8), lr_drop_factor=0.2)
    )
    lr = train.learning_rate_fn(cfg, 200)
    # The paper: 0.1, then x0.2 at epochs 60, 120 and 160 of 200.
    for step, expected in [
        (0, 0.1),
        (59, 0.1),
        (60, 0.02),
        (119, 0.02),
        (120, 0.004),
        (159, 0.004),
        (160, 0.0008),
        (199, 0.0008),
    ]:
        assert float(lr(step)) == pytest.approx(expected)


def test_loss_falls_on_a_tiny_problem(synthetic_split, tmp_path):
    model = models.get_model("small_cnn", 3, width=4)
    tx = train.make_optimizer(train_cfg(learning_rate=0.05), 100)
    state = train.init_states(model, tx, keys.init_keys(0, 1, 1), synthetic_split.inputs[:1] * 0.0)
    batch = {
        "image": synthetic_split.model_inputs()[None, :32],
        "label": synthetic_split.labels[None, :32],
        "mask": np.ones((1, 32), np.float32),
    }
    step = jax.jit(seed_axis.over_seeds(lambda s, b: train.train_step(model, tx, s, b), "map"))
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"][0]))
    assert losses[-1] < 0.5 * losses[0]


def test_each_seed_has_its_own_init(synthetic_split, tmp_path):
    state, _, _ = train_tiny(synthetic_split, tmp_path / "a" / "ckpt", num_steps=0)
    kernel = state.params["Conv_0"]["kernel"]
    assert not np.allclose(kernel[0], kernel[1])


def test_resumed_run_equals_uninterrupted(synthetic_split, tmp_path):
    full, full_stats, _ = train_tiny(synthetic_split, tmp_path / "full" / "ckpt")
    _, _, step = train_tiny(synthetic_split, tmp_path / "resumed" / "ckpt", max_steps=5)
    assert step == 5
    resumed, resumed_stats, step = train_tiny(synthetic_split, tmp_path / "resumed" / "ckpt")
    assert step == 12
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(full_stats) == {"forgetting", "aum", "nonfinite_step"}
    for group in ("forgetting", "aum"):
        for key in full_stats[group]:
            np.testing.assert_array_equal(full_stats[group][key], resumed_stats[group][key])
    np.testing.assert_array_equal(full_stats["nonfinite_step"], [-1, -1])
    np.testing.assert_array_equal(resumed_stats["nonfinite_step"], [-1, -1])
    assert int(full_stats["forgetting"]["seen"].sum()) == 2 * 3 * 64  # 3 epochs of 64 examples
    np.testing.assert_array_equal(full_stats["aum"]["count"], full_stats["forgetting"]["seen"])
    # Identical AUM, and not a trivial one: the margins differ between examples and seeds.
    full_aum = aum.aum_scores(full_stats["aum"])
    np.testing.assert_array_equal(full_aum, aum.aum_scores(resumed_stats["aum"]))
    assert full_aum.shape == (2, 64) and np.ptp(full_aum) > 0.1
    assert not np.allclose(full_aum[0], full_aum[1])


def test_train_step_margin_is_the_train_mode_logit_margin(synthetic_split):
    model = models.get_model("small_cnn", 3, width=4)
    tx = train.make_optimizer(train_cfg(), 10)
    state = train.init_states(model, tx, keys.init_keys(0, 1, 1), synthetic_split.inputs[:1] * 0.0)
    one = jax.tree.map(lambda x: x[0], state)
    batch = {
        "image": synthetic_split.model_inputs()[:8],
        "label": synthetic_split.labels[:8],
        "mask": np.ones(8, np.float32),
    }
    _, metrics = jax.jit(lambda s, b: train.train_step(model, tx, s, b))(one, batch)
    logits, _ = model.apply(
        {"params": one.params, **one.model_state},
        batch["image"],
        train=True,
        mutable=["batch_stats"],
    )
    logits = np.asarray(logits, np.float64)
    want = [logits[i, y] - np.max(np.delete(logits[i], y)) for i, y in enumerate(batch["label"])]
    np.testing.assert_allclose(metrics["margin"], want, rtol=1e-4, atol=1e-5)


def test_unroll_map_and_vmap_over_seeds_agree(synthetic_split, tmp_path):
    runs = {}
    for mode in ("unroll", "map", "vmap"):
        state, _, _ = train_tiny(
            synthetic_split,
            tmp_path / mode / "ckpt",
            train_cfg=train_cfg(seed_axis=mode),
            num_steps=4,
        )
        runs[mode] = jax.tree.leaves(state.params)
    for mode in ("map", "vmap"):
        for x, y in zip(runs["unroll"], runs[mode], strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)


def test_evaluate_counts_correct_predictions(synthetic_split):
    model = models.get_model("small_cnn", 3, width=4)
    tx = train.make_optimizer(train_cfg(), 10)
    state = train.init_states(model, tx, keys.init_keys(0, 1, 2), synthetic_split.inputs[:1] * 0.0)
    acc, _ = train.evaluate(model, state, synthetic_split, batch_size=24)
    for k in range(2):
        params = jax.tree.map(lambda x, k=k: x[k], state.params)
        stats = jax.tree.map(lambda x, k=k: x[k], state.model_state)
        logits = model.apply(
            {"params": params, **stats},
            synthetic_split.model_inputs(),
            train=False,
        )
        expected = np.mean(np.argmax(logits, -1) == synthetic_split.labels)
        assert acc[k] == pytest.approx(expected)


def _corrupt_step(ckpt_dir, step):
    """Overwrites every data file of one checkpoint step with garbage of the same size."""
    for root, _, files in os.walk(os.path.join(ckpt_dir, str(step))):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "wb") as f:
                f.write(b"\x00garbage" * 8)


def test_corrupt_latest_checkpoint_resumes_from_an_older_one(
    synthetic_split, tmp_path, monkeypatch
):
    warnings = []
    monkeypatch.setattr(
        checkpoints.logging, "warning", lambda msg, *a: warnings.append(msg % a if a else msg)
    )
    full, _, _ = train_tiny(synthetic_split, tmp_path / "full" / "ckpt")
    _, _, step = train_tiny(synthetic_split, tmp_path / "resumed" / "ckpt", max_steps=8)
    ckpt_dir = str(tmp_path / "resumed" / "ckpt")
    assert step == 8 and sorted(os.listdir(ckpt_dir)) == ["4", "8"]
    _corrupt_step(ckpt_dir, 8)
    resumed, _, step = train_tiny(synthetic_split, tmp_path / "resumed" / "ckpt")
    assert step == 12
    assert any(os.path.join(ckpt_dir, "8") in w and "unreadable" in w for w in warnings), warnings
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # as if never interrupted


def test_no_readable_checkpoint_is_a_one_line_error(synthetic_split, tmp_path):
    train_tiny(synthetic_split, tmp_path / "r" / "ckpt", max_steps=8)
    ckpt_dir = str(tmp_path / "r" / "ckpt")
    for step in (4, 8):
        _corrupt_step(ckpt_dir, step)
    with pytest.raises(ValueError, match="No readable checkpoint") as err:
        train_tiny(synthetic_split, tmp_path / "r" / "ckpt")
    assert ckpt_dir in str(err.value) and "delete" in str(err.value)
    assert "\n" not in str(err.value)


def _reference_lr(cfg, total_steps, step):
    """Hand-written schedule: the base rate times the drop factor once per boundary passed."""
    drops = sum(step >= int(f * total_steps) for f in cfg.lr_drop_fractions)
    return cfg.learning_rate * cfg.lr_drop_factor**drops


def _reference_sgd(cfg, total_steps, params, grad_fn, num_steps):
    """Hand-written SGD: L2 added to the gradient (coupled weight decay), then heavy-ball or
    Nesterov momentum (buf = m * buf + g; step along g + m * buf), as in PyTorch's SGD."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in params.items()}
    for step in range(num_steps):
        grads = grad_fn(params)
        lr = _reference_lr(cfg, total_steps, step)
        for k in params:
            g = grads[k] + cfg.weight_decay * params[k]
            buf[k] = cfg.momentum * buf[k] + g
            direction = g + cfg.momentum * buf[k] if cfg.nesterov else buf[k]
            params[k] = params[k] - lr * direction
    return params


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("warmup", [None, 0.0])
def test_optimizer_matches_hand_written_nesterov_sgd_with_l2(nesterov, warmup):
    cfg = train_cfg(
        learning_rate=0.1,
        lr_drop_fractions=(0.3, 0.6),
        lr_drop_factor=0.2,
        momentum=0.9,
        nesterov=nesterov,
        weight_decay=0.05,
    )
    if warmup is not None:
        cfg.warmup_epochs = warmup
    total = 10  # drops at steps 3 and 6
    curvature = {"w": np.array([1.0, 3.0, 0.5]), "b": np.array([[2.0, 0.25]])}
    center = {"w": np.array([1.0, -2.0, 0.5]), "b": np.array([[-1.0, 4.0]])}
    params = {"w": np.array([0.3, 0.1, -0.7]), "b": np.array([[0.5, -0.5]])}

    def grad_fn(p):  # of the quadratic 0.5 * sum(a * (p - c)^2)
        return {k: curvature[k] * (p[k] - center[k]) for k in p}

    tx = train.make_optimizer(cfg, total)
    p = {k: jax.numpy.asarray(v, jax.numpy.float32) for k, v in params.items()}
    opt_state = tx.init(p)
    for _ in range(total):
        grads = jax.tree.map(lambda a, x, c: a * (x - c), curvature, p, center)
        updates, opt_state = tx.update(grads, opt_state, p)
        p = jax.tree.map(lambda x, u: x + u, p, updates)
    expected = _reference_sgd(cfg, total, params, grad_fn, total)
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), expected[k], rtol=1e-5, atol=1e-6)
    # The reference is sensitive to the schedule: without the drops it ends elsewhere.
    flat = _reference_sgd(
        train_cfg(**{**cfg, "lr_drop_fractions": ()}), total, params, grad_fn, total
    )
    assert not np.allclose(flat["w"], expected["w"], rtol=1e-3)


def test_checkpoint_with_other_statistics_is_refused_clearly(tmp_path):
    state = {"w": np.zeros(3, np.float32)}
    old = checkpoints.Checkpoints(str(tmp_path / "ckpt"))
    old.save(1, state, {"previous": np.zeros((1, 4), bool)})  # forgetting only, no AUM
    old.close()
    ckpts = checkpoints.Checkpoints(str(tmp_path / "ckpt"))
    stats = {"forgetting": {"previous": np.zeros((1, 4), bool)}, "aum": aum.init_aum(1, 4)}
    with pytest.raises(ValueError, match="holds other training statistics") as err:
        ckpts.restore(1, state, stats)
    assert "\n" not in str(err.value)
    # Resuming refuses it the same way, and leaves it in place (it is readable, not corrupt).
    with pytest.raises(ValueError, match="holds other training statistics"):
        ckpts.restore_latest(state, stats)
    assert os.path.isdir(tmp_path / "ckpt" / "1")
    ckpts.close()


def test_init_state_continues_the_schedule_and_momentum(synthetic_split, tmp_path):
    # A parent stopped at step 5 and handed to train_seeds as init_state, with the same data
    # order, ends exactly where the uninterrupted run ends: the optimizer state (momentum and
    # schedule position) carries over. lr drops at 30/60/80% of 12 steps, so steps 5-12 cross
    # two drops.
    kw = dict(num_seeds=1)
    full, _, _ = train_tiny(synthetic_split, tmp_path / "full" / "ckpt", **kw)
    parent, _, step = train_tiny(synthetic_split, tmp_path / "parent" / "ckpt", max_steps=5, **kw)
    assert step == 5 and int(parent.step[0]) == 5
    child, stats, step = train_tiny(
        synthetic_split, tmp_path / "child" / "ckpt", init_state=parent, **kw
    )
    assert step == 12
    assert int(stats["forgetting"]["seen"].sum()) == 7 * 16  # only the child's own 7 steps of 16
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(child), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The parent is untouched (the loop trains a copy; its step donates its input).
    assert int(parent.step[0]) == 5


def test_children_share_the_parent_and_differ_by_data_order(synthetic_split, tmp_path):
    parent, _, _ = train_tiny(
        synthetic_split, tmp_path / "parent" / "ckpt", num_seeds=1, max_steps=4
    )
    twins = jax.tree.map(lambda x: np.concatenate([x, x]), parent)
    children, _, _ = train_tiny(
        synthetic_split, tmp_path / "kids" / "ckpt", init_state=twins, purpose=7
    )
    kernels = np.asarray(children.params["Conv_0"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])
    # Resuming the children from their checkpoint returns the same states.
    again, _, step = train_tiny(
        synthetic_split, tmp_path / "kids" / "ckpt", init_state=twins, purpose=7
    )
    assert step == 12
    np.testing.assert_array_equal(np.asarray(again.params["Conv_0"]["kernel"]), kernels)
    # max_steps=0 stops at the start and returns the init state.
    _, _, step = train_tiny(synthetic_split, tmp_path / "zero" / "ckpt", num_seeds=1, max_steps=0)
    assert step == 0


def test_bad_init_state_is_refused(synthetic_split, tmp_path):
    parent, _, _ = train_tiny(
        synthetic_split, tmp_path / "parent" / "ckpt", num_seeds=1, max_steps=2
    )
    with pytest.raises(ValueError, match="leading axes"):
        train_tiny(synthetic_split, tmp_path / "k" / "ckpt", init_state=parent)  # 1 state, 2 seeds
    late = parent.replace(step=parent.step + 20)
    with pytest.raises(ValueError, match="must be one value in"):
        train_tiny(synthetic_split, tmp_path / "late" / "ckpt", num_seeds=1, init_state=late)


class _Pools(nn.Module):
    """Conv, then a 2x2 max-pool (fast), a 3x3 stride-2 overlapping one and a padded one (XLA's
    gradient), a ReLU before each so that windows of zeros tie."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3), use_bias=False)(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = nn.max_pool(nn.relu(nn.Dense(5)(x)), (2, 2), (1, 1), padding="SAME")
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


@pytest.mark.parametrize("name", ["small_cnn", "pools"])
def test_fast_backward_step_equals_the_plain_jax_grad_step(synthetic_split, name):
    model = models.get_model("small_cnn", 3, width=4) if name == "small_cnn" else _Pools()
    tx = train.make_optimizer(train_cfg(), 10)
    images = np.asarray(synthetic_split.model_inputs()[:16])
    images[:, :8] = images.min()  # a constant band: tied maxima in the pooling windows
    state = train.create_train_state(jax.random.key(3), model, tx, images[:1])
    batch = {"image": images, "label": synthetic_split.labels[:16], "mask": np.ones(16, np.float32)}
    states = {}
    for fast in (False, True):
        step = jax.jit(functools.partial(train.train_step, model, tx, fast=fast))
        states[fast], _ = step(step(state, batch)[0], batch)
        if fast:  # the rewrite is in place: the fast program has no select-and-scatter pool
            text = step.lower(state, batch).as_text()
    assert ("select_and_scatter" in text) == (name == "pools")
    # The gradients are XLA's to float32 rounding: after two steps the parameters agree.
    for a, b in zip(jax.tree.leaves(states[False]), jax.tree.leaves(states[True]), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    moved = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(np.abs(a - b).max()), states[True].params, state.params)
    )
    assert min(moved) > 0  # every parameter trained


def test_fast_backward_modes():
    assert train.fast_backward("auto") == (jax.default_backend() == "cpu")
    assert train.fast_backward("on") and not train.fast_backward("off")
    with pytest.raises(ValueError, match="Unknown train.fast_backward 'fast'"):
        train.fast_backward("fast")
