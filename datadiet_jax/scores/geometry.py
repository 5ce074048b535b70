"""Scores from penultimate features (`penultimate.penultimate_features`): per seed, higher = harder.

- `moderate_distances`: Moderate-DS (Xia et al., ICLR 2023). The Euclidean distance of an
  example's feature to its class's centre, the PER-DIMENSION MEDIAN of the class's features as in
  the authors' code (tmllab/Moderate-DS `get_median`; the paper does not say median or mean). Its
  selection rule is the 'moderate' strategy of `pruning.kept_indices`.
- `prototype_distances`: prototypicality (Sorscher et al., NeurIPS 2022), the cosine distance
  `1 - cos(x, c)` to the nearest prototype c of the example's class. The paper clusters
  self-supervised embeddings; here k-means runs WITHIN EACH CLASS on the model's own
  L2-normalized penultimate features (its "supervised prototypes"; `num_prototypes=1` is the
  class centroid). The k-means is spherical, seeded by k-means++ from `[seed, k, class]`, with a
  fixed number of Lloyd iterations; an emptied cluster keeps its centroid, and a class with fewer
  examples than `num_prototypes` has one prototype per example.

Both take `features [K, N, D]` and `labels [N]` and return `[K, N] float32`, each seed scored on
its own features; average over seeds (axis 0) for one score per example.

Usage:

    feats = penultimate_features(model, variables, images)  # [K, N, D]
    moderate = geometry.moderate_distances(feats, labels)  # [K, N] float32
    proto = geometry.prototype_distances(feats, labels, num_prototypes=1, seed=0)  # [K, N]
"""

from __future__ import annotations

import numpy as np

from datadiet_jax.scores.pruning import stratified


def check_features(features, num_examples: int | None = None) -> np.ndarray:
    """Validates per-seed features; returns them as `[K, N, D] float64`.

    Raises:
      ValueError: not [K, N, D], a length other than `num_examples`, or NaN/inf entries.
    """
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(
            f"features have shape {arr.shape}; pass [K, N, D] per-seed features "
            "(features[None] for one seed)."
        )
    if num_examples is not None and arr.shape[1] != num_examples:
        raise ValueError(
            f"features have {arr.shape[1]} examples but labels have {num_examples}; pass "
            "features and labels of the same examples."
        )
    if not np.isfinite(arr).all():
        raise ValueError("features contain NaN or inf; recompute them from finite model weights.")
    return arr


def _labels(labels, features) -> np.ndarray:
    return stratified.check_labels(labels, features.shape[1])


def moderate_distances(features, labels) -> np.ndarray:
    """Moderate-DS distance: `||f_i - median_{j: y_j = y_i} f_j||_2`, per-dimension median.

    Args:
      features: [K, N, D] per-seed penultimate features.
      labels: [N] int class labels.
    Returns:
      [K, N] float32 distances (higher = farther from its class centre = harder).
    """
    feats = check_features(features)
    labels = _labels(labels, feats)
    out = np.empty(feats.shape[:2], np.float64)
    for c in np.unique(labels):
        members = labels == c
        centre = np.median(feats[:, members], axis=1, keepdims=True)  # [K, 1, D]
        out[:, members] = np.linalg.norm(feats[:, members] - centre, axis=-1)
    return out.astype(np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on unit vectors (squared Euclidean = 2 - 2 cos) -> [k, D] centroids."""
    centres = [x[rng.integers(len(x))]]
    d2 = np.sum((x - centres[0]) ** 2, axis=1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centres.append(x[i])
        d2 = np.minimum(d2, np.sum((x - x[i]) ** 2, axis=1))
    return np.stack(centres)


def spherical_kmeans(x: np.ndarray, k: int, *, seed, iterations: int) -> np.ndarray:
    """Spherical k-means of unit vectors `x [n, D]` -> `[min(k, n), D]` unit centroids.

    k-means++ initialization from `np.random.default_rng(seed)`, then `iterations` Lloyd steps
    (assign by the largest cosine similarity, ties to the lower centroid; a centroid is the
    renormalized mean of its members; an empty cluster keeps its centroid).
    """
    k = min(int(k), len(x))
    centres = _kmeans_pp(x, k, np.random.default_rng(seed))
    for _ in range(int(iterations)):
        assign = np.argmax(x @ centres.T, axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        filled = np.bincount(assign, minlength=k) > 0
        centres[filled] = _normalize(sums[filled])
    return centres


def prototype_distances(
    features, labels, *, num_prototypes: int = 1, seed: int = 0, iterations: int = 20
) -> np.ndarray:
    """Prototypicality: cosine distance to the nearest k-means prototype of the example's class.

    Args:
      features: [K, N, D] per-seed penultimate features (L2-normalized here).
      labels: [N] int class labels; k-means runs within each class.
      num_prototypes: k-means clusters per class (1: the normalized class mean).
      seed: k-means++ seed; class c of seed k uses `np.random.default_rng([seed, k, c])`.
      iterations: Lloyd iterations.
    Returns:
      [K, N] float32 `1 - max_c cos(f_i, c)` over the prototypes c of its class, in [0, 2]
      (higher = less prototypical = harder). Deterministic given `seed`.
    """
    feats = _normalize(check_features(features))
    labels = _labels(labels, feats)
    if int(num_prototypes) < 1 or int(iterations) < 0:
        raise ValueError(
            f"num_prototypes is {num_prototypes} and iterations {iterations}; use "
            "num_prototypes >= 1 and iterations >= 0."
        )
    out = np.empty(feats.shape[:2], np.float64)
    for k in range(feats.shape[0]):
        for c in np.unique(labels):
            members = labels == c
            x = feats[k, members]
            rng_seed = [int(seed), k, int(c)]
            centres = spherical_kmeans(x, num_prototypes, seed=rng_seed, iterations=iterations)
            out[k, members] = 1.0 - np.max(x @ centres.T, axis=1)
    return np.clip(out, 0.0, 2.0).astype(np.float32)
