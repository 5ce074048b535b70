"""DUAL's pruning-ratio-adaptive Beta sampling (Cho et al., ICML 2025), for high pruning ratios.

Follows `beta_sampling` in the official code (github.com/behaapyy/dual-pruning,
`exp_cifar/data_subset.py`, flags `--sample beta --c_d 4`), which weights every example by a Beta
density evaluated at its MEAN PREDICTION (the mean assigned-label probability over the first T
training epochs, `trajectory.mean_true_probs`), not at its score rank, times its DUAL score:

  anchor = mean prediction averaged over the 10 highest-scoring examples
  b = 15 * (1 - anchor) * (1 - r ** c_d),  a = 16 - b    (r = the pruned share)
  weight_i = Beta(mean_i; a, b) * score_i

and draws the kept examples without replacement with probabilities proportional to the weights.
As r grows, b shrinks and the density's mode (a-1)/(a+b-2) moves toward easier examples (high
mean prediction); at r -> 0 the mode sits at the anchor's difficulty.

Usage:

    keep = dual_sample(scores, num_keep, mean_probs=mean_probs, prune_fraction=0.9, seed=0)
    a, b = beta_parameters(scores, mean_probs, prune_fraction=0.9)  # a + b = 16
"""

from __future__ import annotations

import numpy as np

from datadiet_jax.scores.pruning import ranking

# Constants of the official code: the Beta parameters sum to 16 and b is at most 15; the anchor is
# the mean prediction of the 10 highest-scoring examples.
BETA_TOTAL = 16.0
BETA_SCALE = 15.0
NUM_ANCHOR = 10
# Mean predictions are float32 probabilities: the density is evaluated inside [EDGE, 1 - EDGE], so
# a saturated 0 or 1 does not give an infinite density.
EDGE = 1e-7


def beta_parameters(scores, mean_probs, prune_fraction: float, c_d: float = 4.0):
    """The code's Beta parameters (a, b) for a pruned share `prune_fraction` in [0, 1).

    Args:
      scores: `[N]` float DUAL scores (higher = harder). mean_probs: `[N]` float in [0, 1].
      prune_fraction: r, the share removed. c_d: the exponent of r (4 in the paper's runs).

    Returns:
      (a, b) floats with a + b = 16.
    """
    order = ranking.hardest_first(scores)
    anchor = float(np.mean(np.asarray(mean_probs, np.float64)[order[:NUM_ANCHOR]]))
    b = BETA_SCALE * (1.0 - anchor) * (1.0 - float(prune_fraction) ** float(c_d))
    if not b > 0.0:
        raise ValueError(
            f"DUAL's Beta sampling is undefined: b = 15 * (1 - {anchor:.4g}) * (1 - r^c_d) = "
            f"{b:.4g} (the hardest examples' mean prediction is 1); use 'hardest' for this run."
        )
    return BETA_TOTAL - b, b


def dual_sample(
    scores,
    num_keep: int,
    *,
    mean_probs,
    prune_fraction: float | None = None,
    seed=0,
    c_d: float = 4.0,
) -> np.ndarray:
    """Keeps `num_keep` examples drawn by DUAL's Beta sampling (deterministic given `seed`).

    Args:
      scores: `[N]` float DUAL scores, finite and >= 0 (the mean over seeds of `dual_scores`).
      num_keep: number kept, in [1, N].
      mean_probs: `[N]` float in [0, 1], the mean assigned-label probability over the same first T
        epochs (the mean over seeds of `trajectory.mean_true_probs`).
      prune_fraction: r, the share removed; defaults to 1 - num_keep / N.
      seed: int (or sequence of ints) for `np.random.default_rng`.
      c_d: the exponent of r in the Beta parameters (the code's `--c_d`, default 4).

    Returns:
      `[num_keep] int64` sorted kept indices, without duplicates.

    Raises:
      ValueError: on missing or invalid mean_probs, negative or infinite scores, or fewer than
        `num_keep` examples with a positive weight.
    """
    scores = ranking.own_scores(scores)
    n = scores.shape[0]
    if mean_probs is None:
        raise ValueError(
            "strategy 'dual_sampling' needs mean_probs, the [N] mean assigned-label probability "
            "over the DUAL scoring epochs (trajectory.mean_true_probs(state).mean(0))."
        )
    mean = np.asarray(mean_probs, np.float64)
    if mean.shape != (n,) or not np.all((mean >= 0.0) & (mean <= 1.0)):
        raise ValueError(
            f"mean_probs must be [N={n}] probabilities in [0, 1], got shape {mean.shape}; pass "
            "trajectory.mean_true_probs(state).mean(0)."
        )
    if not np.all(np.isfinite(scores) & (scores >= 0.0)):
        raise ValueError(
            "DUAL sampling weights by the score: scores must be finite and >= 0 (DUAL scores are)."
        )
    num_keep = ranking.check_num_keep(num_keep, n)
    r = 1.0 - num_keep / n if prune_fraction is None else float(prune_fraction)
    if not 0.0 <= r < 1.0:
        raise ValueError(f"prune_fraction {prune_fraction} is outside [0, 1).")
    a, b = beta_parameters(scores, mean, r, c_d)
    x = np.clip(mean, EDGE, 1.0 - EDGE)
    # The density up to its normalising constant, which cancels in the probabilities.
    log_density = (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x)
    weight = np.exp(log_density - log_density.max()) * scores
    positive = int(np.count_nonzero(weight > 0.0))
    if positive < num_keep:
        raise ValueError(
            f"DUAL sampling can draw only {positive} examples with a positive weight (score > 0) "
            f"but {num_keep} are kept; use a higher pruning ratio or the 'hardest' strategy."
        )
    rng = np.random.default_rng(seed)
    kept = rng.choice(n, size=num_keep, replace=False, p=weight / weight.sum())
    return ranking.sorted_int64(kept)
