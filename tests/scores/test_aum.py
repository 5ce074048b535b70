"""AUM: hand-computed margins, averaging over presentations, masking, sign, never-presented."""

import numpy as np
import pytest

from datadiet_jax.scores import aum, pruning


def test_margins_hand_computed():
    logits = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0], [0.5, 0.5, -1.0]], np.float32)
    labels = np.array([0, 1, 1])
    # 3 - max(1, 2) = 1; 1 - max(3, 2) = -2; a tie with another class gives 0.
    np.testing.assert_array_equal(aum.margins(logits, labels), [1.0, -2.0, 0.0])


def test_two_presentations_are_averaged_and_masked_entries_ignored():
    state = aum.init_aum(1, 3)
    # Step 1: examples 0, 1, 2; example 2 is padding (mask 0) and must be ignored.
    logits1 = np.array([[[2.0, 0.0], [0.0, 1.0], [9.0, -9.0]]], np.float32)
    state = aum.update_aum(
        state, np.array([[0, 1, 2]]), logits1, np.array([[0, 0, 1]]), np.array([[1, 1, 0]])
    )
    # Step 2: examples 2, 0, 1, all real.
    logits2 = np.array([[[1.0, 4.0], [0.0, 4.0], [3.0, 0.0]]], np.float32)
    state = aum.update_aum(
        state, np.array([[2, 0, 1]]), logits2, np.array([[1, 0, 0]]), np.ones((1, 3))
    )
    # Example 0: margins 2 and -4 -> -1. Example 1: -1 and 3 -> 1. Example 2: only 3 (step 2).
    np.testing.assert_array_equal(state["count"], [[2, 2, 1]])
    np.testing.assert_allclose(aum.area_under_margin(state), [[-1.0, 1.0, 3.0]])
    np.testing.assert_allclose(aum.aum_scores(state), [[1.0, -1.0, -3.0]])


def test_seeds_are_independent():
    state = aum.init_aum(2, 2)
    logits = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 2.0]]], np.float32)
    state = aum.update_aum(
        state, np.array([[0, 1], [1, 0]]), logits, np.zeros((2, 2), int), np.ones((2, 2))
    )
    np.testing.assert_allclose(aum.area_under_margin(state), [[1.0, 1.0], [-2.0, -2.0]])


def test_never_presented_examples_raise_instead_of_nan():
    state = aum.init_aum(2, 4)
    state = aum.update_aum(
        state,
        np.array([[0, 1], [0, 1]]),
        np.zeros((2, 2, 3)),
        np.zeros((2, 2), int),
        np.array([[1, 1], [1, 0]]),
    )
    with pytest.raises(ValueError, match=r"never presented.*train_epochs >= 1") as err:
        aum.aum_scores(state)
    assert "5 (seed, example) pairs" in str(err.value) and "\n" not in str(err.value)


def test_hardest_by_aum_keeps_the_lowest_margin_examples():
    state = aum.init_aum(1, 6)
    margin = np.array([[2.0, -3.0, 0.5, -1.0, 4.0, 1.0]], np.float32)
    state = aum.accumulate_margins(state, np.arange(6)[None], margin, np.ones((1, 6)))
    score = aum.aum_scores(state).mean(axis=0)
    kept = pruning.kept_indices(score, "hardest", prune_fraction=0.5, seed=0)
    np.testing.assert_array_equal(np.sort(kept), [1, 2, 3])  # margins -3, -1, 0.5
