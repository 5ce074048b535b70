"""Selection strategies: functions from `[N]` scores (and features) to the sorted indices kept.

  ranking        validation of scores, kept counts, hardest / easiest / random / offset windows
  stratified     per-class quotas, class-balanced strategies, CCS (coverage-centric coresets)
  dual_sampling  DUAL's Beta sampling over mean predictions, for high pruning ratios
  geometric      feature-geometry selectors: Moderate-DS, k-center greedy, herding, D2 pruning
  strategies     the registry `STRATEGIES` and `kept_indices`

`prune_fraction` is the share of the examples REMOVED; the kept indices are positions in the
dataset's own order, sorted. Scores are higher = harder, finite or +inf
(`scores.inputs.invalid_scores`).

Usage:

    from datadiet_jax.scores import pruning
    keep = pruning.kept_indices(grand.mean(0), "hardest", prune_fraction=0.3)  # [M] int64
    keep = pruning.kept_indices(None, "kcenter", keep_fraction=0.5, features=feats,
                                labels=labels)  # feats [K, N, D]
"""

from datadiet_jax.scores.pruning.dual_sampling import dual_sample
from datadiet_jax.scores.pruning.geometric import herding, k_center_greedy, moderate_window
from datadiet_jax.scores.pruning.ranking import (
    check_window,
    hardest_first,
    keep_easiest,
    keep_hardest,
    num_to_keep,
    offset_window,
    random_subset,
    validate_scores,
)
from datadiet_jax.scores.pruning.strategies import (
    FEATURE_STRATEGIES,
    STRATEGIES,
    kept_indices,
)
from datadiet_jax.scores.pruning.stratified import (
    ccs,
    class_balanced,
    class_quotas,
    stratum_allocation,
)

__all__ = [
    "FEATURE_STRATEGIES",
    "STRATEGIES",
    "ccs",
    "check_window",
    "class_balanced",
    "class_quotas",
    "dual_sample",
    "hardest_first",
    "herding",
    "k_center_greedy",
    "keep_easiest",
    "keep_hardest",
    "kept_indices",
    "moderate_window",
    "num_to_keep",
    "offset_window",
    "random_subset",
    "stratum_allocation",
    "validate_scores",
]
