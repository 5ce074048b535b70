import jax
import ml_collections
import numpy as np
import pytest

from datadiet_jax import loop, models, seeds, train
from datadiet_jax.config_base import base_config


def _train_cfg(**kw):
    cfg = base_config().train
    cfg.batch_size = 16
    cfg.checkpoint_every_epochs = 1
    cfg.update(kw)
    return cfg


def _train(split, tmp_path, name, **kw):
    args = dict(
        train_cfg=_train_cfg(),
        num_seeds=2,
        seed=0,
        purpose=1,
        num_steps=12,
        schedule_steps=12,
        ckpt_dir=str(tmp_path / name / "ckpt"),
        augment=False,
    )
    args.update(kw)
    return loop.train_seeds(models.get_model("small_cnn", 3, width=4), split, split.index, **args)


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
    tx = train.make_optimizer(_train_cfg(learning_rate=0.05), 100)
    state = train.init_states(model, tx, loop.seed_keys(0, 1, 1), synthetic_split.images[:1] * 0.0)
    batch = {
        "image": synthetic_split.normalized_images()[None, :32],
        "label": synthetic_split.labels[None, :32],
        "mask": np.ones((1, 32), np.float32),
    }
    step = jax.jit(seeds.over_seeds(lambda s, b: train.train_step(model, tx, s, b), "map"))
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"][0]))
    assert losses[-1] < 0.5 * losses[0]


def test_each_seed_has_its_own_init(synthetic_split, tmp_path):
    state, _, _ = _train(synthetic_split, tmp_path, "a", num_steps=0)
    kernel = state.params["Conv_0"]["kernel"]
    assert not np.allclose(kernel[0], kernel[1])


def test_resumed_run_equals_uninterrupted(synthetic_split, tmp_path):
    full, full_stats, _ = _train(synthetic_split, tmp_path, "full")
    _, _, step = _train(synthetic_split, tmp_path, "resumed", max_steps=5)
    assert step == 5
    resumed, resumed_stats, step = _train(synthetic_split, tmp_path, "resumed")
    assert step == 12
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for key in full_stats:
        np.testing.assert_array_equal(full_stats[key], resumed_stats[key])
    assert int(full_stats["seen"].sum()) == 2 * 3 * 64  # 12 steps = 3 epochs of 64 examples


def test_unroll_map_and_vmap_over_seeds_agree(synthetic_split, tmp_path):
    runs = {}
    for mode in ("unroll", "map", "vmap"):
        state, _, _ = _train(
            synthetic_split, tmp_path, mode, train_cfg=_train_cfg(seed_axis=mode), num_steps=4
        )
        runs[mode] = jax.tree.leaves(state.params)
    for mode in ("map", "vmap"):
        for x, y in zip(runs["unroll"], runs[mode], strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)


def test_evaluate_counts_correct_predictions(synthetic_split):
    model = models.get_model("small_cnn", 3, width=4)
    tx = train.make_optimizer(_train_cfg(), 10)
    state = train.init_states(model, tx, loop.seed_keys(0, 1, 2), synthetic_split.images[:1] * 0.0)
    acc, _ = train.evaluate(model, state, synthetic_split, batch_size=24)
    for k in range(2):
        params = jax.tree.map(lambda x, k=k: x[k], state.params)
        stats = jax.tree.map(lambda x, k=k: x[k], state.batch_stats)
        logits = model.apply(
            {"params": params, "batch_stats": stats},
            synthetic_split.normalized_images(),
            train=False,
        )
        expected = np.mean(np.argmax(logits, -1) == synthetic_split.labels)
        assert acc[k] == pytest.approx(expected)


def test_init_state_continues_the_schedule_and_momentum(synthetic_split, tmp_path):
    # A parent stopped at step 5 and handed to train_seeds as init_state, with the same data
    # order, ends exactly where the uninterrupted run ends: the optimizer state (momentum and
    # schedule position) carries over. lr drops at 30/60/80% of 12 steps, so steps 5-12 cross
    # two drops.
    kw = dict(num_seeds=1)
    full, _, _ = _train(synthetic_split, tmp_path, "full", **kw)
    parent, _, step = _train(synthetic_split, tmp_path, "parent", max_steps=5, **kw)
    assert step == 5 and int(parent.step[0]) == 5
    child, stats, step = _train(synthetic_split, tmp_path, "child", init_state=parent, **kw)
    assert step == 12
    assert int(stats["seen"].sum()) == 7 * 16  # only the child's own 7 steps of 16
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(child), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The parent is untouched (the loop trains a copy; its step donates its input).
    assert int(parent.step[0]) == 5


def test_children_share_the_parent_and_differ_by_data_order(synthetic_split, tmp_path):
    parent, _, _ = _train(synthetic_split, tmp_path, "parent", num_seeds=1, max_steps=4)
    twins = jax.tree.map(lambda x: np.concatenate([x, x]), parent)
    children, _, _ = _train(synthetic_split, tmp_path, "kids", init_state=twins, purpose=7)
    kernels = np.asarray(children.params["Conv_0"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])
    # Resuming the children from their checkpoint returns the same states.
    again, _, step = _train(synthetic_split, tmp_path, "kids", init_state=twins, purpose=7)
    assert step == 12
    np.testing.assert_array_equal(np.asarray(again.params["Conv_0"]["kernel"]), kernels)
    # max_steps=0 stops at the start and returns the init state.
    _, _, step = _train(synthetic_split, tmp_path, "zero", num_seeds=1, max_steps=0)
    assert step == 0


def test_bad_init_state_is_refused(synthetic_split, tmp_path):
    parent, _, _ = _train(synthetic_split, tmp_path, "parent", num_seeds=1, max_steps=2)
    with pytest.raises(ValueError, match="leading axes"):
        _train(synthetic_split, tmp_path, "k", init_state=parent)  # 1 state, 2 seeds
    late = parent.replace(step=parent.step + 20)
    with pytest.raises(ValueError, match="must be one value in"):
        _train(synthetic_split, tmp_path, "late", num_seeds=1, init_state=late)
