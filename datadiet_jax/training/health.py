"""Training health: divergence (a non-finite loss) and collapse (no fit of its own data).

A diverged or collapsed training must never be reported as a plain accuracy. Divergence is caught
inside the jitted K-seed step: `update_nonfinite` records, per seed, the first step whose loss is
not finite (`nonfinite_step [K] int32`, -1 while healthy); the loop reads it at every epoch end
and before every checkpoint, so no checkpoint of a diverged seed is taken for healthy. Collapse
is judged after training: a network that fits its own kept examples (eval mode, no
augmentation) no better than at initialization has collapsed, whatever its test accuracy. Its
training accuracy must beat both the initial accuracy and the share of the most common kept
label by `margin`, and its training loss must fall below the initial loss. A low *test* accuracy
alone is not a collapse: a hard or noisy subset may be fitted well and still generalize badly.
Statuses are 'ok', 'collapsed' and 'diverged'; summaries and figures average only 'ok' runs and
say how many they left out.

Usage:

    from datadiet_jax.training import health
    nonfinite = health.update_nonfinite(health.init_nonfinite(K), loss, step)    # [K] int32
    majority = health.majority_share(labels[kept])
    status = health.statuses(init_fit, final_fit, nonfinite, majority)   # fits: accuracy, loss
    ok_rows, num_left_out = health.healthy(rows)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging

from datadiet_jax.scores import sharding

OK, COLLAPSED, DIVERGED = "ok", "collapsed", "diverged"
# Training accuracy on the kept set must beat max(initial, majority share) by this much.
COLLAPSE_MARGIN = 0.02
# The fit check reads at most this many kept examples (evenly spaced in dataset order).
FIT_CHECK_EXAMPLES = 10_000


def init_nonfinite(num_seeds: int) -> jnp.ndarray:
    """`[K] int32` filled with -1: no seed has had a non-finite loss."""
    return jnp.full((num_seeds,), -1, jnp.int32)


def update_nonfinite(nonfinite_step, loss, step):
    """Records the first step at which each seed's loss is not finite (pure, jit-friendly).

    Args:
      nonfinite_step: `[K] int32`, -1 while the seed is healthy.
      loss: `[K]` float, this step's loss per seed.
      step: `[K]` int, the step number just taken per seed.

    Returns:
      `[K] int32`, unchanged for healthy seeds and for seeds already recorded.
    """
    bad = ~jnp.isfinite(loss)
    return jnp.where((nonfinite_step < 0) & bad, step.astype(jnp.int32), nonfinite_step)


def fit_sample(kept: np.ndarray) -> np.ndarray:
    """The kept indices the fit check reads: all, or `FIT_CHECK_EXAMPLES` evenly spaced ones."""
    kept = np.asarray(kept)
    if len(kept) <= FIT_CHECK_EXAMPLES:
        return kept
    return kept[np.linspace(0, len(kept) - 1, FIT_CHECK_EXAMPLES).round().astype(np.int64)]


def majority_share(labels: np.ndarray) -> float:
    """Share of the most common label: what predicting one class scores. labels: [M] int."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0.0
    return float(np.bincount(labels).max() / labels.size)


def statuses(
    init_fit: Mapping[str, Sequence[float]],
    final_fit: Mapping[str, Sequence[float]],
    nonfinite_step: Sequence[int],
    majority: float,
    margin: float = COLLAPSE_MARGIN,
) -> list[str]:
    """The status of each seed.

    Args:
      init_fit, final_fit: {'accuracy': [K], 'loss': [K]} on the kept examples (eval mode), at
        initialization and at the end of training.
      nonfinite_step: `[K]` first non-finite step per seed, -1 if none.
      majority: share of the most common kept label.
      margin: how much training accuracy must beat max(initial accuracy, majority).

    Returns:
      `[K]` list of 'ok', 'collapsed' or 'diverged'.
    """
    out = []
    for k, step in enumerate(nonfinite_step):
        acc, loss = float(final_fit["accuracy"][k]), float(final_fit["loss"][k])
        if step >= 0 or not (np.isfinite(acc) and np.isfinite(loss)):
            out.append(DIVERGED)
            continue
        floor = max(float(init_fit["accuracy"][k]), majority) + margin
        learned = acc > floor and loss < float(init_fit["loss"][k])
        out.append(OK if learned else COLLAPSED)
    return out


def healthy(rows: Sequence[Mapping]) -> tuple[list[Mapping], int]:
    """Splits result rows into the healthy ones and a count of the rest.

    Rows without a 'status' (results written before statuses existed) count as healthy.

    Returns:
      (rows whose status is 'ok', number of rows left out).
    """
    kept = [r for r in rows if r.get("status") in (None, "", OK)]
    return kept, len(rows) - len(kept)


def check_score_training(stats, labels: np.ndarray, epoch: int, name: str = "score training"):
    """Warns when a score training has not learned by `epoch` (> 0); returns the accuracies.

    The training accuracy of each seed over its last presentations (train mode, from the
    forgetting statistics' `previous` [K, N]) should beat the share of the most common label by
    `COLLAPSE_MARGIN`. A seed that does not is either collapsed (a network that predicts one class
    gives scores that mean nothing) or scored very early on a hard or tiny problem; an absl
    warning names it, so the scores are never used unannounced.

    Args:
      stats: forgetting statistics, with `previous [K, N] bool` and `seen [K, N] int`.
      labels: [N] training labels (as trained on).
      epoch: the score epoch (0, the initialization, is not checked).
      name: the training's name, for the message.

    Returns:
      `[K]` float training accuracies (empty at epoch 0).
    """
    if epoch <= 0:
        return np.zeros((0,))
    seen = np.asarray(stats["seen"]) > 0
    correct = np.asarray(stats["previous"]) & seen
    accuracy = correct.sum(1) / np.maximum(seen.sum(1), 1)
    majority = majority_share(labels)
    for k in np.flatnonzero(accuracy <= majority + COLLAPSE_MARGIN):
        logging.warning(
            "%s: seed %d has not learned by epoch %d (training accuracy %.3f, majority label "
            "%.3f); its scores are those of an untrained or collapsed network. If this is not "
            "meant, lower config.train.learning_rate or set config.train.warmup_epochs.",
            name,
            k,
            epoch,
            accuracy[k],
            majority,
        )
    return accuracy


def warn_if_small(name: str, num_examples: int, batch_size: int) -> bool:
    """Warns once when a training set is smaller than one batch; returns whether it is.

    Such a training runs (every step is one padded batch of all its examples, the padding masked
    out), but its statistics rest on very few examples and its batch-size-dependent settings
    (learning rate, schedule length) were not chosen for it.
    """
    if num_examples >= batch_size:
        return False
    logging.warning(
        "%s trains on %d examples, fewer than one batch (config.train.batch_size=%d): every step "
        "is one padded batch of all of them; its numbers rest on very few examples.",
        name,
        num_examples,
        batch_size,
    )
    return True


def score_summary(per_seed) -> str:
    """One line about a `[K, N]` score array: the mean of its finite values and the count of
    infinite ones (+inf: never-learned examples of forgetting), never 'nan'."""
    per_seed = np.asarray(per_seed)
    finite = np.isfinite(per_seed)
    pos_inf = int(np.isposinf(per_seed).sum())
    if not finite.any():
        return f"no finite value, {pos_inf} +inf"
    return (
        f"mean {per_seed[finite].mean():.4f} over {int(finite.sum())} finite values, {pos_inf} +inf"
    )


def report_diverged(stats, reported: set, spec, spe: int) -> set:
    """Reports the seeds whose loss became non-finite since the last check (`spec`: the
    `loop.TrainSpec`; `spe`: its steps per epoch); returns all reported. `spec.on_diverge`
    'raise' raises one ValueError naming the seed and step; 'mark' logs one error line."""
    steps = np.asarray(sharding.fetch(stats["nonfinite_step"]))  # multi-process too
    new = [k for k in np.flatnonzero(steps >= 0) if k not in reported]
    for k in new:
        message = (
            f"{spec.name}: seed {k} diverged (non-finite loss at step {steps[k]}, epoch "
            f"{steps[k] / spe:.2f}); lower config.train.learning_rate or set "
            "config.train.warmup_epochs"
        )
        if spec.on_diverge == "raise":
            raise ValueError(message + ".")
        logging.error("%s; its result is marked 'diverged'.", message)
    return reported | set(new)
