import numpy as np

from datadiet_jax import forgetting


def test_forgetting_counts_hand_sequence():
    # One seed, 3 examples. Presentations (correct?) per step, example 2 is padding in step 2.
    stats = forgetting.init_forgetting(1, 3)
    steps = [
        ([0, 1, 2], [True, False, True], [1, 1, 1]),
        ([0, 1, 2], [False, True, True], [1, 1, 0]),  # 0 forgotten; 2 masked out
        ([0, 1, 2], [True, False, False], [1, 1, 1]),  # 1 forgotten, 2 forgotten
        ([0, 1, 2], [False, True, False], [1, 1, 1]),  # 0 forgotten again
    ]
    for idx, correct, mask in steps:
        stats = forgetting.update_forgetting(
            stats, np.array([idx]), np.array([correct]), np.array([mask], np.float32)
        )
    np.testing.assert_array_equal(stats["count"], [[2, 1, 1]])
    np.testing.assert_array_equal(stats["seen"], [[4, 4, 3]])
    np.testing.assert_array_equal(forgetting.forgetting_scores(stats), [[2, 1, 1]])


def test_never_learned_ranks_highest_and_seeds_are_independent():
    stats = forgetting.init_forgetting(2, 2)
    for correct in ([True, False], [False, False], [True, False]):
        stats = forgetting.update_forgetting(
            stats, np.array([[0, 1], [1, 0]]), np.array([correct, correct]), np.ones((2, 2))
        )
    scores = forgetting.forgetting_scores(stats)
    # Seed 0: example 0 forgotten once, example 1 never learned (3 presentations).
    np.testing.assert_array_equal(scores[0], [1, 3])
    # Seed 1 saw the same outcomes for swapped examples.
    np.testing.assert_array_equal(scores[1], [3, 1])
