"""Rankings of scores: validation, kept counts, hardest / easiest / random / offset windows.

Every strategy returns the kept indices as a sorted (ascending) `[M] int64` array of positions in
the dataset's own order; the data itself is never re-sorted. Scores are `[N]` float (the mean over
the score seeds); a higher score means a harder, more important example. +inf is a valid score
(the forgetting score of an example never learned): it ranks above every finite score. Ties are
broken by index with stable sorts (among equal scores the lower index comes first), so every
result is deterministic, and randomness comes only from an explicit `seed` through
`np.random.default_rng`.

Usage:

    order = hardest_first(scores)  # [N] int64, hardest first
    keep = keep_hardest(scores, num_to_keep(len(scores), prune_fraction=0.3))  # [M] int64
    keep = offset_window(scores, offset=100, num_keep=500)  # skips the 100 hardest
    keep = random_subset(len(scores), 500, seed=0)
"""

from __future__ import annotations

import numpy as np

from datadiet_jax.scores import inputs


def validate_scores(scores, num_examples: int) -> np.ndarray:
    """Checks that scores are numbers (finite or +inf) and match the dataset size.

    Args:
      scores: `[N]` float array-like.
      num_examples: N, the number of examples in the dataset.

    Returns:
      `[N] float64` copy of the scores.

    Raises:
      ValueError: on a wrong shape or length, or on NaN/-inf entries.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"scores have shape {arr.shape}, expected [N]; average the per-seed [K, N] matrix over "
            "seeds (axis 0) before pruning"
        )
    if arr.shape[0] != num_examples:
        raise ValueError(
            f"scores have {arr.shape[0]} entries but the dataset has {num_examples} examples; "
            "use the scores file computed on this dataset split"
        )
    bad = inputs.invalid_scores(arr)
    if bad.any():
        raise ValueError(
            f"scores contain {int(bad.sum())} NaN/-inf values (first at index "
            f"{int(np.flatnonzero(bad)[0])}); recompute the scores (lower the learning rate if the "
            "score run diverged)"
        )
    return arr


def own_scores(scores) -> np.ndarray:
    """`validate_scores` against the scores' own length (shape and finiteness only)."""
    return validate_scores(scores, np.shape(scores)[0] if np.ndim(scores) == 1 else -1)


def num_to_keep(num_examples: int, prune_fraction: float) -> int:
    """Number of examples kept after pruning a fraction of the dataset.

    Args:
      num_examples: N >= 1.
      prune_fraction: fraction pruned, in [0, 1).

    Returns:
      round(N * (1 - prune_fraction)) with halves rounded up, and at least 1.
    """
    if int(num_examples) < 1:
        raise ValueError(
            f"num_examples is {num_examples}; pruning needs a dataset with at least one example"
        )
    f = float(prune_fraction)
    if not 0.0 <= f < 1.0:
        raise ValueError(
            f"prune fraction {prune_fraction} is outside [0, 1); "
            "set config.prune.fractions to values in [0, 1)"
        )
    return max(1, int(np.floor(num_examples * (1.0 - f) + 0.5)))


def check_num_keep(num_keep: int, num_examples: int) -> int:
    if not 1 <= int(num_keep) <= num_examples:
        raise ValueError(
            f"num_keep is {num_keep} but must be in [1, {num_examples}]; "
            "derive it with num_to_keep(num_examples, prune_fraction)"
        )
    return int(num_keep)


def sorted_int64(indices) -> np.ndarray:
    return np.sort(np.asarray(indices, dtype=np.int64))


def hardest_first(scores) -> np.ndarray:
    """Indices ordered by descending score, ties by ascending index.

    Args:
      scores: `[N]` float.

    Returns:
      `[N] int64` permutation, hardest example first.
    """
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").astype(np.int64)


def keep_hardest(scores, num_keep: int) -> np.ndarray:
    """Keeps the `num_keep` highest-scoring examples (the paper's main strategy).

    Args:
      scores: `[N]` float.
      num_keep: number of examples kept, in [1, N].

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    return _keep_first(hardest_first, scores, num_keep)


def keep_easiest(scores, num_keep: int) -> np.ndarray:
    """Keeps the `num_keep` lowest-scoring examples.

    Args:
      scores: `[N]` float.
      num_keep: number of examples kept, in [1, N].

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    return _keep_first(lambda s: np.argsort(s, kind="stable"), scores, num_keep)


def _keep_first(order, scores, num_keep: int) -> np.ndarray:
    """The sorted first `num_keep` indices of `order(scores)` (a `[N]` permutation)."""
    scores = own_scores(scores)
    num_keep = check_num_keep(num_keep, scores.shape[0])
    return sorted_int64(order(scores)[:num_keep])


def random_subset(num_examples: int, num_keep: int, seed) -> np.ndarray:
    """Keeps a uniformly random subset (no global random state).

    Args:
      num_examples: N.
      num_keep: number of examples kept, in [1, N].
      seed: int (or sequence of ints) for `np.random.default_rng`.

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    num_keep = check_num_keep(num_keep, int(num_examples))
    rng = np.random.default_rng(seed)
    return sorted_int64(rng.choice(int(num_examples), size=num_keep, replace=False))


def check_window(num_examples: int, offset: int, num_keep: int) -> None:
    """Checks an offset window [offset, offset + num_keep) of the hardest-first order.

    Call it before training starts so a bad sweep fails at once.

    Args:
      num_examples: N.
      offset: number of hardest examples skipped, >= 0.
      num_keep: window length, >= 1.

    Raises:
      ValueError: when the window is empty or does not fit inside [0, N).
    """
    if int(offset) < 0:
        raise ValueError(
            f"offset is {offset}; it must be >= 0 (the number of hardest examples skipped)"
        )
    if int(num_keep) < 1:
        raise ValueError(f"offset window keeps {num_keep} examples; lower the prune fraction")
    if int(offset) + int(num_keep) > int(num_examples):
        raise ValueError(
            f"offset window [{offset}, {int(offset) + int(num_keep)}) exceeds the {num_examples} "
            f"examples; use offsets <= {int(num_examples) - int(num_keep)} for this prune fraction"
        )


def offset_window(scores, offset: int, num_keep: int) -> np.ndarray:
    """Skips the `offset` hardest examples and keeps the next `num_keep` (paper Figure 2).

    Args:
      scores: `[N]` float.
      offset: number of hardest examples skipped; 0 is the same as `keep_hardest`.
      num_keep: number of examples kept.

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    scores = own_scores(scores)
    check_window(scores.shape[0], offset, num_keep)
    order = hardest_first(scores)
    return sorted_int64(order[int(offset) : int(offset) + int(num_keep)])
