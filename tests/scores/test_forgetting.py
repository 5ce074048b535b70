import numpy as np

from datadiet_jax.scores import forgetting


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
    # Seed 0: example 0 forgotten once, example 1 never learned (+inf).
    np.testing.assert_array_equal(scores[0], [1, np.inf])
    # Seed 1 saw the same outcomes for swapped examples.
    np.testing.assert_array_equal(scores[1], [np.inf, 1])


def _hand_stats(count, learned):
    count = np.asarray(count, np.int32)
    return {
        "previous": np.zeros(count.shape, bool),
        "count": count,
        "learned": np.asarray(learned, bool),
        "seen": np.full(count.shape, 40, np.int32),
    }


def test_never_learned_by_one_seed_ranks_above_every_learned_example_after_the_mean(tmp_path):
    from datadiet_jax.pipeline import artifacts
    from datadiet_jax.report import numbers
    from datadiet_jax.scores import pruning

    # 3 seeds, 5 examples. Example 1 is forgotten 19 times by every seed; example 3 is learned by
    # seeds 0 and 1 (never forgotten) but never by seed 2; example 4 is never learned at all.
    stats = _hand_stats(
        count=[[0, 19, 2, 0, 0], [1, 19, 0, 0, 0], [0, 19, 1, 0, 0]],
        learned=[[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]],
    )
    per_seed = forgetting.forgetting_scores(stats)
    np.testing.assert_array_equal(per_seed[:, 3], [0, 0, np.inf])
    path = str(tmp_path / "forgetting.npz")
    prov = {"dataset": "d", "split": "train", "num_examples": 5, "label_noise": None}
    artifacts.save_scores(path, per_seed, np.arange(5), {**prov, "score": "forgetting"})
    mean = artifacts.load_scores(path, prov)["mean"]
    np.testing.assert_allclose(mean, [1 / 3, 19, 1, np.inf, np.inf])
    # Ranking: the infinite ones first, tied by index (3 before 4), then 19, 1, 1/3.
    np.testing.assert_array_equal(pruning.hardest_first(mean), [3, 4, 1, 2, 0])
    np.testing.assert_array_equal(pruning.kept_indices(mean, "hardest", prune_fraction=0.6), [3, 4])
    np.testing.assert_array_equal(pruning.kept_indices(mean, "easiest", prune_fraction=0.6), [0, 2])
    np.testing.assert_array_equal(
        pruning.kept_indices(mean, "offset", prune_fraction=0.6, offset=1), [1, 4]
    )
    kept = pruning.kept_indices(mean, "ccs", prune_fraction=0.4, beta=0.0, seed=0)
    assert len(kept) == 3 and len(set(kept)) == 3
    # Reports: no NaN and no crash; the infinite scores rank highest.
    assert numbers.roc_auc(mean, np.array([0, 0, 0, 1, 1], bool)) == 1.0
    detection = numbers.noise_detection(mean, np.array([0, 0, 0, 1, 1], bool), ks=[2])
    assert detection["precision_at_k"] == {2: 1.0}
    names, matrix = numbers.spearman_matrix({"forgetting": mean, "rank": np.arange(5.0)})
    assert np.all(np.isfinite(matrix))
    counts, edges, num_inf = numbers.score_histograms({"forgetting": mean}, bins=2)["forgetting"]
    assert num_inf == 2 and counts.sum() == 3 and np.all(np.isfinite(edges))
