"""How many seeds a score needs: rank agreement of few-seed means with the K-seed mean.

Scores are averaged over K independently trained seeds; one seed alone ranks the examples
differently. Pure numpy on a saved `[K, N]` score matrix:

  seed_vs_all       each seed against the mean of all K (the seed is part of that mean)
  seed_vs_rest      each seed against the mean of the other K - 1 (disjoint seeds)
  first_k_vs_all    the mean of the first k seeds against the mean of all K
  first_k_vs_rest   the mean of the first k seeds against the mean of the other K - k

Correlations are Spearman's: Pearson correlations of average ranks (ties share a rank). Scores may
hold +inf (the forgetting score of an example a seed never learned); it ranks above every finite
score, and a mean over seeds that includes it is +inf.

Usage:

    from datadiet_jax.report import seed_count
    rows = seed_count.seed_count_correlations(el2n)     # el2n [K, N]; 'comparison', 'spearman'
    rho = seed_count.spearman(el2n[0], el2n.mean(0))    # one seed against the K-seed mean
"""

from __future__ import annotations

import numpy as np

from datadiet_jax.report import numbers
from datadiet_jax.scores import inputs


def spearman(a, b) -> float:
    """Spearman rank correlation of two `[N]` score vectors (NaN when one is constant)."""
    _, matrix = numbers.spearman_matrix({"a": a, "b": b})
    return float(matrix[0, 1])


def seed_counts(num_seeds: int) -> tuple[int, ...]:
    """1, 2, 4, ... below K, then K: the numbers of seeds to compare."""
    if int(num_seeds) < 1:
        raise ValueError(f"num_seeds is {num_seeds}; a score needs at least one seed")
    counts, k = [], 1
    while k < num_seeds:
        counts.append(k)
        k *= 2
    return (*counts, int(num_seeds))


def _per_seed(per_seed) -> np.ndarray:
    arr = np.asarray(per_seed, np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
        raise ValueError(
            f"per-seed scores have shape {arr.shape}; pass the [K, N] matrix of a score file "
            "(N >= 2)"
        )
    if inputs.invalid_scores(arr).any():  # +inf (never-learned forgetting) is valid
        raise ValueError("per-seed scores contain NaN/-inf values; recompute them")
    return arr


def seed_count_correlations(per_seed, counts=None) -> list[dict]:
    """Spearman correlations of single seeds and of first-k means with the K-seed mean.

    Args:
      per_seed: `[K, N]` float scores of K seeds.
      counts: numbers of seeds k for the first-k comparisons (default `seed_counts(K)`), each in
        [1, K].

    Returns:
      Rows {'comparison', 'num_seeds', 'seed', 'spearman'}: 'seed_vs_all' and 'seed_vs_rest'
      per seed (num_seeds 1, seed = its index; 'seed_vs_rest' needs K >= 2), 'first_k_vs_all'
      and 'first_k_vs_rest' per k (seed -1; 'first_k_vs_rest' for k < K).
    """
    scores = _per_seed(per_seed)
    k_all = scores.shape[0]
    counts = seed_counts(k_all) if counts is None else tuple(int(k) for k in counts)
    if any(not 1 <= k <= k_all for k in counts):
        raise ValueError(f"seed counts {list(counts)} must lie in [1, {k_all}]")
    mean = scores.mean(0)
    rows = []
    for s in range(k_all):
        rows.append(
            dict(comparison="seed_vs_all", num_seeds=1, seed=s, spearman=spearman(scores[s], mean))
        )
        if k_all > 1:
            rest = np.delete(scores, s, axis=0).mean(0)
            rows.append(
                dict(
                    comparison="seed_vs_rest",
                    num_seeds=1,
                    seed=s,
                    spearman=spearman(scores[s], rest),
                )
            )
    for k in counts:
        first = scores[:k].mean(0)
        rows.append(
            dict(comparison="first_k_vs_all", num_seeds=k, seed=-1, spearman=spearman(first, mean))
        )
        if k < k_all:
            rows.append(
                dict(
                    comparison="first_k_vs_rest",
                    num_seeds=k,
                    seed=-1,
                    spearman=spearman(first, scores[k:].mean(0)),
                )
            )
    return rows
