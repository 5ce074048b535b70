"""Area under the margin (AUM; Pleiss et al., NeurIPS 2020), as a pure update for any training loop.

The margin of one presentation of an example is the logit of its assigned label minus the largest
other logit (train mode, as the network sees the example during training); its AUM is the margin
averaged over all its presentations. A low (negative) AUM marks a mislabeled or hard example.
The pipeline keeps the HIGHEST scores as the hardest, so `aum_scores` (and `aum_epochNNN.npz`) is
the NEGATED AUM: higher = lower margin = harder. `area_under_margin` returns the AUM itself.

State (K seeds, N examples), a dict of arrays:
  margin_sum: [K, N] float32, sum of the margins of every presentation so far.
  count:      [K, N] int32, presentations so far.

Usage:

    state = init_aum(num_seeds=K, num_examples=N)
    state = update_aum(state, index, logits, labels, mask)  # [K, B], [K, B, C], [K, B], [K, B]
    scores = aum_scores(state)  # [K, N] float32, the negated AUM
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def init_aum(num_seeds: int, num_examples: int) -> dict[str, jnp.ndarray]:
    """Returns an empty AUM state for `num_seeds` x `num_examples`."""
    shape = (num_seeds, num_examples)
    return {"margin_sum": jnp.zeros(shape, jnp.float32), "count": jnp.zeros(shape, jnp.int32)}


def margins(logits, labels):
    """Assigned-label logit minus the largest other logit.

    Args:
      logits: [..., C] float. labels: [...] int in [0, C).
    Returns:
      margin: [...] float32.
    """
    logits = jnp.asarray(logits, jnp.float32)
    onehot = jnp.arange(logits.shape[-1]) == jnp.asarray(labels)[..., None]
    assigned = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
    return assigned - other


def accumulate_margins(state, index, margin, mask):
    """Folds one batch of precomputed margins into the state (pure; jit- and vmap-friendly).

    Args:
      state: the state dict above, arrays [K, N].
      index: [K, B] int dataset indices presented at this step.
      margin: [K, B] float, the margin of each presentation (see `margins`).
      mask: [K, B], 0 for padding (ignored). Indices must be unique within a row where mask is 1.
    Returns:
      The updated state dict.
    """
    valid = jnp.asarray(mask) > 0
    rows = jnp.arange(index.shape[0])[:, None]
    n = state["count"].shape[1]
    idx = jnp.where(valid, index, n)  # padding goes out of range and is dropped by the scatter
    margin = jnp.where(valid, jnp.asarray(margin, jnp.float32), 0.0)
    return {
        "margin_sum": state["margin_sum"].at[rows, idx].add(margin, mode="drop"),
        "count": state["count"].at[rows, idx].add(1, mode="drop"),
    }


def update_aum(state, index, logits, labels, mask):
    """Folds one batch of presentations into the state (pure; jit- and vmap-friendly).

    Args:
      state: the state dict above, arrays [K, N].
      index: [K, B] int dataset indices. logits: [K, B, C]. labels: [K, B] int (as trained on).
      mask: [K, B], 0 for padding (ignored).
    Returns:
      The updated state dict.
    """
    return accumulate_margins(state, index, margins(logits, labels), mask)


def area_under_margin(state) -> np.ndarray:
    """The AUM itself, `[K, N] float32`: mean margin over presentations; lower = harder.

    Raises:
      ValueError: if some example was never presented (its AUM is undefined; no NaN is returned).
    """
    count = np.asarray(state["count"])
    missing = np.argwhere(count == 0)
    if missing.size:
        raise ValueError(
            f"AUM is undefined for {len(missing)} (seed, example) pairs never presented in "
            f"training, e.g. {[tuple(p) for p in missing[:5].tolist()]}; train at least one full "
            "epoch (config.score.train_epochs >= 1) before reading AUM."
        )
    return np.asarray(state["margin_sum"], np.float32) / count.astype(np.float32)


def aum_scores(state) -> np.ndarray:
    """AUM as a pruning score, `[K, N] float32`: the NEGATED AUM, so higher = harder.

    This is what the pipeline writes to `aum_epochNNN.npz`; 'hardest' pruning keeps the examples
    with the lowest margins. Raises ValueError like `area_under_margin`.
    """
    return -area_under_margin(state)
