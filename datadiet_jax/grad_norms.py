"""Exact per-example gradient norms from one batched backward pass.

The GraNd score of an example is the L2 norm of the gradient of its cross-entropy loss with respect
to all trainable parameters. `jax.vmap(jax.grad(...))` materializes every per-example gradient and
runs convolutions one example at a time; this module instead runs ONE backward pass of the summed
per-example losses with respect to zero perturbations added to the output of every Dense, Conv and
BatchNorm layer (captured with `flax.linen.intercept_methods`). Each perturbation's gradient is then
the per-example gradient `g_i` of that layer's output (the loss is a sum, and in eval mode no layer
mixes examples), and together with the captured layer inputs it gives the per-example squared norms:

- Dense, inputs `a_i: [in]`: `||a_i||^2 ||g_i||^2` (kernel) and `||g_i||^2` (bias).
- Conv: the kernel gradient is `P_i^T G_i` with `P_i: [T, k*k*C]` the im2col patches and
  `G_i: [T, O]` the output gradients; its squared norm is computed directly (`[B, kkC, O]`, one
  layer at a time) or with the Gram identity `sum((P_i P_i^T) * (G_i G_i^T))` (`[B, T, T]`),
  whichever needs fewer FLOPs. The bias gradient is `sum_t G_i`.
- BatchNorm with running statistics: the scale gradient is `sum_t g_i * x_hat_i`, the bias gradient
  `sum_t g_i`.

Parameters no rule covers (other module types, a module called more than once, dilated or grouped
convolutions, lifted transforms) get exact per-example gradients from `vmap(grad)` restricted to
those parameters, so the result is always the exact GraNd.

Usage:

    apply_fn = lambda v, x: model.apply(v, x, train=False)
    norms = per_example_grad_norms(apply_fn, variables, images, labels)  # [B] float32
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from datadiet_jax import fast_pools

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy. logits: [B, C], labels: [B] int -> [B] float32."""
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
    return jax.nn.logsumexp(logits, axis=1) - label_logit


@dataclasses.dataclass(frozen=True)
class _Site:
    """One intercepted layer call whose parameters a fast rule covers."""

    key: str  # module path joined with '/'
    kind: str  # 'dense' | 'conv' | 'batchnorm'
    path: tuple[str, ...]
    leaves: tuple[str, ...]  # parameter names under `path` the rule covers
    out_shape: tuple[int, ...]
    out_dtype: Any
    conv: tuple | None = None  # (kernel_size, strides, padding) for convolutions


def _tuple(value, rank: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    if isinstance(value, int):
        return (value,) * rank
    return tuple(value)


def _classify(module: nn.Module, args, kwargs, batch: int):
    """Returns (kind, leaves, conv_config) if a fast rule covers this call, else None."""
    cls = type(module)
    x = args[0] if args else kwargs.get("inputs", kwargs.get("x"))
    if not isinstance(x, jax.Array | jax.ShapeDtypeStruct) or x.ndim < 2 or x.shape[0] != batch:
        return None
    params = module.variables.get("params", {})
    if isinstance(module, nn.Dense) and cls.__call__ is nn.Dense.__call__:
        if module.dot_general is not None or module.dot_general_cls is not None:
            return None
        leaves = ("kernel", "bias") if module.use_bias else ("kernel",)
        kernel = params.get("kernel")
        if kernel is None or kernel.shape != (x.shape[-1], module.features):
            return None
        return "dense", leaves, None
    if isinstance(module, nn.Conv) and cls.__call__ is nn.Conv.__call__:
        ksize = _tuple(module.kernel_size, 1)
        rank = len(ksize)
        padding = nn.linear.canonicalize_padding(module.padding, rank)
        ok = (
            rank <= 3
            and x.ndim == rank + 2
            and module.feature_group_count == 1
            and _tuple(module.input_dilation, rank) == (1,) * rank
            and _tuple(module.kernel_dilation, rank) == (1,) * rank
            and module.mask is None
            and module.conv_general_dilated is None
            and module.conv_general_dilated_cls is None
            and padding not in ("CIRCULAR", "REFLECT", "CAUSAL")
        )
        kernel = params.get("kernel")
        if not ok or kernel is None or kernel.shape != (*ksize, x.shape[-1], module.features):
            return None
        if not isinstance(padding, str):
            padding = tuple(tuple(p) for p in padding)
        leaves = ("kernel", "bias") if module.use_bias else ("kernel",)
        return "conv", leaves, (ksize, _tuple(module.strides, rank), padding)
    if isinstance(module, nn.BatchNorm) and cls.__call__ is nn.BatchNorm.__call__:
        use_ra = args[1] if len(args) > 1 else kwargs.get("use_running_average")
        use_ra = nn.merge_param("use_running_average", module.use_running_average, use_ra)
        if not use_ra:
            raise ValueError(
                f"BatchNorm {'/'.join(module.path)} uses batch statistics, which mixes examples; "
                "call the model with train=False (running statistics) to compute scores."
            )
        feature_axes = nn.normalization._canonicalize_axes(x.ndim, module.axis)
        if 0 in feature_axes:
            return None
        leaves = tuple(
            name for name, used in (("scale", module.use_scale), ("bias", module.use_bias)) if used
        )
        return "batchnorm", leaves, None
    return None


def _discover(apply_fn: ApplyFn, variables, images: jax.ShapeDtypeStruct):
    """Traces the model abstractly; returns the fast-rule sites and the covered param paths."""
    batch = images.shape[0]
    calls: dict[str, list] = {}
    top = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            module = context.module
            kind = _classify(module, args, kwargs, batch)
            # Calls inside lifted transforms (scan, remat, ...) run under another trace; their
            # values cannot be captured from outside, so their params use the fallback.
            if getattr(out, "_trace", None) is not top["trace"] or not hasattr(out, "shape"):
                kind = None
            shape = (tuple(out.shape), out.dtype) if hasattr(out, "shape") else None
            calls.setdefault("/".join(module.path), []).append((kind, tuple(module.path), shape))
        return out

    def traced(v, x):
        top["trace"] = getattr(x, "_trace", None)
        with nn.intercept_methods(interceptor):
            return apply_fn(v, x)

    try:
        jax.eval_shape(traced, variables, images)
    except (jax.errors.UnexpectedTracerError, jax.errors.TracerArrayConversionError) as err:
        logging.warning("Per-layer capture failed (%s); using vmap(grad) for all params.", err)
        return (), frozenset()
    sites = []
    for key, entries in calls.items():
        kind, path, out = entries[0]
        # A module called twice shares its params across calls: leave them to the exact fallback.
        if len(entries) != 1 or kind is None or out[0][:1] != (batch,):
            continue
        name, leaves, conv = kind
        sites.append(_Site(key, name, path, leaves, out[0], out[1], conv))
    covered = frozenset(("params", *s.path, leaf) for s in sites for leaf in s.leaves)
    return tuple(sites), covered


def _matmul_sq_norm(a: jax.Array, g: jax.Array) -> jax.Array:
    """Squared Frobenius norm of a_i^T g_i per example. a: [B, T, I], g: [B, T, O] -> [B]."""
    t, i, o = a.shape[1], a.shape[2], g.shape[2]
    if t == 1:
        return jnp.sum(a[:, 0] ** 2, axis=1) * jnp.sum(g[:, 0] ** 2, axis=1)
    if t * (i + o) < i * o:  # Gram identity: [B, T, T] is cheaper than [B, I, O].
        gram_a = jnp.einsum("bti,bsi->bts", a, a)
        gram_g = jnp.einsum("bto,bso->bts", g, g)
        return jnp.sum(gram_a * gram_g, axis=(1, 2))
    return jnp.sum(jnp.einsum("bti,bto->bio", a, g) ** 2, axis=(1, 2))


def _shifted_inputs(x: jax.Array, ksize, strides, padding) -> list[jax.Array]:
    """The kernel-offset slices of a convolution's input, one [B, T, C] array per offset.

    Stacked along the last axis they are the im2col patches `P: [B, T, k*k*C]`; the squared norm
    and the Gram matrix of `P_i^T G_i` are sums over offsets, so the patches are never built.
    """
    spatial = x.shape[1:-1]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(spatial, ksize, strides, padding)
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out = [
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(spatial, ksize, strides, padding, strict=True)
    ]
    shifted = []
    for offset in itertools.product(*(range(k) for k in ksize)):
        limit = [o + (n - 1) * s + 1 for o, n, s in zip(offset, out, strides, strict=True)]
        piece = jax.lax.slice(
            x, (0, *offset, 0), (x.shape[0], *limit, x.shape[-1]), (1, *strides, 1)
        )
        shifted.append(piece.reshape(x.shape[0], -1, x.shape[-1]))
    return shifted


def _conv_sq_norm(x: jax.Array, g: jax.Array, ksize, strides, padding) -> jax.Array:
    """Squared norm of each example's kernel gradient. x: [B, *S, C], g: [B, *S', O] -> [B]."""
    shifted = _shifted_inputs(x, ksize, strides, padding)
    g = g.reshape(g.shape[0], -1, g.shape[-1])
    t, i, o = g.shape[1], len(shifted) * x.shape[-1], g.shape[-1]
    if t * (i + o) < i * o:  # Gram identity: [B, T, T] is cheaper than [B, kkC, O].
        gram_x = sum(jnp.einsum("bti,bsi->bts", p, p) for p in shifted)
        return jnp.sum(gram_x * jnp.einsum("bto,bso->bts", g, g), axis=(1, 2))
    return sum(jnp.sum(jnp.einsum("bti,bto->bio", p, g) ** 2, axis=(1, 2)) for p in shifted)


def _site_sq_norm(site: _Site, x: jax.Array, g: jax.Array) -> jax.Array:
    """Per-example squared norm of the gradient of `site`'s params. -> [B] float32."""
    b = g.shape[0]
    g = g.astype(jnp.float32)
    x = x.astype(jnp.float32)
    if site.kind == "batchnorm":  # x holds x_hat, the normalized input.
        axes = tuple(range(1, g.ndim - 1))
        total = jnp.zeros((b,), jnp.float32)
        if "scale" in site.leaves:
            total += jnp.sum(jnp.sum(g * x, axis=axes) ** 2, axis=1)
        if "bias" in site.leaves:
            total += jnp.sum(jnp.sum(g, axis=axes) ** 2, axis=1)
        return total
    if site.kind == "conv":
        total = _conv_sq_norm(x, g, *site.conv)
        if "bias" in site.leaves:
            total += jnp.sum(jnp.sum(g.reshape(b, -1, g.shape[-1]), axis=1) ** 2, axis=1)
        return total
    a = x.reshape(b, -1, x.shape[-1])
    g = g.reshape(b, -1, g.shape[-1])
    total = _matmul_sq_norm(a, g)
    if "bias" in site.leaves:
        total += jnp.sum(jnp.sum(g, axis=1) ** 2, axis=1)
    return total


def _varying_axes(x) -> frozenset:
    """The manual mesh axes `x` varies over inside shard_map (empty outside)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()) or ())


def _vary_like(tree, *likes):
    """Marks `tree` as varying over every mesh axis some leaf of `likes` varies over.

    Inside `shard_map`, differentiating a value that is invariant over an axis makes the transpose
    psum its cotangent over that axis, which would add up the gradients of different examples
    (data axis) or seeds (seed axis).
    """
    axes = set()
    for leaf in jax.tree.leaves(likes):
        axes |= _varying_axes(leaf)
    if not axes:
        return tree
    axes = tuple(sorted(axes))

    def vary(v):
        missing = tuple(a for a in axes if a not in _varying_axes(v))
        return jax.lax.pcast(v, missing, to="varying") if missing else v

    return jax.tree.map(vary, tree)


def _split_params(variables: Mapping, covered: frozenset):
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    rest = {k: v for k, v in flat.items() if ("params", *k) not in covered}
    return flat, rest


def vmap_grad_sq_norms(apply_fn: ApplyFn, variables, images, labels, only=None) -> jax.Array:
    """Per-example squared gradient norms by `vmap(grad)`, the exact generic path.

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]`.
      variables: one model's variables; only `variables['params']` is differentiated.
      images: [B, ...]; labels: [B] int.
      only: optional set of `('params', *path)` leaf paths to differentiate (default: all params).
    Returns:
      [B] float32 squared norms.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    keys = [k for k in flat if only is None or ("params", *k) in only]
    wrt = _vary_like({k: flat[k] for k in keys}, images, variables)

    def loss_one(sub, x, y):
        params = flax.traverse_util.unflatten_dict({**flat, **sub})
        logits = apply_fn({**variables, "params": params}, x[None])
        return cross_entropy(logits, y[None])[0]

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(wrt, images, labels)
    leaves = jax.tree.leaves(grads)
    total = jnp.zeros((images.shape[0],), jnp.float32)
    for leaf in leaves:
        total += jnp.sum(leaf.astype(jnp.float32).reshape(leaf.shape[0], -1) ** 2, axis=1)
    return total


def per_example_grad_norms(apply_fn: ApplyFn, variables, images, labels, mask=None) -> jax.Array:
    """Exact per-example L2 norms of the cross-entropy gradient w.r.t. all of `variables['params']`.

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]`, a Flax `apply` in eval mode (no
        layer may mix examples). Other collections than 'params' are held constant.
      variables: one model's variables (no seed axis).
      images: [B, ...] float; labels: [B] int in [0, C).
      mask: optional [B] {0, 1}; masked-out examples get norm 0.
    Returns:
      norms: [B] float32.
    """
    spec = jax.ShapeDtypeStruct(images.shape, images.dtype)
    sites, covered = _discover(apply_fn, variables, spec)
    weight = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    by_key = {s.key: s for s in sites}
    eps = _vary_like({s.key: jnp.zeros(s.out_shape, s.out_dtype) for s in sites}, images, variables)

    def summed_loss(eps):
        captured = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            site = by_key.get("/".join(context.module.path))
            if context.method_name != "__call__" or site is None:
                return out
            x = args[0] if args else kwargs.get("inputs", kwargs.get("x"))
            if site.kind == "batchnorm":
                module = context.module
                axes = nn.normalization._canonicalize_axes(x.ndim, module.axis)
                shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
                stats = module.variables["batch_stats"]
                mean = stats["mean"].astype(jnp.float32).reshape(shape)
                var = stats["var"].astype(jnp.float32).reshape(shape)
                x = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + module.epsilon)
            captured[site.key] = jax.lax.stop_gradient(x)
            return out + eps[site.key]

        with nn.intercept_methods(interceptor):
            logits = apply_fn(variables, images)
        return jnp.sum(cross_entropy(logits, labels) * weight), captured

    if sites:
        grads, captured = jax.grad(fast_pools.with_fast_pools(summed_loss), has_aux=True)(eps)
        total = sum(_site_sq_norm(s, captured[s.key], grads[s.key]) for s in sites)
    else:
        total = jnp.zeros(labels.shape, jnp.float32)
    _, rest = _split_params(variables, covered)
    if rest:
        only = frozenset(("params", *k) for k in rest)
        total = total + vmap_grad_sq_norms(apply_fn, variables, images, labels, only) * weight
    return jnp.sqrt(total)


def coverage(apply_fn: ApplyFn, variables, images) -> dict[str, int]:
    """Counts of parameters covered by each fast rule and by the vmap(grad) fallback.

    Args:
      apply_fn, variables: as in `per_example_grad_norms` (one model).
      images: [B, ...] array or ShapeDtypeStruct.
    Returns:
      {'dense': n, 'conv': n, 'batchnorm': n, 'fallback': n} parameter counts.
    """
    spec = jax.ShapeDtypeStruct(images.shape, images.dtype)
    sites, covered = _discover(apply_fn, variables, spec)
    flat, rest = _split_params(variables, covered)
    counts = {"dense": 0, "conv": 0, "batchnorm": 0}
    for s in sites:
        for leaf in s.leaves:
            counts[s.kind] += int(flat[(*s.path, leaf)].size)
    counts["fallback"] = sum(int(v.size) for v in rest.values())
    return counts
