"""Tests of the pruning strategies against hand-made cases and brute-force references."""

import itertools

import numpy as np
import pytest

from datadiet_jax.scores import pruning

SCORES = np.array([0.3, 0.9, 0.1, 0.9, 0.5])


def _assert_kept(kept, expected):
    assert kept.dtype == np.int64
    np.testing.assert_array_equal(kept, np.asarray(expected))


# num_to_keep ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, f, expected",
    [(10, 0.0, 10), (10, 0.3, 7), (10, 0.7, 3), (5, 0.5, 3), (3, 0.9, 1), (100, 0.999, 1)],
)
def test_num_to_keep(n, f, expected):
    assert pruning.num_to_keep(n, f) == expected


@pytest.mark.parametrize("f", [1.0, 1.2, -0.1, float("nan")])
def test_num_to_keep_rejects_fraction(f):
    with pytest.raises(ValueError, match=r"outside \[0, 1\).*config.prune.fractions"):
        pruning.num_to_keep(10, f)


def test_num_to_keep_rejects_empty_dataset():
    with pytest.raises(ValueError, match="at least one example"):
        pruning.num_to_keep(0, 0.5)


# hardest / easiest / random ---------------------------------------------------------------------


def test_keep_hardest_hand_case():
    _assert_kept(pruning.keep_hardest(SCORES, 2), [1, 3])
    _assert_kept(pruning.keep_hardest(SCORES, 3), [1, 3, 4])
    _assert_kept(pruning.keep_hardest(SCORES, 5), [0, 1, 2, 3, 4])


def test_keep_hardest_tie_goes_to_lower_index():
    _assert_kept(pruning.keep_hardest(SCORES, 1), [1])
    _assert_kept(pruning.keep_hardest(np.zeros(6), 2), [0, 1])


def test_keep_easiest_hand_case_and_ties():
    _assert_kept(pruning.keep_easiest(SCORES, 2), [0, 2])
    _assert_kept(pruning.keep_easiest(SCORES, 4), [0, 1, 2, 4])
    _assert_kept(pruning.keep_easiest(np.array([1.0, 0.0, 1.0, 0.0]), 3), [0, 1, 3])


def test_hardest_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    for k in (1, 7, 40):
        # Reference: rank by (-score, index) with Python's sort.
        ref = sorted(range(40), key=lambda i: (-scores[i], i))[:k]
        _assert_kept(pruning.keep_hardest(scores, k), sorted(ref))
        ref_easy = sorted(range(40), key=lambda i: (scores[i], i))[:k]
        _assert_kept(pruning.keep_easiest(scores, k), sorted(ref_easy))


def test_random_subset_deterministic_and_valid():
    a = pruning.random_subset(100, 30, seed=3)
    b = pruning.random_subset(100, 30, seed=3)
    c = pruning.random_subset(100, 30, seed=4)
    _assert_kept(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a)) == 30 and a.min() >= 0 and a.max() < 100
    assert np.all(np.diff(a) > 0)


def test_random_subset_is_roughly_uniform():
    counts = np.zeros(10)
    for seed in range(2000):
        counts[pruning.random_subset(10, 3, seed)] += 1
    # Each index is kept with probability 0.3: 600 expected, sd ~ 20.5.
    assert np.all(np.abs(counts - 600) < 100)


@pytest.mark.parametrize("k", [0, 6, -1])
def test_bad_num_keep(k):
    with pytest.raises(ValueError, match=r"num_keep is .* must be in \[1, 5\]"):
        pruning.keep_hardest(SCORES, k)


# offset -----------------------------------------------------------------------------------------


def test_offset_window_hand_case():
    # Hardest-first order of SCORES: 1, 3, 4, 0, 2.
    _assert_kept(pruning.offset_window(SCORES, 0, 2), [1, 3])
    _assert_kept(pruning.offset_window(SCORES, 1, 2), [3, 4])
    _assert_kept(pruning.offset_window(SCORES, 2, 3), [0, 2, 4])


def test_offset_zero_equals_hardest():
    scores = np.random.default_rng(1).normal(size=50)
    for k in (1, 10, 50):
        _assert_kept(pruning.offset_window(scores, 0, k), pruning.keep_hardest(scores, k))


@pytest.mark.parametrize(
    "offset, k, match",
    [(-1, 2, "must be >= 0"), (0, 0, "keeps 0 examples"), (4, 2, r"window \[4, 6\) exceeds")],
)
def test_check_window_errors(offset, k, match):
    with pytest.raises(ValueError, match=match):
        pruning.check_window(5, offset, k)
    with pytest.raises(ValueError, match=match):
        pruning.offset_window(SCORES, offset, k)


def test_check_window_accepts_last_window():
    pruning.check_window(5, 3, 2)  # must not raise
    _assert_kept(pruning.offset_window(SCORES, 3, 2), [0, 2])


# class-balanced ---------------------------------------------------------------------------------


def test_class_quotas_largest_remainder():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    # exact shares of 5: 2.5, 1.5, 1.0 -> floors 2, 1, 1; one extra to the first largest remainder.
    assert pruning.class_quotas(labels, 5) == {0: 3, 1: 1, 2: 1}
    # exact shares of 7: 3.5, 2.1, 1.4 -> floors 3, 2, 1; one extra to class 0.
    assert pruning.class_quotas(labels, 7) == {0: 4, 1: 2, 2: 1}
    assert pruning.class_quotas(labels, 10) == {0: 5, 1: 3, 2: 2}


def test_class_quotas_sum_and_proportion_on_random_labels():
    rng = np.random.default_rng(2)
    for _ in range(50):
        labels = rng.integers(0, 7, size=int(rng.integers(1, 200)))
        n = labels.shape[0]
        k = int(rng.integers(1, n + 1))
        quotas = pruning.class_quotas(labels, k)
        assert sum(quotas.values()) == k
        for c, q in quotas.items():
            size = int((labels == c).sum())
            assert q <= size
            assert abs(q - k * size / n) < 1.0


def test_hardest_balanced_hand_case():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.8, 0.5, 0.2, 0.9, 0.95, 0.3, 0.99])
    # Global hardest 4 would all be class 1; balanced keeps 2 per class.
    _assert_kept(pruning.class_balanced(pruning.keep_hardest, scores, labels, 4), [1, 2, 5, 7])
    _assert_kept(pruning.class_balanced(pruning.keep_easiest, scores, labels, 4), [0, 3, 4, 6])
    kept = pruning.kept_indices(scores, "hardest_balanced", prune_fraction=0.5, labels=labels)
    _assert_kept(kept, [1, 2, 5, 7])


@pytest.mark.parametrize("strategy", ["hardest_balanced", "easiest_balanced", "random_balanced"])
def test_balanced_strategies_respect_quotas(strategy):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=97)
    scores = rng.normal(size=97)
    kept = pruning.kept_indices(scores, strategy, prune_fraction=0.6, labels=labels, seed=1)
    assert kept.shape == (pruning.num_to_keep(97, 0.6),)
    assert len(np.unique(kept)) == kept.shape[0]
    counts = np.bincount(labels[kept], minlength=4)
    quotas = pruning.class_quotas(labels, kept.shape[0])
    np.testing.assert_array_equal(counts, [quotas[c] for c in range(4)])
    if strategy == "hardest_balanced":
        for c in range(4):
            members = np.flatnonzero(labels == c)
            chosen = np.intersect1d(members, kept)
            rest = np.setdiff1d(members, kept)
            if rest.size:
                assert scores[chosen].min() >= scores[rest].max()


def test_random_balanced_deterministic_and_classes_independent():
    labels = np.repeat(np.arange(2), 50)
    a = pruning.kept_indices(None, "random_balanced", prune_fraction=0.8, labels=labels, seed=7)
    b = pruning.kept_indices(None, "random_balanced", prune_fraction=0.8, labels=labels, seed=7)
    c = pruning.kept_indices(None, "random_balanced", prune_fraction=0.8, labels=labels, seed=8)
    _assert_kept(a, b)
    assert not np.array_equal(a, c)
    # Within-class positions differ between the classes (the seed is folded with the label).
    assert not np.array_equal(a[labels[a] == 0], a[labels[a] == 1] - 50)


def test_balanced_needs_labels():
    with pytest.raises(ValueError, match="needs labels"):
        pruning.kept_indices(SCORES, "hardest_balanced", prune_fraction=0.4)
    with pytest.raises(ValueError, match="integer class labels"):
        pruning.kept_indices(
            SCORES, "hardest_balanced", prune_fraction=0.4, labels=np.zeros(4, int)
        )
    with pytest.raises(ValueError, match="must be >= 0"):
        pruning.kept_indices(
            SCORES, "easiest_balanced", prune_fraction=0.4, labels=-np.ones(5, int)
        )


# CCS --------------------------------------------------------------------------------------------


def test_stratum_allocation_hand_cases():
    # Budget 12 over sizes [1, 0, 10, 3]: 1 from the smallest, then 11 // 2 = 5 -> 3 (all of it),
    # then 8 from the largest.
    np.testing.assert_array_equal(pruning.stratum_allocation([1, 0, 10, 3], 12), [1, 0, 8, 3])
    np.testing.assert_array_equal(pruning.stratum_allocation([5, 5, 5], 10), [3, 3, 4])
    np.testing.assert_array_equal(pruning.stratum_allocation([2, 2], 4), [2, 2])
    with pytest.raises(ValueError, match="exceeds"):
        pruning.stratum_allocation([1, 2], 4)


def test_stratum_allocation_is_water_filling():
    rng = np.random.default_rng(3)
    for _ in range(200):
        sizes = rng.integers(0, 20, size=int(rng.integers(1, 8)))
        if sizes.sum() == 0:
            continue
        budget = int(rng.integers(0, sizes.sum() + 1))
        taken = pruning.stratum_allocation(sizes, budget)
        assert taken.sum() == budget
        assert np.all(taken <= sizes) and np.all(taken >= 0)
        # Water-filling: every stratum not fully used gets within one of the largest take.
        open_strata = taken < sizes
        if open_strata.any():
            assert taken.max() - taken[open_strata].min() <= 1


def test_ccs_drops_hardest_and_covers_strata_evenly():
    # 100 examples: scores 0..89 in three equal-width strata (30 each) plus 10 very hard ones.
    scores = np.concatenate([np.arange(90.0), np.full(10, 1000.0)])
    perm = np.random.default_rng(0).permutation(100)
    scores = scores[perm]
    kept = pruning.ccs(scores, 30, beta=0.1, num_strata=3, seed=0)
    assert kept.shape == (30,) and len(np.unique(kept)) == 30
    assert np.all(scores[kept] < 1000)
    strata = np.floor(scores[kept] / 30).astype(int)
    np.testing.assert_array_equal(np.bincount(strata, minlength=3), [10, 10, 10])


def test_ccs_redistributes_small_strata():
    # Strata of width 10 over [0, 30]: sizes 2, 40, 20 (+ the maximum 30 in the last stratum).
    scores = np.concatenate([[0.0, 1.0], np.linspace(10, 19, 40), np.linspace(20, 30, 20)])
    kept = pruning.ccs(scores, 32, beta=0.0, num_strata=3, seed=1)
    strata = np.minimum(np.floor(scores[kept] / 10).astype(int), 2)
    # 2 from the small stratum, then 30 // 2 = 15 each.
    np.testing.assert_array_equal(np.bincount(strata, minlength=3), [2, 15, 15])


def test_ccs_deterministic_and_seed_dependent():
    scores = np.random.default_rng(4).normal(size=200)
    a = pruning.ccs(scores, 50, beta=0.2, seed=0)
    _assert_kept(a, pruning.ccs(scores, 50, beta=0.2, seed=0))
    assert not np.array_equal(a, pruning.ccs(scores, 50, beta=0.2, seed=1))
    hardest_40 = pruning.keep_hardest(scores, 40)
    assert np.intersect1d(a, hardest_40).size == 0
    _assert_kept(a, pruning.kept_indices(scores, "ccs", prune_fraction=0.75, beta=0.2, seed=0))


def test_ccs_constant_scores_and_full_budget():
    kept = pruning.ccs(np.ones(10), 8, beta=0.2, seed=0)
    # The two dropped are indices 0 and 1 (ties go to the lower index); all others are kept.
    _assert_kept(kept, np.arange(2, 10))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"beta": 1.0}, "beta is 1.0"),
        ({"beta": -0.1}, "beta is -0.1"),
        ({"beta": 0.5}, "only 5 remain"),
        ({"beta": 0.0, "num_strata": 0}, "num_strata is 0"),
    ],
)
def test_ccs_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        pruning.ccs(np.arange(10.0), 6, seed=0, **kw)


# select / validate ------------------------------------------------------------------------------


def test_select_dispatch_matches_direct_calls():
    scores = np.random.default_rng(6).normal(size=20)
    k = pruning.num_to_keep(20, 0.25)
    _assert_kept(
        pruning.kept_indices(scores, "hardest", prune_fraction=0.25),
        pruning.keep_hardest(scores, k),
    )
    _assert_kept(
        pruning.kept_indices(scores, "easiest", prune_fraction=0.25),
        pruning.keep_easiest(scores, k),
    )
    _assert_kept(
        pruning.kept_indices(scores, "offset", prune_fraction=0.25, offset=3),
        pruning.offset_window(scores, 3, k),
    )
    _assert_kept(
        pruning.kept_indices(None, "random", prune_fraction=0.25, seed=2, num_examples=20),
        pruning.random_subset(20, k, 2),
    )
    # 'random' ignores the scores.
    _assert_kept(
        pruning.kept_indices(scores, "random", prune_fraction=0.25, seed=2),
        pruning.random_subset(20, k, 2),
    )


def test_registry_names():
    assert set(pruning.STRATEGIES) == {
        "hardest",
        "easiest",
        "random",
        "offset",
        "hardest_balanced",
        "easiest_balanced",
        "random_balanced",
        "ccs",
        "dual_sampling",
        "moderate",
        "kcenter",
        "herding",
        "d2",
    }


def test_every_strategy_returns_sorted_unique_int64():
    rng = np.random.default_rng(8)
    scores, labels = rng.normal(size=60), rng.integers(0, 3, size=60)
    # 'dual_sampling' weights by the score (>= 0) and a Beta density at mean predictions.
    scores, mean_probs = np.abs(scores), rng.uniform(size=60)
    features = rng.normal(size=(2, 60, 4))
    for name in pruning.STRATEGIES:
        kept = pruning.kept_indices(
            scores,
            name,
            prune_fraction=0.5,
            labels=labels,
            seed=0,
            beta=0.1,
            features=features,
            mean_probs=mean_probs,
        )
        assert kept.dtype == np.int64 and kept.shape == (30,)
        assert np.all(np.diff(kept) > 0) and kept.min() >= 0 and kept.max() < 60


def test_select_errors():
    with pytest.raises(ValueError, match="unknown pruning strategy 'hardst'; valid names: ccs, "):
        pruning.kept_indices(SCORES, "hardst", prune_fraction=0.5)
    with pytest.raises(ValueError, match="needs scores"):
        pruning.kept_indices(None, "hardest", prune_fraction=0.5, num_examples=5)
    with pytest.raises(ValueError, match="to know N"):
        pruning.kept_indices(None, "random", prune_fraction=0.5)
    with pytest.raises(ValueError, match="num_examples is 6"):
        pruning.kept_indices(SCORES, "random", prune_fraction=0.5, num_examples=6)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        pruning.kept_indices(SCORES, "hardest", prune_fraction=1.2)
    with pytest.raises(ValueError, match=r"window \[4, 7\) exceeds"):
        pruning.kept_indices(SCORES, "offset", prune_fraction=0.4, offset=4)


def test_validate_scores():
    out = pruning.validate_scores([1, 2, 3], 3)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="3 entries but the dataset has 4"):
        pruning.validate_scores([1, 2, 3], 4)
    with pytest.raises(ValueError, match=r"2 NaN/-inf values \(first at index 1\)"):
        pruning.validate_scores([1.0, np.nan, -np.inf], 3)
    # +inf (a never-learned forgetting score) is valid and ranks first.
    np.testing.assert_array_equal(pruning.validate_scores([1.0, np.inf], 2), [1.0, np.inf])
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*average"):
        pruning.validate_scores(np.ones((2, 3)), 3)
    with pytest.raises(ValueError, match="NaN/-inf"):
        pruning.keep_hardest([0.1, np.nan], 1)


def test_all_subsets_small_case_hardest_is_optimal():
    # The kept set of keep_hardest has the largest score sum among all subsets of that size.
    scores = np.array([0.2, 0.7, 0.4, 0.9, 0.1, 0.6])
    for k in range(1, 7):
        best = max(sum(scores[list(c)]) for c in itertools.combinations(range(6), k))
        assert np.isclose(scores[pruning.keep_hardest(scores, k)].sum(), best)
