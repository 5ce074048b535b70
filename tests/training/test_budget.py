"""A training's budget: rounds of a pruning schedule (ending early, the learning rate following
the rounds) and a target test accuracy that ends it at an epoch end."""

import dataclasses
import json
import os

import jax
import numpy as np

from datadiet_jax.training import prune_feed, train
from datadiet_jax.training import prune_schedules as ps
from tests.conftest import tiny_model, train_tiny
from tests.references import make_split

# 64 synthetic examples at batch 16: S = 4 steps per full-data epoch.
S = 4


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _metrics(ckpt_dir):
    path = os.path.join(os.path.dirname(str(ckpt_dir)), "metrics.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_rounds_that_prune_nothing_equal_the_step_budget_bit_for_bit(synthetic_split, tmp_path):
    """InfoBatch at ratio 0 keeps every example: its rounds are full epochs, so the rate taken
    per batch (rate_step) equals the optimizer's own schedule step by step, drops included
    (steps 3, 7 and 9 of 12)."""
    kw = dict(prune=ps.PruneSchedule("infobatch", ratio=0.0), num_steps=12, schedule_steps=12)
    by_steps = train_tiny(synthetic_split, tmp_path / "steps" / "ckpt", **kw)
    by_rounds = train_tiny(synthetic_split, tmp_path / "rounds" / "ckpt", num_rounds=3, **kw)
    assert by_steps[2] == by_rounds[2] == 12
    (a, a_stats), (b, b_stats) = by_steps[:2], by_rounds[:2]
    # The optimizers' states differ in form only (one counts its steps for the schedule).
    _leaves_equal(
        (a.step, a.params, a.model_state, a_stats), (b.step, b.params, b.model_state, b_stats)
    )


def test_rounds_budget_ends_after_its_rounds_at_the_rate_of_their_progress(
    synthetic_split, tmp_path, monkeypatch
):
    """RS2 keeps half a round: 2 steps a round, 4 rounds end at step 8 of the 16-step bound;
    step j of round r (L = 2 steps) takes the rate of full-data step r * 4 + j * 4 // 2."""
    taken = []
    original = prune_feed.PruneFeed.rate_step

    def rate_step(self, rnd, j, length):
        out = original(self, rnd, j, length)
        taken.append(out.tolist())
        return out

    monkeypatch.setattr(prune_feed.PruneFeed, "rate_step", rate_step)
    kw = dict(prune=ps.PruneSchedule("rs2", fraction=0.5), num_steps=16, schedule_steps=16)
    ckpt = tmp_path / "ckpt"
    state, stats, step = train_tiny(synthetic_split, ckpt, num_rounds=4, **kw)
    assert step == 8
    assert taken == [[r * S + j * S // 2] * 2 for r in range(4) for j in range(2)]
    lines = _metrics(ckpt)
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]
    assert [line["step"] for line in lines] == [2, 4, 6, 8]
    assert lines[-1]["examples"] == [128, 128]  # 4 rounds of 32 examples, each seed
    np.testing.assert_array_equal(np.asarray(stats["forgetting"]["seen"]).sum(1), [128, 128])
    # Stopped inside round 2 and resumed: the same end, bit for bit.
    resumed = tmp_path / "resumed" / "ckpt"
    assert train_tiny(synthetic_split, resumed, num_rounds=4, max_steps=5, **kw)[2] == 5
    again = train_tiny(synthetic_split, resumed, num_rounds=4, **kw)
    assert again[2] == 8
    _leaves_equal((state, stats), again[:2])


def test_infobatch_anneals_by_rounds(synthetic_split, tmp_path, monkeypatch):
    """delta 0.5 of 4 rounds: rounds 0 and 1 may prune, rounds 2 and 3 train every example."""
    counts = []
    original = prune_feed.PruneFeed.next_round

    def next_round(self, prune, step, state):
        new = original(self, prune, step, state)
        counts.append(np.asarray(new["count"]).tolist())
        return new

    monkeypatch.setattr(prune_feed.PruneFeed, "next_round", next_round)
    sched = ps.PruneSchedule("infobatch", ratio=0.5, delta=0.5)
    kw = dict(prune=sched, num_steps=16, schedule_steps=16, num_rounds=4)
    train_tiny(synthetic_split, tmp_path / "ckpt", **kw)
    assert counts[0] == [64, 64]  # equal initial losses: nothing is below the mean
    assert max(counts[1]) < 64  # pruned: the below-mean half, halved
    assert counts[2] == counts[3] == [64, 64]


def _evaluate(split, test_split):
    model = tiny_model(split)
    return lambda state: train.evaluate(model, state, test_split, batch_size=32)[0]


def test_target_accuracy_stops_at_the_first_epoch_every_seed_reaches_it(synthetic_split, tmp_path):
    evaluate = _evaluate(synthetic_split, synthetic_split)
    ckpt = tmp_path / "ckpt"
    kw = dict(evaluate=evaluate, target_accuracy=0.2, num_steps=12, schedule_steps=12)
    state, _, step = train_tiny(synthetic_split, ckpt, **kw)
    lines = _metrics(ckpt)
    assert step == S and len(lines) == 1  # one epoch, then every seed was above 0.2
    np.testing.assert_allclose(lines[0]["test_accuracy"], evaluate(state), atol=1e-6)
    assert min(lines[0]["test_accuracy"]) >= 0.2
    # A rerun finds the target reached at its last checkpoint and trains no further.
    assert train_tiny(synthetic_split, ckpt, **kw)[2] == S
    assert len(_metrics(ckpt)) == 1


def test_unreachable_target_trains_the_whole_budget_with_its_curve(synthetic_split, tmp_path):
    """Test labels permuted at random: no seed gets near 0.9, so every epoch is trained and
    each logs its seeds' test accuracy."""
    rng = np.random.default_rng(3)
    shuffled = make_split(seed=1)
    shuffled = dataclasses.replace(shuffled, labels=rng.permutation(shuffled.labels))
    evaluate = _evaluate(synthetic_split, shuffled)
    ckpt = tmp_path / "ckpt"
    kw = dict(evaluate=evaluate, target_accuracy=0.9, num_steps=12, schedule_steps=12)
    state, _, step = train_tiny(synthetic_split, ckpt, **kw)
    lines = _metrics(ckpt)
    assert step == 12 and [line["step"] for line in lines] == [4, 8, 12]
    assert all(min(line["test_accuracy"]) < 0.9 for line in lines)
    np.testing.assert_allclose(lines[-1]["test_accuracy"], evaluate(state), atol=1e-6)
    assert all(line["examples"] == [line["step"] * 16] * 2 for line in lines)
