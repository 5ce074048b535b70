"""Per-example scores of one forward pass: EL2N, the loss and the uncertainty family.

Each is a function `(logits [B, C], labels [B]) -> [B] float32`, higher = harder, computed in
eval mode at a score epoch like EL2N (`logit_scores`). The uncertainty scores follow DeepCore's
"Uncertainty" selection (Guo et al., DEXA 2022; after Coleman et al., ICLR 2020), which ranks by
the softmax alone, without the label:

  entropy           -sum_c p_c log p_c        (DeepCore keeps the highest entropy)
  least_confidence  1 - max_c p_c             (DeepCore keeps the lowest max p)
  margin            1 - (p_(1) - p_(2))       (DeepCore keeps the lowest top-two gap)

DeepCore keeps the LOWEST negative entropy, max probability and top-two gap; the forms above are
the same orders, flipped so that 'hardest' keeps the examples DeepCore does. `loss` is the
cross-entropy with the label (as "small-loss" pruning ranks by), the training's own (`losses`).

Usage:

    ent = uncertainty.entropy(logits)  # [B, C] -> [B] float32
    score = uncertainty.LOGIT_SCORES["margin"](logits, labels)  # [B] float32
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from datadiet_jax.scores import losses


def entropy(logits: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """Predictive entropy in nats, `-sum_c p_c log p_c`. [B, C] -> [B] float32 (labels unused)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def least_confidence(logits: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """`1 - max_c p_c`. [B, C] -> [B] float32 (labels unused)."""
    return 1.0 - jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def margin(logits: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """`1 - (p_(1) - p_(2))`, one minus the gap between the two largest probabilities.
    [B, C] with C >= 2 -> [B] float32 (labels unused)."""
    top2 = jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), 2)[0]
    return 1.0 - (top2[..., 0] - top2[..., 1])


# Every score of one eval-mode forward pass, by the name its score files carry.
LOGIT_SCORES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "el2n": losses.el2n,
    "loss": losses.cross_entropy,
    "entropy": entropy,
    "least_confidence": least_confidence,
    "margin": margin,
}

# The scores `config.score.logit_epochs` computes (EL2N has its own epochs).
UNCERTAINTY_KINDS = ("entropy", "least_confidence", "margin", "loss")
