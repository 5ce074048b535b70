"""The pruning schedules' rules on fixed losses (pure numpy, no training).

References are written here, apart from the module: InfoBatch's expectation over every possible
drop, enumerated exactly; RS2 replayed as a plain loop over permutations.
"""

import itertools
import math

import numpy as np
import pytest

from datadiet_jax.training import keys
from datadiet_jax.training import prune_schedules as ps

# Eight fixed losses: mean 1.0; the four below it (0.1, 0.2, 0.3, 0.4) are well learned.
LOSSES = np.array([0.1, 2.0, 0.2, 1.5, 0.3, 2.5, 0.4, 1.0], np.float32)


class _Forced:
    """A generator whose `choice` returns a given subset and whose `permutation` keeps the
    order: the implementation's result for one particular drop."""

    def __init__(self, subset):
        self.subset = np.asarray(subset, np.int64)

    def choice(self, pool, size, replace):
        assert not replace and size == len(self.subset) and set(self.subset) <= set(pool)
        return self.subset

    def permutation(self, x):
        return np.asarray(x)


def _expected_weighted_sum(ratio):
    """E over InfoBatch's drop of sum(weight * loss) over the kept examples, by enumerating
    every kept subset of the well-learned examples (each equally likely) through the module."""
    kept = np.arange(len(LOSSES))
    low = kept[LOSSES < LOSSES.mean()]
    size = int(min(1.0, max(0.1, 1 - ratio)) * len(low))
    totals = []
    for subset in itertools.combinations(low, size):
        order, weight = ps.infobatch_round(LOSSES, kept, ratio, True, _Forced(subset))
        assert sorted(order) == sorted(set(kept) - set(low) | set(subset))  # the kept set
        totals.append(float(np.sum(weight[order] * LOSSES[order])))
    assert len(totals) == math.comb(len(low), size)
    return np.mean(totals)


@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.75])
def test_infobatch_rescaled_loss_is_unbiased(ratio):
    # (1 - r) * 4 well-learned examples is a whole number: each is kept with probability
    # exactly 1 - r and weighs 1 / (1 - r), so the expected rescaled sum is the full one.
    np.testing.assert_allclose(_expected_weighted_sum(ratio), LOSSES.sum(), rtol=1e-6)


def test_infobatch_rounds_the_kept_count_down_as_its_code_does():
    # r = 0.3: int(0.7 * 4) = 2 of the 4 kept, each with probability 1/2, weighing 1 / 0.7.
    high, low = LOSSES[LOSSES >= 1.0].sum(), LOSSES[LOSSES < 1.0].sum()
    hand = high + 0.5 / 0.7 * low
    np.testing.assert_allclose(_expected_weighted_sum(0.3), hand, rtol=1e-6)


def test_infobatch_weights_and_annealing():
    kept = np.arange(8)
    rng = np.random.default_rng(0)
    order, weight = ps.infobatch_round(LOSSES, kept, 0.5, True, rng)
    assert len(order) == 4 + 2 and len(set(order)) == len(order)
    assert set(np.flatnonzero(weight != 1)) <= {0, 2, 4, 6}
    np.testing.assert_allclose(weight[weight != 1], 2.0)
    # Equal losses (the start, 3.0 each): none is below the mean, every example is kept.
    equal = np.full(8, ps.INITIAL_LOSS, np.float32)
    order, weight = ps.infobatch_round(equal, kept, 0.5, True, rng)
    assert sorted(order) == list(kept) and (weight == 1).all()
    # Annealing: rounds starting at or after delta of the budget keep everything.
    sched = ps.PruneSchedule("infobatch", ratio=0.5, delta=0.875)
    assert ps.prunes_round(sched, 139, 160) and not ps.prunes_round(sched, 140, 160)
    order, weight = ps.infobatch_round(LOSSES, kept, 0.5, False, rng)
    assert sorted(order) == list(kept) and (weight == 1).all()


def test_rs2_draws_without_replacement_until_the_data_is_used_up():
    kept = np.arange(10, 20)
    perm, pos, seen = kept.copy(), len(kept), []
    for rnd in range(7):
        rng = keys.prune_rng(0, 2, 1, rnd)
        order, perm, pos = ps.rs2_round(perm, pos, kept, 0.3, rng)
        seen.append(order)
        # Reference: a new permutation each time the last is used up, then its next 3.
        ref = keys.prune_rng(0, 2, 1, (rnd // 4) * 4).permutation(kept)[(rnd % 4) * 3 :][:3]
        np.testing.assert_array_equal(order, ref)
    assert [len(o) for o in seen] == [3, 3, 3, 1, 3, 3, 3]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[:4])), kept)  # one pass: all once


def test_seta_groups_losses_and_slides_a_window_from_easy_to_hard():
    values = np.array([5.0, 0.1, 9.0, 0.2, 5.2, 9.1, 0.0, 4.9])
    groups = ps.loss_groups(values, 3)
    assert [sorted(g.tolist()) for g in groups] == [[1, 3, 6], [0, 4, 7], [2, 5]]
    equal = ps.loss_groups(np.full(7, 3.0), 3)  # SeTa's code: chunks of ceil(7 / 3) in order
    assert [g.tolist() for g in equal] == [[0, 1, 2], [3, 4, 5], [6]]
    kept, sched = np.arange(8), ps.PruneSchedule("seta", ratio=0.0, num_groups=3, window_scale=0.7)
    rng = np.random.default_rng(0)
    everything = ps.seta_round(values, kept, sched, 0, True, rng)  # round 0: every group
    assert sorted(everything) == list(kept)
    # ratio 0 keeps all 8; a window of round(3 * 0.7) = 2 groups starts at r mod 2.
    assert sorted(ps.seta_round(values, kept, sched, 1, True, rng)) == [0, 2, 4, 5, 7]
    assert sorted(ps.seta_round(values, kept, sched, 2, True, rng)) == [0, 1, 3, 4, 6, 7]
    half = ps.PruneSchedule("seta", ratio=0.5)  # annealing: a random half of all, weight 1
    assert len(set(ps.seta_round(values, kept, half, 9, False, rng))) == 4


def test_round_indices_pad_each_seed_with_masked_repeats():
    order = np.array([[5, 6, 7, 8, 9], [1, 2, 3, 0, 0]])
    idx, mask = ps.round_indices(order, np.array([5, 3]), batch_size=2)
    assert idx.shape == mask.shape == (3, 2, 2)  # ceil(5 / 2) steps, [K, B] each
    np.testing.assert_array_equal(idx[:, 0].ravel(), [5, 6, 7, 8, 9, 5])
    np.testing.assert_array_equal(idx[:, 1].ravel(), [1, 2, 3, 1, 2, 3])
    np.testing.assert_array_equal(mask[:, 1].ravel(), [1, 1, 1, 0, 0, 0])
    assert mask[2, 1].sum() == 0  # seed 1 waits out the round's last step


@pytest.mark.parametrize(
    "fields, setting",
    [
        ({"schedule": "infobach"}, "config.train.prune.schedule"),
        ({"schedule": "infobatch", "ratio": 0.95}, "config.train.prune.ratio"),
        ({"schedule": "prune_continue", "ratio": 1.0}, "config.train.prune.ratio"),
        ({"schedule": "infobatch", "delta": 1.5}, "config.train.prune.delta"),
        ({"schedule": "rs2", "fraction": 0.0}, "config.train.prune.fraction"),
        ({"schedule": "seta", "num_groups": 0}, "config.train.prune.num_groups"),
        ({"schedule": "seta", "window_scale": 0.01}, "config.train.prune.window_scale"),
        ({"schedule": "prune_continue", "at_epoch": 0}, "config.train.prune.at_epoch"),
        ({"schedule": "prune_continue", "score": "forgetting"}, "config.train.prune.score"),
        ({"schedule": "prune_continue", "strategy": "kcenter"}, "config.train.prune.strategy"),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(fields, setting):
    with pytest.raises(ValueError) as err:
        ps.check(fields)
    assert str(err.value).startswith(setting) and "\n" not in str(err.value)


def test_off_is_no_schedule():
    from datadiet_jax.training import prune_feed

    assert set(prune_feed._ROUNDS) == set(ps.SCHEDULES)  # the feed plans every schedule
    assert ps.from_config({"schedule": ""}) is None and ps.from_config(None) is None
    sched = ps.from_config({"schedule": "rs2", "fraction": 0.3}, seed=4)
    assert sched == ps.PruneSchedule("rs2", fraction=0.3, seed=4)
