"""Pruning inside the K-seed loop: the rounds each seed trains on, resuming, prune and continue.

Every round the feed plans is recorded (`PruneFeed.next_round` wrapped) and replayed by plain
numpy references written here, with the keys derived by hand from (seed, purpose, 0x9E, seed
index, round).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax.pipeline import config_check, plan
from datadiet_jax.scores import api
from datadiet_jax.scores.model_form import model_form
from datadiet_jax.training import k_step, keys, prune_feed
from datadiet_jax.training import prune_schedules as ps
from tests.conftest import smoke_config, tiny_model, train_cfg, train_tiny

STEPS = 16  # 4 full-data epochs of the 64 synthetic examples at batch 16
SCHEDULES = {
    "infobatch": ps.PruneSchedule("infobatch", ratio=0.5, delta=0.875),
    "rs2": ps.PruneSchedule("rs2", fraction=0.3),
    "seta": ps.PruneSchedule("seta", ratio=0.5, num_groups=4, window_scale=0.5),
    "prune_continue": ps.PruneSchedule("prune_continue", at_epoch=1, ratio=0.5),
}


def _rng(seed_index, rnd):
    return np.random.default_rng([0, 1, 0x9E, seed_index, rnd])  # tiny_spec: seed 0, purpose 1


@pytest.fixture
def recorded(monkeypatch):
    """[(step, state before, state after)] of every round planned."""
    rounds, original = [], prune_feed.PruneFeed.next_round

    def next_round(self, prune, step, state):
        new = original(self, prune, step, state)
        rounds.append((step, {k: np.array(v) for k, v in prune.items()}, new))
        return new

    monkeypatch.setattr(prune_feed.PruneFeed, "next_round", next_round)
    return rounds


def _reference_order(name, sched, before, after, k, rnd, start, kept, rs2_pass):
    """Seed k's round from the recorded state before it (plain numpy, this file's own)."""
    rng = _rng(k, rnd)
    if name == "infobatch":
        loss = before["loss"][k][kept]
        if start < sched.delta * STEPS:
            low = loss < loss.mean()
            chosen = rng.choice(kept[low], int((1 - sched.ratio) * low.sum()), replace=False)
            return rng.permutation(np.concatenate([kept[~low], chosen]))
        return rng.permutation(kept)
    if name == "seta":
        size = int(0.5 * len(kept))
        if start >= sched.delta * STEPS:  # partial annealing: a random half of all
            return rng.choice(kept, size, replace=False)
        subset = kept[rng.permutation(len(kept))[:size]]
        groups = ps.loss_groups(before["loss"][k][subset], 4)
        if rnd:  # a window of 2 of the 4 groups, sliding from easy to hard
            groups = groups[rnd % 3 : rnd % 3 + 2]
        return rng.permutation(subset[np.concatenate(groups)])
    if name == "rs2":
        size = round(sched.fraction * len(kept))
        if not rs2_pass or rs2_pass[-1] >= len(kept):
            rs2_pass[:] = [rng.permutation(kept), 0]
        perm, pos = rs2_pass
        rs2_pass[1] = pos + len(perm[pos : pos + size])
        return perm[pos : pos + size]
    members = kept if rnd < sched.at_epoch else kept[after["keep"][k][kept]]
    return rng.permutation(members)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_rounds_equal_a_numpy_replay_and_a_resumed_run_is_bit_identical(
    synthetic_split, tmp_path, recorded, name
):
    sched, kept = SCHEDULES[name], synthetic_split.index
    kw = dict(prune=sched, num_steps=STEPS, schedule_steps=STEPS)
    full = train_tiny(synthetic_split, tmp_path / "full" / "ckpt", **kw)
    stats, rounds = full[1], list(recorded)
    assert full[2] == STEPS and len(rounds) >= 3
    presented = np.zeros((2, len(kept)), np.int64)
    passes = [[], []]
    for rnd, (start, before, after) in enumerate(rounds):
        assert (after["round"] == rnd).all() and (after["start"] == start).all()
        ran = min(int(after["length"][0]), STEPS - start) * 16  # slots trained this round
        for k in range(2):
            ref = _reference_order(name, sched, before, after, k, rnd, start, kept, passes[k])
            order = after["order"][k][: after["count"][k]]
            np.testing.assert_array_equal(order, ref)
            np.add.at(presented[k], order[:ran], 1)
            if name == "infobatch" and rnd:  # the step recorded each presented example's loss
                last = rounds[rnd - 1][2]
                shown = last["order"][k][: last["count"][k]]
                assert (before["loss"][k][shown] != ps.INITIAL_LOSS).all()
                unseen = np.setdiff1d(kept, shown)  # not presented: keeps its last loss
                np.testing.assert_array_equal(
                    before["loss"][k][unseen], rounds[rnd - 1][1]["loss"][k][unseen]
                )
    # The masks reached the step: each example was presented as often as the rounds say.
    np.testing.assert_array_equal(np.asarray(stats["forgetting"]["seen"]), presented)
    if name != "prune_continue":
        assert presented.sum() < 2 * STEPS * 16  # fewer examples than full-data steps hold
    # Stopped inside a round and resumed: the same end, bit for bit.
    stop = next(start + 1 for start, _, after in rounds if start >= 4 and after["length"][0] > 1)
    _, _, step = train_tiny(synthetic_split, tmp_path / "resumed" / "ckpt", max_steps=stop, **kw)
    assert step == stop
    resumed = train_tiny(synthetic_split, tmp_path / "resumed" / "ckpt", **kw)
    assert resumed[2] == STEPS
    leaves = jax.tree.leaves(full[:2]), jax.tree.leaves(resumed[:2])
    assert len(leaves[0]) == len(leaves[1]) and "prune" in resumed[1]
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prune_continue_keeps_the_static_selection_of_its_own_scores(synthetic_split, tmp_path):
    split, sched = synthetic_split, SCHEDULES["prune_continue"]
    seen = {}

    def hook(state, stats):  # epoch 1: the state the schedule scores
        variables = {"params": state.params, "state": state.model_state}
        inputs = (split.inputs.astype(np.float32) / 255 - split.mean) / split.std
        model = model_form(tiny_model(split))
        seen["el2n"] = api.el2n_scores(model, variables, inputs, split.labels)

    _, stats, _ = train_tiny(
        split, tmp_path / "ckpt", prune=sched, num_steps=8, schedule_steps=8, hooks={1: hook}
    )
    config = smoke_config(**{"prune.strategy": "hardest"})
    spec = config_check.prune_spec(config)
    run = plan.PlannedRun("el2n-1_hardest_f0.50", "el2n@1", "hardest", sched.ratio)
    keep = np.asarray(stats["prune"]["keep"])
    for k in range(2):
        static = plan.select_run(spec, run, split, {"el2n@1": seen["el2n"][k]})
        np.testing.assert_array_equal(np.flatnonzero(keep[k]), static)
        assert len(static) == 32
    assert not np.array_equal(keep[0], keep[1])  # each seed chose by its own network


def test_weighted_step_and_an_empty_batch_leaves_the_seed_unchanged(synthetic_split):
    model = tiny_model(synthetic_split)
    init_fn, step_fn = k_step.programs(model, train_cfg(), STEPS)  # the trainings' programs
    state = init_fn(keys.init_keys(0, 1, 2), np.zeros((1, 28, 28, 1), np.float32))
    x = (synthetic_split.inputs[:16].astype(np.float32) / 255 - 0.4) / 0.25
    batch = {
        "image": np.stack([x, x]),
        "label": np.stack([synthetic_split.labels[:16]] * 2),
        "index": np.stack([np.arange(16)] * 2),
        "mask": np.stack([np.arange(16) < 3, np.zeros(16, bool)]).astype(np.float32),
    }
    stats = k_step.init_stats(2, 64)
    prune = ps.init_state(2, 64, np.arange(64))
    prune["weight"][0, :2] = 2.0
    stats["prune"] = prune_feed.jax_arrays(prune)
    before = jax.tree.map(np.array, state)
    after, stats, loss = step_fn(state, stats, batch)
    # Seed 0: the loss is sum(weight * mask * ce) / sum(mask), InfoBatch's weighted mean, of
    # the unweighted losses the step records.
    ce = np.asarray(stats["prune"]["loss"][0])
    np.testing.assert_allclose(float(loss[0]), (2 * ce[0] + 2 * ce[1] + ce[2]) / 3, rtol=1e-5)
    assert (ce[:3] != ps.INITIAL_LOSS).all() and (ce[3:] == ps.INITIAL_LOSS).all()  # no padding
    # Seed 1, all padding: no step at all (no weight decay, momentum or step count).
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(b)[1], np.asarray(a)[1])
    assert int(after.step[0]) == 1 and int(after.step[1]) == 0
    assert jnp.all(stats["prune"]["loss"][1] == ps.INITIAL_LOSS)
