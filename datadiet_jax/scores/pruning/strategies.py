"""The strategy registry and `kept_indices`: a named strategy from scores to kept indices.

`kept_indices(scores, 'hardest', prune_fraction=0.3)` keeps the 70% highest-scoring examples;
`prune_fraction` is always the share REMOVED (or give `keep_fraction`, exactly one of them).
Kept indices come back sorted, as `[M] int64` positions in the dataset's own order. `STRATEGIES`
maps each name to its function; `FEATURE_STRATEGIES` need `features=`.

Usage:

    keep = kept_indices(scores, "hardest", prune_fraction=0.3)  # [M] int64
    keep = kept_indices(scores, "hardest_balanced", keep_fraction=0.5, labels=labels)
    keep = kept_indices(scores, "ccs", prune_fraction=0.5, beta=0.1, seed=0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from datadiet_jax.scores.pruning import dual_sampling, geometric, ranking, stratified


def _random_in_class(class_scores, num_keep, *, seed):
    return ranking.random_subset(np.shape(class_scores)[0], num_keep, seed)


# Entries share one signature:
# (scores, num_keep, *, labels, seed, offset, beta, num_examples, features, mean_probs).
# 'random_balanced' ignores scores: zeros only carry the class sizes through class_balanced.
STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "hardest": lambda scores, k, **_: ranking.keep_hardest(scores, k),
    "easiest": lambda scores, k, **_: ranking.keep_easiest(scores, k),
    "random": lambda scores, k, *, num_examples, seed, **_: ranking.random_subset(
        num_examples, k, seed
    ),
    "offset": lambda scores, k, *, offset, **_: ranking.offset_window(scores, offset, k),
    "hardest_balanced": lambda scores, k, *, labels, **_: stratified.class_balanced(
        ranking.keep_hardest, scores, labels, k
    ),
    "easiest_balanced": lambda scores, k, *, labels, **_: stratified.class_balanced(
        ranking.keep_easiest, scores, labels, k
    ),
    "random_balanced": lambda scores, k, *, num_examples, labels, seed, **_: (
        stratified.class_balanced(_random_in_class, np.zeros(num_examples), labels, k, seed=seed)
    ),
    "ccs": lambda scores, k, *, seed, beta, **_: stratified.ccs(scores, k, beta=beta, seed=seed),
    "dual_sampling": lambda scores, k, *, seed, mean_probs, **_: dual_sampling.dual_sample(
        scores, k, mean_probs=mean_probs, seed=seed
    ),
    "moderate": lambda scores, k, **_: geometric.moderate_window(scores, k),
    "kcenter": geometric.kcenter_strategy,
    "herding": geometric.herding_strategy,
    "d2": geometric.d2_strategy,
}

_SCORE_FREE = ("random", "random_balanced", "kcenter", "herding")
# Strategies that select on penultimate features (`kept_indices(..., features=...)`).
FEATURE_STRATEGIES = ("kcenter", "herding", "d2")


def _select(
    strategy: str,
    scores,
    *,
    prune_fraction: float,
    labels=None,
    seed: int = 0,
    offset: int = 0,
    beta: float = 0.0,
    num_examples: int | None = None,
    features=None,
    mean_probs=None,
) -> np.ndarray:
    """Prunes a dataset with a named strategy from `STRATEGIES`.

    Args:
      strategy: one of `STRATEGIES` ('hardest', 'easiest', 'random', 'offset', 'hardest_balanced',
        'easiest_balanced', 'random_balanced', 'ccs', 'dual_sampling', and the feature-geometry
        'moderate', 'kcenter', 'herding', 'd2' of `geometric`).
      scores: `[N]` float, or None for the random strategies.
      prune_fraction: fraction of examples pruned, in [0, 1).
      labels: `[N]` int class labels; needed by the '*_balanced' strategies.
      seed: int seed of the random strategies and of 'ccs'.
      offset: hardest examples skipped by 'offset'.
      beta: hardest fraction dropped by 'ccs' (and per class by 'd2').
      num_examples: N; only needed when neither scores, labels nor features are given.
      features: `[N, D]` or per-seed `[K, N, D]` penultimate features, needed by 'kcenter',
        'herding' and 'd2' (seeds combine as in `geometric.combine_features`).
      mean_probs: `[N]` mean assigned-label probabilities; needed by 'dual_sampling' (DUAL's Beta
        sampling evaluates its density there; `trajectory.mean_true_probs(state).mean(0)`).

    Returns:
      `[ranking.num_to_keep(N, prune_fraction)] int64` sorted kept indices.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown pruning strategy {strategy!r}; valid names: {', '.join(sorted(STRATEGIES))}"
        )
    sizes = [int(np.shape(x)[0]) for x in (scores, labels) if x is not None and np.ndim(x)]
    if features is not None and np.ndim(features) >= 2:
        sizes.append(int(np.shape(features)[-2]))
    if num_examples is not None:
        sizes.append(int(num_examples))
    if not sizes:
        raise ValueError(
            f"strategy {strategy!r} needs scores, labels, features or num_examples to know N"
        )
    n = sizes[0]
    if scores is not None:
        scores = ranking.validate_scores(scores, n)
    elif strategy not in _SCORE_FREE:
        raise ValueError(f"strategy {strategy!r} needs scores; pass the [N] mean scores")
    if labels is not None:
        labels = stratified.check_labels(labels, n)
    elif strategy.endswith("_balanced"):
        stratified.check_labels(None, n)
    if num_examples is not None and int(num_examples) != n:
        raise ValueError(
            f"num_examples is {num_examples} but scores/labels have {n} entries; "
            "pass matching sizes"
        )
    if features is not None:
        features = geometric.combine_features(features, n)
    num_keep = ranking.num_to_keep(n, prune_fraction)
    return STRATEGIES[strategy](
        scores,
        num_keep,
        labels=labels,
        seed=seed,
        offset=offset,
        beta=beta,
        num_examples=n,
        features=features,
        mean_probs=mean_probs,
    )


def kept_indices(
    scores,
    strategy: str = "hardest",
    *,
    keep_fraction: float | None = None,
    prune_fraction: float | None = None,
    **options,
) -> np.ndarray:
    """The indices KEPT by a named strategy, given the share kept or the share pruned.

    `kept_indices(scores, 'hardest', keep_fraction=0.5)` keeps the half with the highest scores
    (higher = harder); `prune_fraction=0.5` says the same from the other side. Exactly one of
    the two is given.

    Args:
      scores: `[N]` float, the mean over seeds (`grand.mean(0)`); None for 'random' and
        'random_balanced'.
      strategy: one of `STRATEGIES`: 'hardest', 'easiest', 'random', 'offset' (skip the
        `offset` hardest, keep the next ones), 'hardest_balanced', 'easiest_balanced',
        'random_balanced' (each class keeps its share), 'ccs' (coverage-centric coresets,
        dropping the hardest `beta` first), 'dual_sampling' (DUAL's Beta sampling for high
        pruning ratios; needs `mean_probs`), 'moderate', 'kcenter', 'herding', 'd2' (`geometric`).
      keep_fraction: share of the examples kept, in (0, 1].
      prune_fraction: share removed, in [0, 1).
      **options: `labels`, `seed`, `offset`, `beta`, `num_examples`, `features`, `mean_probs`,
        as in `_select`.

    Returns:
      `[M] int64` sorted positions in the dataset's own order.
    """
    if (keep_fraction is None) == (prune_fraction is None):
        raise ValueError(
            "give kept_indices keep_fraction (the share kept) or prune_fraction (the share "
            "removed), exactly one."
        )
    if keep_fraction is not None:
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction {keep_fraction} is outside (0, 1]; use e.g. 0.5.")
        prune_fraction = 1.0 - keep_fraction
    return _select(strategy, scores, prune_fraction=prune_fraction, **options)
