"""Feature-geometry scores: Moderate-DS distances and prototypicality, hand-computed."""

import numpy as np
import pytest

from datadiet_jax.scores import geometry


def test_moderate_distances_hand_computed_per_dimension_median():
    # Class 0: (0,0), (2,0), (4,2): per-dimension median (2, 0) (the mean would be (2, 2/3)).
    # Class 1: (10,10), (10,14): median (10, 12).
    feats = np.array([[0, 0], [2, 0], [10, 10], [4, 2], [10, 14]], np.float32)
    labels = np.array([0, 0, 1, 0, 1])
    want = np.array([2.0, 0.0, 2.0, np.sqrt(8.0), 2.0])
    got = geometry.moderate_distances(np.stack([feats, 3 * feats]), labels)
    assert got.shape == (2, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.stack([want, 3 * want]), rtol=1e-6)  # each seed its own


def test_prototype_distance_one_prototype_is_cosine_to_the_class_mean_direction():
    # Class 0: (1,0) and (0,3) normalize to e1, e2; prototype (1,1)/sqrt(2); cos = 1/sqrt(2).
    # Class 1: (0,-2) alone: its own prototype, distance 0.
    feats = np.array([[[1, 0], [0, 3], [0, -2]]], np.float32)
    got = geometry.prototype_distances(feats, np.array([0, 0, 1]))
    want = [1 - 1 / np.sqrt(2), 1 - 1 / np.sqrt(2), 0.0]
    np.testing.assert_allclose(got[0], want, atol=1e-6)


def _at(degrees, radius=1.0):
    rad = np.deg2rad(degrees)
    return radius * np.array([np.cos(rad), np.sin(rad)])


@pytest.mark.parametrize("seed", range(5))
def test_prototype_distances_two_clear_clusters(seed):
    # Directions 0, 10 and 90, 100 degrees: whatever the k-means++ start, Lloyd's steps end
    # with prototypes at 5 and 95 degrees (from centres 0 and 10: {0} and {10, 90, 100} ->
    # centres 0 and 67 -> {0, 10} and {90, 100}), so every distance is 1 - cos(5 degrees).
    feats = np.stack([_at(0), _at(10, 2.0), _at(90), _at(100, 0.5), _at(45)])[None]
    labels = np.array([0, 0, 0, 0, 1])
    got = geometry.prototype_distances(feats, labels, num_prototypes=2, seed=seed)
    want = [1 - np.cos(np.deg2rad(5))] * 4 + [0.0]
    np.testing.assert_allclose(got[0], want, atol=1e-6)


def test_prototype_distances_are_deterministic_given_seed():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 60, 4))
    labels = rng.integers(0, 3, 60)
    a = geometry.prototype_distances(feats, labels, num_prototypes=3, seed=7)
    b = geometry.prototype_distances(feats, labels, num_prototypes=3, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 60) and (a >= 0).all() and (a <= 2).all()


def test_geometry_errors():
    feats = np.zeros((1, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"pass \[K, N, D\]"):
        geometry.moderate_distances(feats[0], np.zeros(3, int))
    with pytest.raises(ValueError, match="labels have shape"):
        geometry.moderate_distances(feats, np.zeros(4, int))
    with pytest.raises(ValueError, match="NaN or inf"):
        geometry.prototype_distances(np.full((1, 3, 2), np.nan), np.zeros(3, int))
    with pytest.raises(ValueError, match="num_prototypes is 0"):
        geometry.prototype_distances(feats + 1, np.zeros(3, int), num_prototypes=0)
