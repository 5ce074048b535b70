"""Stratified selection: per-class quotas, class-balanced strategies and CCS (coverage-centric).

Like every strategy, these return sorted `[M] int64` dataset positions; randomness comes only from
an explicit `seed`. Class quotas are proportional to class size by largest-remainder rounding and
sum to exactly the budget.

Usage:

    quotas = class_quotas(labels, num_keep=500)  # {label: quota}, summing to 500
    keep = class_balanced(keep_hardest, scores, labels, 500)  # [500] int64
    keep = ccs(scores, 500, beta=0.1, seed=0)  # [500] int64
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from datadiet_jax.scores.pruning.ranking import (
    check_num_keep,
    hardest_first,
    own_scores,
    sorted_int64,
)


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
    num_keep = check_num_keep(num_keep, labels.shape[0])
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
    scores = own_scores(scores)
    labels = check_labels(labels, scores.shape[0])
    kept = []
    for label, quota in class_quotas(labels, num_keep).items():
        if quota == 0:
            continue
        members = np.flatnonzero(labels == label)
        class_kw = dict(kw)
        if "seed" in class_kw:
            class_kw["seed"] = [int(class_kw["seed"]), label]
        kept.append(members[np.asarray(select_fn(scores[members], quota, **class_kw))])
    return sorted_int64(np.concatenate(kept))


def check_labels(labels, num_examples: int) -> np.ndarray:
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
    scores = own_scores(scores)
    n = scores.shape[0]
    num_keep = check_num_keep(num_keep, n)
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
    return sorted_int64(np.concatenate(kept))
