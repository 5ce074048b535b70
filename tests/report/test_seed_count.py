"""Seed-count correlations on hand-made rankings."""

import numpy as np
import pytest

from datadiet_jax.report import seed_count


def _by_hand(a, b):
    """1 - 6 sum d^2 / (n (n^2 - 1)) for rankings without ties."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    n = len(a)
    return 1 - 6 * np.sum((ra - rb) ** 2) / (n * (n**2 - 1))


def test_spearman_of_hand_made_rankings():
    assert seed_count.spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert seed_count.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # One adjacent swap in 5: d = (0, 0, 1, -1, 0), 1 - 6 * 2 / 120 = 0.9.
    assert seed_count.spearman([1, 2, 3, 4, 5], [1, 2, 4, 3, 5]) == pytest.approx(0.9)


def test_seed_counts_are_powers_of_two_then_k():
    assert seed_count.seed_counts(1) == (1,)
    assert seed_count.seed_counts(4) == (1, 2, 4)
    assert seed_count.seed_counts(10) == (1, 2, 4, 8, 10)
    with pytest.raises(ValueError, match="at least one seed"):
        seed_count.seed_counts(0)


def test_correlations_of_a_hand_made_score_matrix():
    per_seed = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            [0.2, 0.1, 0.3, 0.4, 0.6, 0.5],
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
            [0.1, 0.3, 0.2, 0.5, 0.4, 0.6],
        ]
    )
    rows = seed_count.seed_count_correlations(per_seed)
    got = {(r["comparison"], r["num_seeds"], r["seed"]): r["spearman"] for r in rows}
    mean = per_seed.mean(0)  # [0.25, 0.275, 0.3, 0.4, 0.425, 0.45]: ranks 1..6, no ties
    for s in range(4):
        assert got[("seed_vs_all", 1, s)] == pytest.approx(_by_hand(per_seed[s], mean))
        rest = np.delete(per_seed, s, 0).mean(0)
        assert got[("seed_vs_rest", 1, s)] == pytest.approx(seed_count.spearman(per_seed[s], rest))
    assert got[("seed_vs_all", 1, 0)] == pytest.approx(1.0)
    assert got[("seed_vs_all", 1, 2)] == pytest.approx(-1.0)
    assert got[("first_k_vs_all", 4, -1)] == pytest.approx(1.0)
    # Mean of seeds 0 and 1: [0.15, 0.15, 0.3, 0.4, 0.55, 0.55], ties at both ends: average
    # ranks [1.5, 1.5, 3, 4, 5.5, 5.5] against [1..6]; Pearson of those ranks.
    ranks = np.array([1.5, 1.5, 3, 4, 5.5, 5.5])
    expected = np.corrcoef(ranks, np.arange(1, 7))[0, 1]
    assert got[("first_k_vs_all", 2, -1)] == pytest.approx(expected)
    # First 2 against the other 2: the other mean is [0.35, 0.4, 0.3, 0.4, 0.3, 0.35].
    other = per_seed[2:].mean(0)
    np.testing.assert_allclose(_avg_ranks(per_seed[:2].mean(0)), ranks)
    expected = np.corrcoef(ranks, _avg_ranks(other))[0, 1]
    assert got[("first_k_vs_rest", 2, -1)] == pytest.approx(expected)
    assert ("first_k_vs_rest", 4, -1) not in got  # no seeds left


def _avg_ranks(x):
    """Average ranks (1-based) by brute force: 1 + #smaller + (#equal - 1) / 2."""
    x = np.asarray(x)
    return np.array([1 + np.sum(x < v) + (np.sum(x == v) - 1) / 2 for v in x])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\[K, N\] matrix"):
        seed_count.seed_count_correlations(np.zeros(5))
    with pytest.raises(ValueError, match="NaN/-inf"):
        seed_count.seed_count_correlations(np.array([[1.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN/-inf"):
        seed_count.seed_count_correlations(np.array([[1.0, -np.inf], [1.0, 2.0]]))


def test_never_learned_forgetting_scores_rank_first():
    # +inf (never learned) ranks above every finite score, in each seed and in the mean.
    per_seed = np.array([[np.inf, 1.0, 0.0, 2.0], [np.inf, 0.0, 1.0, 2.0], [3.0, 1.0, 0.0, 2.0]])
    rows = seed_count.seed_count_correlations(per_seed)
    by = {(r["comparison"], r["num_seeds"], r["seed"]): r["spearman"] for r in rows}
    # Mean [inf, 0.67, 0.33, 2]: ranks [4, 2, 1, 3]; seed 1 ranks [4, 1, 2, 3].
    assert by[("seed_vs_all", 1, 0)] == pytest.approx(1.0)
    assert by[("seed_vs_all", 1, 1)] == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"must lie in \[1, 2\]"):
        seed_count.seed_count_correlations(np.array([[1.0, 2.0], [1.0, 2.0]]), counts=(3,))
