"""Forgetting statistics (Toneva et al., 2019), as a small pure update usable in any training loop.

A forgetting event is an example that was classified correctly at one presentation during training
and incorrectly at its next one. Examples never classified correctly get an infinite score (as in
Toneva et al.'s code), so they rank above every learned one; over K seeds the mean of an example
that any one seed never learned is +inf too. Pruning breaks ties by the lower index
(`pruning.hardest_first`).

State (K seeds, N examples), a dict of arrays:
  previous: [K, N] bool, correct at the last presentation.
  count:    [K, N] int32, forgetting events so far.
  learned:  [K, N] bool, ever classified correctly.
  seen:     [K, N] int32, presentations so far.

Usage:

    stats = init_forgetting(num_seeds=K, num_examples=N)
    stats = update_forgetting(stats, index, logits.argmax(-1) == labels, mask)  # each [K, B]
    scores = forgetting_scores(stats)  # [K, N] float32, +inf where never learned
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def init_forgetting(num_seeds: int, num_examples: int) -> dict[str, jnp.ndarray]:
    """Returns empty forgetting statistics for `num_seeds` x `num_examples`."""
    shape = (num_seeds, num_examples)
    return {
        "previous": jnp.zeros(shape, bool),
        "count": jnp.zeros(shape, jnp.int32),
        "learned": jnp.zeros(shape, bool),
        "seen": jnp.zeros(shape, jnp.int32),
    }


def update_forgetting(stats, index, correct, mask):
    """Folds one batch of presentations into the statistics (pure; jit- and vmap-friendly).

    Args:
      stats: the state dict above, arrays [K, N].
      index: [K, B] int dataset indices presented at this step.
      correct: [K, B] bool, whether each presentation was classified correctly.
      mask: [K, B], 0 for padding (ignored). Indices must be unique within a row where mask is 1.

    Returns:
      The updated state dict.
    """
    valid = jnp.asarray(mask) > 0
    correct = jnp.asarray(correct, bool)
    rows = jnp.arange(index.shape[0])[:, None]
    # Padding entries are routed to an out-of-range index and dropped by the scatter.
    n = stats["count"].shape[1]
    idx = jnp.where(valid, index, n)
    prev = stats["previous"][rows, jnp.minimum(idx, n - 1)]
    forgotten = prev & ~correct & valid
    return {
        "previous": stats["previous"].at[rows, idx].set(correct, mode="drop"),
        "count": stats["count"].at[rows, idx].add(forgotten.astype(jnp.int32), mode="drop"),
        "learned": stats["learned"].at[rows, idx].max(correct, mode="drop"),
        "seen": stats["seen"].at[rows, idx].add(1, mode="drop"),
    }


def forgetting_scores(stats) -> np.ndarray:
    """Forgetting score per seed and example: `[K, N] float32`.

    The number of forgetting events; an example never classified correctly (including one never
    presented) gets +inf, above every learned example. Higher means harder.
    """
    count = np.asarray(stats["count"], np.float32)
    return np.where(np.asarray(stats["learned"]), count, np.float32(np.inf))
