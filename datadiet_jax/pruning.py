"""Selection strategies: pure numpy functions from scores to the indices that are kept.

Every strategy returns the kept indices as a sorted (ascending) `[M] int64` array of positions in
the dataset's own order; the data itself is never re-sorted. Scores are `[N]` float (the mean over
the score seeds); a higher score means a harder, more important example. +inf is a valid score
(the forgetting score of an example never learned): it ranks above every finite score. Ties are
broken by index with stable sorts (among equal scores the lower index comes first), so every
result is deterministic, and randomness comes only from an explicit `seed` through
`np.random.default_rng`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


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
    bad = ~(np.isfinite(arr) | np.isposinf(arr))
    if bad.any():
        raise ValueError(
            f"scores contain {int(bad.sum())} NaN/-inf values (first at index "
            f"{int(np.flatnonzero(bad)[0])}); recompute the scores (lower the learning rate if the "
            "score run diverged)"
        )
    return arr


def _own_scores(scores) -> np.ndarray:
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


def _check_num_keep(num_keep: int, num_examples: int) -> int:
    if not 1 <= int(num_keep) <= num_examples:
        raise ValueError(
            f"num_keep is {num_keep} but must be in [1, {num_examples}]; "
            "derive it with num_to_keep(num_examples, prune_fraction)"
        )
    return int(num_keep)


def _sorted_int64(indices) -> np.ndarray:
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
    scores = _own_scores(scores)
    num_keep = _check_num_keep(num_keep, scores.shape[0])
    return _sorted_int64(hardest_first(scores)[:num_keep])


def keep_easiest(scores, num_keep: int) -> np.ndarray:
    """Keeps the `num_keep` lowest-scoring examples.

    Args:
      scores: `[N]` float.
      num_keep: number of examples kept, in [1, N].

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    scores = _own_scores(scores)
    num_keep = _check_num_keep(num_keep, scores.shape[0])
    return _sorted_int64(np.argsort(scores, kind="stable")[:num_keep])


def random_subset(num_examples: int, num_keep: int, seed) -> np.ndarray:
    """Keeps a uniformly random subset (no global random state).

    Args:
      num_examples: N.
      num_keep: number of examples kept, in [1, N].
      seed: int (or sequence of ints) for `np.random.default_rng`.

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    num_keep = _check_num_keep(num_keep, int(num_examples))
    rng = np.random.default_rng(seed)
    return _sorted_int64(rng.choice(int(num_examples), size=num_keep, replace=False))


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
    scores = _own_scores(scores)
    check_window(scores.shape[0], offset, num_keep)
    order = hardest_first(scores)
    return _sorted_int64(order[int(offset) : int(offset) + int(num_keep)])


def class_quotas(labels, num_keep: int) -> dict[int, int]:
    """Per-class budgets proportional to class size, by largest-remainder rounding.

    Args:
      labels: `[N]` int class labels.
      num_keep: total budget, in [1, N].

    Returns:
      {label: quota} over the classes present; quotas sum to `num_keep` and never exceed the class
      size. Equal remainders go to the smaller label.
    """
    labels = np.asarray(labels)
    num_keep = _check_num_keep(num_keep, labels.shape[0])
    classes, sizes = np.unique(labels, return_counts=True)
    exact = num_keep * sizes / labels.shape[0]
    quotas = np.floor(exact).astype(np.int64)
    remainders = exact - quotas
    extra = num_keep - int(quotas.sum())
    quotas[np.argsort(-remainders, kind="stable")[:extra]] += 1
    return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}


def class_balanced(select_fn: Callable, scores, labels, num_keep: int, **kw) -> np.ndarray:
    """Applies a strategy within each class, with per-class quotas from `class_quotas`.

    Args:
      select_fn: `select_fn(class_scores, class_num_keep, **kw) -> positions` within the class
        subset (e.g. `keep_hardest`). A `seed` keyword is combined with the class label,
        `seed=[seed, label]`, so each class draws independently.
      scores: `[N]` float.
      labels: `[N]` int class labels.
      num_keep: total number of examples kept.
      **kw: passed on to `select_fn`.

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    scores = _own_scores(scores)
    labels = _check_labels(labels, scores.shape[0])
    kept = []
    for label, quota in class_quotas(labels, num_keep).items():
        if quota == 0:
            continue
        members = np.flatnonzero(labels == label)
        class_kw = dict(kw)
        if "seed" in class_kw:
            class_kw["seed"] = [int(class_kw["seed"]), label]
        kept.append(members[np.asarray(select_fn(scores[members], quota, **class_kw))])
    return _sorted_int64(np.concatenate(kept))


def _check_labels(labels, num_examples: int) -> np.ndarray:
    if labels is None:
        raise ValueError("class-balanced selection needs labels; pass labels=[N] int class labels")
    labels = np.asarray(labels)
    if labels.shape != (num_examples,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels have shape {labels.shape} and dtype {labels.dtype}; pass [{num_examples}] "
            "integer class labels in the dataset order"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels contain {labels.min()}; class labels must be >= 0")
    return labels


def stratum_allocation(stratum_sizes, budget: int) -> np.ndarray:
    """Splits a budget evenly over strata, redistributing what small strata cannot give.

    Non-empty strata are visited from smallest to largest (ties by stratum index); each takes
    min(size, remaining_budget // strata_left), so leftovers flow to the larger strata.

    Args:
      stratum_sizes: `[S]` int number of examples per stratum.
      budget: number of examples to take, at most sum(stratum_sizes).

    Returns:
      `[S] int64` number taken from each stratum; sums to `budget`.
    """
    sizes = np.asarray(stratum_sizes, dtype=np.int64)
    if budget > int(sizes.sum()):
        raise ValueError(f"budget {budget} exceeds the {int(sizes.sum())} examples in the strata")
    taken = np.zeros_like(sizes)
    order = [s for s in np.argsort(sizes, kind="stable") if sizes[s] > 0]
    remaining = int(budget)
    for position, s in enumerate(order):
        share = remaining // (len(order) - position)
        taken[s] = min(int(sizes[s]), share)
        remaining -= int(taken[s])
    return taken


def ccs(scores, num_keep: int, *, beta: float, num_strata: int = 50, seed) -> np.ndarray:
    """Coverage-centric coreset selection (Zheng et al., ICLR 2023).

    Drops the hardest floor(beta * N) examples (likely mislabeled), splits the score range of the
    rest into `num_strata` equal-width strata (the maximum falls in the last one), shares the budget
    evenly over the non-empty strata with `stratum_allocation`, and samples uniformly at random
    within each stratum.

    Args:
      scores: `[N]` float.
      num_keep: number of examples kept; at most N - floor(beta * N).
      beta: fraction of hardest examples dropped first, in [0, 1).
      num_strata: number of equal-width score strata, >= 1.
      seed: int (or sequence of ints) for `np.random.default_rng`.

    Returns:
      `[num_keep] int64` sorted kept indices.
    """
    scores = _own_scores(scores)
    n = scores.shape[0]
    num_keep = _check_num_keep(num_keep, n)
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"ccs beta is {beta}; set it to the hard-cutoff fraction in [0, 1)")
    if int(num_strata) < 1:
        raise ValueError(
            f"ccs num_strata is {num_strata}; use at least 1 stratum (the paper uses 50)"
        )
    # The small tolerance keeps e.g. 0.29 * 100 = 28.999999999999996 from dropping one too few.
    num_drop = int(np.floor(float(beta) * n + 1e-9))
    if num_keep > n - num_drop:
        raise ValueError(
            f"ccs keeps {num_keep} examples but only {n - num_drop} remain after dropping the "
            f"hardest {num_drop}; lower beta or raise the prune fraction"
        )
    pool = np.sort(hardest_first(scores)[num_drop:])
    pool_scores = scores[pool]
    finite = np.isfinite(pool_scores)
    # Strata span the finite scores; +inf scores (never learned) join the hardest stratum.
    low, high = (pool_scores[finite].min(), pool_scores[finite].max()) if finite.any() else (0, 0)
    strata = np.full(pool.shape[0], num_strata - 1 if high > low else 0, dtype=np.int64)
    if high > low:
        scaled = np.floor((pool_scores[finite] - low) / (high - low) * num_strata)
        strata[finite] = np.minimum(scaled.astype(np.int64), num_strata - 1)
    taken = stratum_allocation(np.bincount(strata, minlength=num_strata), num_keep)
    rng = np.random.default_rng(seed)
    kept = [
        rng.choice(pool[strata == s], size=int(taken[s]), replace=False)
        for s in range(num_strata)
        if taken[s] > 0
    ]
    return _sorted_int64(np.concatenate(kept))


def _random_in_class(class_scores, num_keep, *, seed):
    return random_subset(np.shape(class_scores)[0], num_keep, seed)


# Entries share one signature: (scores, num_keep, *, labels, seed, offset, beta, num_examples).
# 'random_balanced' ignores scores: zeros only carry the class sizes through class_balanced.
STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "hardest": lambda scores, k, **_: keep_hardest(scores, k),
    "easiest": lambda scores, k, **_: keep_easiest(scores, k),
    "random": lambda scores, k, *, num_examples, seed, **_: random_subset(num_examples, k, seed),
    "offset": lambda scores, k, *, offset, **_: offset_window(scores, offset, k),
    "hardest_balanced": lambda scores, k, *, labels, **_: class_balanced(
        keep_hardest, scores, labels, k
    ),
    "easiest_balanced": lambda scores, k, *, labels, **_: class_balanced(
        keep_easiest, scores, labels, k
    ),
    "random_balanced": lambda scores, k, *, num_examples, labels, seed, **_: class_balanced(
        _random_in_class, np.zeros(num_examples), labels, k, seed=seed
    ),
    "ccs": lambda scores, k, *, seed, beta, **_: ccs(scores, k, beta=beta, seed=seed),
}

_SCORE_FREE = ("random", "random_balanced")


def select(
    strategy: str,
    scores,
    *,
    prune_fraction: float,
    labels=None,
    seed: int = 0,
    offset: int = 0,
    beta: float = 0.0,
    num_examples: int | None = None,
) -> np.ndarray:
    """Prunes a dataset with a named strategy from `STRATEGIES`.

    Args:
      strategy: one of `STRATEGIES` ('hardest', 'easiest', 'random', 'offset', 'hardest_balanced',
        'easiest_balanced', 'random_balanced', 'ccs').
      scores: `[N]` float, or None for the random strategies.
      prune_fraction: fraction of examples pruned, in [0, 1).
      labels: `[N]` int class labels; needed by the '*_balanced' strategies.
      seed: int seed of the random strategies and of 'ccs'.
      offset: hardest examples skipped by 'offset'.
      beta: hardest fraction dropped by 'ccs'.
      num_examples: N; only needed when neither scores nor labels are given.

    Returns:
      `[num_to_keep(N, prune_fraction)] int64` sorted kept indices.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown pruning strategy {strategy!r}; valid names: {', '.join(sorted(STRATEGIES))}"
        )
    sizes = [int(np.shape(x)[0]) for x in (scores, labels) if x is not None and np.ndim(x)]
    if num_examples is not None:
        sizes.append(int(num_examples))
    if not sizes:
        raise ValueError(f"strategy {strategy!r} needs scores, labels or num_examples to know N")
    n = sizes[0]
    if scores is not None:
        scores = validate_scores(scores, n)
    elif strategy not in _SCORE_FREE:
        raise ValueError(f"strategy {strategy!r} needs scores; pass the [N] mean scores")
    if labels is not None:
        labels = _check_labels(labels, n)
    elif strategy.endswith("_balanced"):
        _check_labels(None, n)
    if num_examples is not None and int(num_examples) != n:
        raise ValueError(
            f"num_examples is {num_examples} but scores/labels have {n} entries; "
            "pass matching sizes"
        )
    num_keep = num_to_keep(n, prune_fraction)
    return STRATEGIES[strategy](
        scores, num_keep, labels=labels, seed=seed, offset=offset, beta=beta, num_examples=n
    )
