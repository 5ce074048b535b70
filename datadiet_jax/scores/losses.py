"""Per-example functions of logits and labels: the cross-entropy loss and EL2N.

One definition each, shared by training (`training.train`), the scores, GraNd's gradients and the
benchmarks, so every number of the project is of the same loss.

Usage:

    from datadiet_jax.scores import losses
    loss = losses.cross_entropy(logits, labels)  # [B, C], [B] int -> [B] float32
    el2n = losses.el2n(logits, labels)  # [B] float32
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy. logits: [B, C], labels: [B] int -> [B] float32."""
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
    return jax.nn.logsumexp(logits, axis=1) - label_logit


def el2n(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """EL2N per example, `||softmax(logits) - onehot(label)||_2`. [B, C], [B] int -> [B] float32."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    return jnp.sqrt(jnp.sum((probs - onehot) ** 2, axis=-1))
