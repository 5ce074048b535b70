"""DUAL's Beta sampling: size, uniqueness, seeds, where the kept examples concentrate, refusals."""

import numpy as np
import pytest

from datadiet_jax.scores import pruning
from datadiet_jax.scores.pruning import dual_sampling

N = 4000
MEAN = np.linspace(0.0, 1.0, N)  # mean predictions spread evenly, 0 and 1 included
SCORES = np.ones(N)
SCORES[1199:1209] = 2.0  # the 10 highest scores: the anchor, mean prediction ~0.301


def test_parameters_follow_the_code():
    a, b = dual_sampling.beta_parameters(SCORES, MEAN, 0.9, 4.0)
    anchor = MEAN[1199:1209].mean()
    # b = 15 * (1 - 0.3011) * (1 - 0.9**4 = 0.3439) = 3.605; a = 16 - b.
    np.testing.assert_allclose(b, 15 * (1 - anchor) * (1 - 0.9**4))
    np.testing.assert_allclose([a + b, b], [16.0, 3.6060482], rtol=1e-6)


def test_size_sorted_unique_and_deterministic_by_seed():
    kept = dual_sampling.dual_sample(SCORES, 400, mean_probs=MEAN, seed=3)
    assert kept.dtype == np.int64 and kept.shape == (400,)
    assert np.all(np.diff(kept) > 0)  # sorted, no duplicates
    again = dual_sampling.dual_sample(SCORES, 400, mean_probs=MEAN, seed=3)
    np.testing.assert_array_equal(kept, again)
    other = dual_sampling.dual_sample(SCORES, 400, mean_probs=MEAN, seed=4)
    assert len(np.intersect1d(kept, other)) < 300


@pytest.mark.parametrize(
    "prune_fraction, expected_mean, tolerance",
    # Beta means a / 16: r = 0.9 -> a = 12.394, mean 0.7746; r = 0.5 -> b = 15 * 0.6989 * 0.9375
    # = 9.830, a = 6.170, mean 0.3856. Keeping 50% flattens the draw a little toward 0.5.
    [(0.9, 0.7746, 0.02), (0.5, 0.3856, 0.03)],
)
def test_kept_examples_follow_the_ratio_adaptive_beta(prune_fraction, expected_mean, tolerance):
    num_keep = round(N * (1 - prune_fraction))
    kept = dual_sampling.dual_sample(SCORES, num_keep, mean_probs=MEAN, seed=0)
    assert abs(MEAN[kept].mean() - expected_mean) < tolerance
    if prune_fraction == 0.9:
        # The mode (a - 1) / (a + b - 2) = 11.394 / 14 = 0.8139: the fullest tenth is [0.8, 0.9),
        # easy examples, where the paper moves the selection at high pruning ratios.
        counts = np.histogram(MEAN[kept], bins=10, range=(0.0, 1.0))[0]
        assert np.argmax(counts) == 8
        assert counts[:4].sum() < 0.02 * num_keep  # hard examples are almost never kept


def test_weights_multiply_the_score():
    scores = SCORES.copy()
    scores[::2] = 0.0  # zero weight: never drawn
    kept = dual_sampling.dual_sample(scores, 1000, mean_probs=MEAN, seed=1)
    assert np.all(kept % 2 == 1)
    with pytest.raises(ValueError, match="only 2000 examples with a positive weight"):
        dual_sampling.dual_sample(scores, 2500, mean_probs=MEAN, seed=1)


def test_select_registry_entry():
    kept = pruning.kept_indices(
        SCORES, "dual_sampling", prune_fraction=0.9, seed=5, mean_probs=MEAN.astype(np.float32)
    )
    np.testing.assert_array_equal(
        kept, dual_sampling.dual_sample(SCORES, 400, mean_probs=MEAN, seed=5)
    )
    with pytest.raises(ValueError, match="needs mean_probs"):
        pruning.kept_indices(SCORES, "dual_sampling", prune_fraction=0.9)


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        dual_sampling.dual_sample(SCORES, 10, mean_probs=MEAN[:-1])
    with pytest.raises(ValueError, match="finite and >= 0"):
        dual_sampling.dual_sample(-SCORES, 10, mean_probs=MEAN)
    with pytest.raises(ValueError, match="undefined"):
        dual_sampling.dual_sample(SCORES, 10, mean_probs=np.ones(N))
