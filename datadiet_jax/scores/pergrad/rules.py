"""Per-layer rules: a layer's per-example squared parameter-gradient norm from `a` and `g`.

For a site (see `linen_sites`; the pure-form sites of `jaxpr_sites` use the same
contractions through `jaxpr_norms`) with captured per-example input `a_i` and output gradient `g_i`
(the gradient of example i's loss with respect to the layer's output):

- Dense, `a_i: [T, in]` (T = 1 for a flat input): the kernel gradient is `a_i^T g_i`; its squared
  norm is `||a_i||^2 ||g_i||^2` when T = 1, else computed directly (`[B, in, out]`) or by the Gram
  identity `sum((a_i a_i^T) * (g_i g_i^T))` (`[B, T, T]`), whichever needs fewer FLOPs. The bias
  gradient is `sum_t g_i`.
- Conv: the kernel gradient is `P_i^T G_i` with `P_i: [T, k*k*C]` the im2col patches and
  `G_i: [T, O]` the output gradients; same two ways, summed over kernel offsets so the patches
  are never built. The bias gradient is `sum_t G_i`.
- BatchNorm with running statistics, `a_i` the normalized input `x_hat_i`: the scale gradient is
  `g_i * x_hat_i` and the bias gradient `g_i`, each summed over every axis that is neither the
  batch axis nor a feature axis (`module.axis`).
- Embedding (`embed_sq_norm`, jaxpr sites): row v of the table gradient sums `g_i[t]` over the
  positions with id v, by a segment sum (no `[B, V, D]` tensor).

All contractions run at `Precision.HIGHEST`: GPUs otherwise use TF32 for float32 matmuls, and the
Gram identity multiplies two such results. `RULES` maps a site kind to its rule.

Usage:

    sq = rules.matmul_sq_norm(a, g)  # a [B, T, I], g [B, T, O] -> [B]
    sq = rules.conv_sq_norm(x, g, ksize, strides, padding)  # x [B, *S, C], g [B, *S', O] -> [B]
    sq = rules.site_sq_norm(site, a, g)  # a LinenSite's covered params -> [B] float32
"""

from __future__ import annotations

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from datadiet_jax.scores.pergrad import fallback
from datadiet_jax.scores.pergrad.linen_sites import LinenSite, batchnorm_feature_axes

HIGHEST = jax.lax.Precision.HIGHEST


def _einsum(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.einsum(spec, x, y, precision=HIGHEST)


def matmul_sq_norm(a: jax.Array, g: jax.Array) -> jax.Array:
    """Squared Frobenius norm of a_i^T g_i per example. a: [B, T, I], g: [B, T, O] -> [B]."""
    t, i, o = a.shape[1], a.shape[2], g.shape[2]
    if t == 1:
        return jnp.sum(a[:, 0] ** 2, axis=1) * jnp.sum(g[:, 0] ** 2, axis=1)
    if t * (i + o) < i * o:  # Gram identity: [B, T, T] is cheaper than [B, I, O].
        gram_a = _einsum("bti,bsi->bts", a, a)
        return jnp.sum(gram_a * _einsum("bto,bso->bts", g, g), axis=(1, 2))
    return jnp.sum(_einsum("bti,bto->bio", a, g) ** 2, axis=(1, 2))


def _padded(x: jax.Array, ksize, strides, padding):
    """(x padded [B, *S_padded, C], the output's spatial sizes, the kernel offsets)."""
    spatial = x.shape[1:-1]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(spatial, ksize, strides, padding)
    out = [
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(spatial, ksize, strides, padding, strict=True)
    ]
    offsets = list(itertools.product(*(range(k) for k in ksize)))
    return jnp.pad(x, ((0, 0), *padding, (0, 0))), out, offsets


def _offset_slice(x: jax.Array, start, out, strides) -> jax.Array:
    """The [B, T, C] slice of the padded input `x` that kernel offset `start` (ints or traced)
    meets."""
    window = (
        x.shape[0],
        *((n - 1) * s + 1 for n, s in zip(out, strides, strict=True)),
        x.shape[-1],
    )
    piece = jax.lax.dynamic_slice(x, (0, *start, 0), window)
    piece = jax.lax.slice(piece, (0,) * x.ndim, piece.shape, (1, *strides, 1))
    return piece.reshape(x.shape[0], -1, x.shape[-1])


def shifted_inputs(x: jax.Array, ksize, strides, padding) -> list[jax.Array]:
    """The kernel-offset slices of a convolution's input, one [B, T, C] array per offset.

    Stacked along the last axis they are the im2col patches `P: [B, T, k*k*C]`; the squared norm
    and the Gram matrix of `P_i^T G_i` are sums over offsets, so the patches are never built
    (`conv_sq_norm` sums them one offset at a time: `_offset_sum`).
    """
    x, out, offsets = _padded(x, ksize, strides, padding)
    return [_offset_slice(x, offset, out, strides) for offset in offsets]


def _offset_sum(term, x: jax.Array, g: jax.Array, ksize, strides, padding) -> jax.Array:
    """`sum(term(p) for p in shifted_inputs(x, ...))`, one kernel offset's slice at a time.

    A `fori_loop` over the offsets. Unrolled in Python, XLA cut every offset's [B, T, C] slice of
    every layer from the forward's activations early and held them all through the backward
    pass: on ResNet18 at batch 32, 753 MB compiled against 305 MB with the loop, at the same
    speed (`benchmarks/bench_memory.py`).
    """
    x, out, offsets = _padded(x, ksize, strides, padding)
    table = jnp.array(offsets, jnp.int32)  # [k*k, spatial rank]

    def body(k, total):
        return total + term(_offset_slice(x, tuple(table[k]), out, strides))

    first = jax.eval_shape(term, _offset_slice(x, offsets[0], out, strides))
    # Under shard_map the loop's output varies over the mesh axes of `x` and `g`; the zeros
    # carry must too. (Starting from the first offset's term instead keeps that slice alive
    # beside the loop: 355 MB against 305 on ResNet18.)
    zeros = fallback.vary_like(jnp.zeros(first.shape, first.dtype), x, g)
    return jax.lax.fori_loop(0, len(offsets), body, zeros)


def conv_sq_norm(x: jax.Array, g: jax.Array, ksize, strides, padding) -> jax.Array:
    """Squared norm of each example's kernel gradient. x: [B, *S, C], g: [B, *S', O] -> [B]."""
    g = g.reshape(g.shape[0], -1, g.shape[-1])
    t, i, o = g.shape[1], math.prod(ksize) * x.shape[-1], g.shape[-1]
    if t * (i + o) < i * o:  # Gram identity: [B, T, T] is cheaper than [B, kkC, O].
        gram_x = _offset_sum(lambda p: _einsum("bti,bsi->bts", p, p), x, g, ksize, strides, padding)
        return jnp.sum(gram_x * _einsum("bto,bso->bts", g, g), axis=(1, 2))
    direct = lambda p: jnp.sum(_einsum("bti,bto->bio", p, g) ** 2, axis=(1, 2))  # noqa: E731
    return _offset_sum(direct, x, g, ksize, strides, padding)


def embed_sq_norm(ids: jax.Array, g: jax.Array, vocab: int, clip: bool) -> jax.Array:
    """Squared norm of each example's embedding-table gradient. ids: [B, T] int, g: [B, T, D].

    Example i's table gradient has row v equal to the sum of `g_i[t]` over the positions t with
    `ids_i[t] == v`; the positions are sorted by id and summed per run of equal ids (a segment
    sum over [B * T] groups), so no [B, V, D] tensor is built. Out-of-range ids are clipped to
    the table when `clip` (a `CLIP`-mode gather), else their positions are dropped (`FILL_OR_DROP`,
    whose gradient ignores them). -> [B] float32.
    """
    b, t = ids.shape
    if clip:
        ids = jnp.clip(ids, 0, vocab - 1)
    else:
        g = g * ((ids >= 0) & (ids < vocab))[..., None].astype(g.dtype)
    order = jnp.argsort(ids, axis=1)
    ids = jnp.take_along_axis(ids, order, axis=1)
    g = jnp.take_along_axis(g, order[..., None], axis=1)
    starts = jnp.concatenate([jnp.ones((b, 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1)
    groups = jnp.cumsum(starts, axis=1) - 1 + t * jnp.arange(b)[:, None]  # [B, T] in [0, B*T)
    sums = jax.ops.segment_sum(g.reshape(b * t, -1), groups.reshape(-1), num_segments=b * t)
    return jnp.sum(sums.reshape(b, t, -1) ** 2, axis=(1, 2))


def _bias_sq_norm(g: jax.Array) -> jax.Array:
    """g: [B, ..., O] -> [B], the squared norm of sum over the middle axes."""
    return jnp.sum(jnp.sum(g.reshape(g.shape[0], -1, g.shape[-1]), axis=1) ** 2, axis=1)


def dense_rule(site: LinenSite, a: jax.Array, g: jax.Array) -> jax.Array:
    b = g.shape[0]
    total = jnp.zeros((b,), jnp.float32)
    if "kernel" in site.leaves:
        total += matmul_sq_norm(a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1]))
    return total + _bias_sq_norm(g) if "bias" in site.leaves else total


def conv_rule(site: LinenSite, a: jax.Array, g: jax.Array) -> jax.Array:
    total = jnp.zeros((g.shape[0],), jnp.float32)
    if "kernel" in site.leaves:
        total += conv_sq_norm(a, g, *site.conv)
    return total + _bias_sq_norm(g) if "bias" in site.leaves else total


def batchnorm_rule(site: LinenSite, a: jax.Array, g: jax.Array) -> jax.Array:
    features = site.feature_axes
    other = tuple(ax for ax in range(1, g.ndim) if ax not in features)
    total = jnp.zeros((g.shape[0],), jnp.float32)
    for leaf, value in (("scale", g * a), ("bias", g)):
        if leaf in site.leaves:
            per_feature = jnp.sum(value, axis=other)  # [B, *feature dims]
            total += jnp.sum(per_feature.reshape(g.shape[0], -1) ** 2, axis=1)
    return total


RULES = {"dense": dense_rule, "conv": conv_rule, "batchnorm": batchnorm_rule}


def site_sq_norm(site: LinenSite, a: jax.Array, g: jax.Array) -> jax.Array:
    """Per-example squared norm of the gradient of `site`'s covered params. -> [B] float32."""
    return RULES[site.kind](site, a.astype(jnp.float32), g.astype(jnp.float32))


def batchnorm_input(module: nn.BatchNorm, x: jax.Array) -> jax.Array:
    """`x_hat = (x - mean) / sqrt(var + eps)` with the running statistics, float32."""
    axes = batchnorm_feature_axes(module, x.ndim)
    shape = [x.shape[ax] if ax in axes else 1 for ax in range(x.ndim)]
    stats = module.variables["batch_stats"]
    mean = stats["mean"].astype(jnp.float32).reshape(shape)
    var = stats["var"].astype(jnp.float32).reshape(shape)
    return (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + module.epsilon)
