"""The exact empirical neural tangent kernel of a few examples, and the kernel velocity.

For a network f(x; w) with logits f_c, the empirical NTK of examples i, j is
`Theta_ij^{cd} = J_i^c . J_j^d`, with `J_i^c = d f_c(x_i) / d w` over all trainable parameters
('params'; BatchNorm statistics are constants) and the model in eval mode, as the scores are
computed. `ntk_gram` returns by default the trace over the logits, `K_ij = sum_c J_i^c . J_j^c`
([n, n], the usual Gram matrix of a multi-output network, which Figure 3 uses); `full=True`
returns every pair of logits ([n*C, n*C], row `i * C + c`), to check that choice. The kernel
velocity (Fort et al., NeurIPS 2020) is `kernel_distance(K1, K2) = 1 - <K1, K2>_F /
(||K1||_F ||K2||_F)`, between the Gram matrices of one set of examples at two times.

Nothing builds the per-example Jacobian of the whole network: per layer site (Dense, Conv,
BatchNorm; `linen_sites`) the kernel is contracted from the site's inputs and output gradients
(`linen_norms.capture`, one backward pass per logit), from per-example kernel gradients or by the
Gram identity, whichever needs fewer operations. Parameters no site covers get their exact
Jacobian from `vmap(jacrev)`. All contractions run at `Precision.HIGHEST`.

Usage:

    from datadiet_jax.dynamics import ntk
    gram_t = ntk.ntk_gram(model, variables_t, images[:100])     # [K, 100, 100] float32
    gram_t1 = ntk.ntk_gram(model, variables_t1, images[:100])
    velocity = ntk.kernel_distance(gram_t, gram_t1)              # [K] float64, in [0, 2]
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from datadiet_jax.scores import inputs
from datadiet_jax.scores import seed_axis as seed_axis_lib
from datadiet_jax.scores.model_form import LinenModel
from datadiet_jax.scores.pergrad import linen_norms, rules
from datadiet_jax.scores.pergrad.linen_sites import LinenSite

HIGHEST = jax.lax.Precision.HIGHEST


def _einsum(spec: str, *xs) -> jax.Array:
    return jnp.einsum(spec, *xs, precision=HIGHEST)


def _vector_gram(va: jax.Array, vb: jax.Array, full: bool) -> jax.Array:
    """va: [C, A, P], vb: [C, B, P] -> [A, B] (sum over c of same-logit products) or
    [C, A, C, B] (every pair of logits)."""
    if full:
        return _einsum("cap,ebp->caeb", va, vb)
    return _einsum("cap,cbp->ab", va, vb)


ROUTES = ("auto", "per_example", "gram_identity")


def _matmul_gram(pieces_a, ga, pieces_b, gb, full: bool, route: str = "auto") -> jax.Array:
    """Gram matrix of the per-example kernel gradients `sum_k p_k^T g` of a Dense or Conv layer.

    pieces_*: lists of [A, T, I] inputs (one per kernel offset; one for a Dense layer);
    g*: [C, A, T, O] output gradients; route: one of `ROUTES` ('auto': fewer operations).
    Returns as `_vector_gram`.
    """
    c, a, t, o = ga.shape
    i = pieces_a[0].shape[-1] * len(pieces_a)
    b = gb.shape[1]
    per_example = c * (a + b) * t * i * o + c * a * b * i * o
    gram_identity = a * b * t * t * (i + c * o)
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; use one of {ROUTES}")
    if route == "per_example" or (route == "auto" and per_example <= gram_identity):
        same = pieces_a is pieces_b and ga is gb  # a diagonal block: one set of gradients
        total = 0.0
        for pa, pb in zip(pieces_a, pieces_b, strict=True):
            wa = _einsum("ati,cato->caio", pa, ga).reshape(c, a, -1)
            wb = wa if same else _einsum("bti,cbto->cbio", pb, gb).reshape(c, b, -1)
            total = total + _vector_gram(wa, wb, full)
        return total
    inputs = sum(
        _einsum("ati,bsi->abts", pa, pb) for pa, pb in zip(pieces_a, pieces_b, strict=True)
    )
    if full:
        return _einsum("abts,cato,ebso->caeb", inputs, ga, gb)
    return jnp.sum(inputs * _einsum("cato,cbso->abts", ga, gb), axis=(2, 3))


def _bias_vectors(g: jax.Array) -> jax.Array:
    """g: [C, A, ..., O] -> [C, A, O], the bias gradient (sum over positions)."""
    return jnp.sum(g.reshape(g.shape[0], g.shape[1], -1, g.shape[-1]), axis=2)


def site_gram(site: LinenSite, a_a, g_a, a_b, g_b, full: bool = False, route="auto") -> jax.Array:
    """One site's contribution to the NTK between examples A and B.

    Args:
      site: a `linen_sites.LinenSite`.
      a_a, a_b: [A, ...], [B, ...] captured inputs (BatchNorm: x_hat).
      g_a, g_b: [C, A, ...], [C, B, ...] gradients of each logit w.r.t. the site's output.
      full: every pair of logits instead of the trace.
      route: how Dense and Conv kernels are contracted (`ROUTES`); both give the same values.
    Returns:
      [A, B] float32, or [C, A, C, B] with `full`.
    """
    same = a_a is a_b and g_a is g_b
    a_a, g_a = a_a.astype(jnp.float32), g_a.astype(jnp.float32)
    a_b, g_b = (a_a, g_a) if same else (a_b.astype(jnp.float32), g_b.astype(jnp.float32))
    c, na, nb = g_a.shape[0], g_a.shape[1], g_b.shape[1]
    total = jnp.zeros((c, na, c, nb) if full else (na, nb), jnp.float32)
    if site.kind in ("dense", "conv"):
        if "kernel" in site.leaves:
            same = a_a is a_b and g_a is g_b
            if site.kind == "dense":
                pa = [a_a.reshape(na, -1, a_a.shape[-1])]
                pb = pa if same else [a_b.reshape(nb, -1, a_b.shape[-1])]
            else:
                pa = rules.shifted_inputs(a_a, *site.conv)
                pb = pa if same else rules.shifted_inputs(a_b, *site.conv)
            ga = g_a.reshape(c, na, -1, g_a.shape[-1])
            gb = ga if same else g_b.reshape(c, nb, -1, g_b.shape[-1])
            total += _matmul_gram(pa, ga, pb, gb, full, route)
        if "bias" in site.leaves:
            total += _vector_gram(_bias_vectors(g_a), _bias_vectors(g_b), full)
        return total
    if site.kind == "batchnorm":
        other = tuple(1 + ax for ax in range(1, a_a.ndim) if ax not in site.feature_axes)
        for leaf in ("scale", "bias"):
            if leaf in site.leaves:
                va = jnp.sum(g_a * a_a[None] if leaf == "scale" else g_a, axis=other)
                vb = jnp.sum(g_b * a_b[None] if leaf == "scale" else g_b, axis=other)
                total += _vector_gram(va.reshape(c, na, -1), vb.reshape(c, nb, -1), full)
        return total
    raise ValueError(f"site {site.key} has kind {site.kind!r}, which has no NTK rule")


def _captures(apply_fn, variables, images, num_classes: int):
    """(sites, fallback, inputs {key: [B, ...]}, out_grads {key: [C, B, ...]})."""
    static = {}

    def one_logit(c):
        cap = linen_norms.capture(apply_fn, variables, images, lambda z: z[:, c])
        static["sites"], static["fallback"] = cap.sites, cap.fallback
        return cap.inputs, cap.out_grads

    inputs, out_grads = jax.vmap(one_logit, out_axes=(None, 0))(jnp.arange(num_classes))
    return static["sites"], static["fallback"], inputs, out_grads


def _fallback_jacobian(apply_fn, variables, images, fallback) -> jax.Array:
    """Per-example Jacobian of the logits w.r.t. the fallback params -> [C, B, P] float32."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    wanted = {p[1:] for p in fallback}
    sub = {k: v for k, v in flat.items() if k in wanted}

    def logits_one(sub, x):
        params = flax.traverse_util.unflatten_dict({**flat, **sub})
        return apply_fn({**variables, "params": params}, x[None])[0].astype(jnp.float32)

    jac = jax.vmap(jax.jacrev(logits_one), in_axes=(None, 0))(sub, images)  # {k: [B, C, ...]}
    parts = [j.reshape(j.shape[0], j.shape[1], -1) for j in jax.tree.leaves(jac)]
    return jnp.swapaxes(jnp.concatenate(parts, axis=2), 0, 1).astype(jnp.float32)


def _pair_gram(apply_fn, num_classes: int, full: bool, variables, images_a, images_b):
    """NTK block between examples A and B for one model ([A, B] or [C, A, C, B])."""
    same = images_b is None
    sites, fallback, in_a, g_a = _captures(apply_fn, variables, images_a, num_classes)
    in_b, g_b = (in_a, g_a) if same else _captures(apply_fn, variables, images_b, num_classes)[2:]
    total = sum(
        (site_gram(s, in_a[s.key], g_a[s.key], in_b[s.key], g_b[s.key], full) for s in sites),
        start=0.0,
    )
    if fallback:
        ja = _fallback_jacobian(apply_fn, variables, images_a, fallback)
        jb = ja if same else _fallback_jacobian(apply_fn, variables, images_b, fallback)
        total = total + _vector_gram(ja, jb, full)
    return total


def _eval_apply(model, kwargs, variables, images):
    """`model.apply` in eval mode (BatchNorm with running statistics): logits [B, C]."""
    return model.apply(variables, images, **kwargs)


@functools.lru_cache(maxsize=16)
def _program_cached(model, num_classes, full, seed_axis, same):
    return _program(model, num_classes, full, seed_axis, same)


def _program(model, num_classes: int, full: bool, seed_axis: str, same: bool):
    kwargs = LinenModel.of(model).mode_kwargs(False)
    apply_fn = functools.partial(_eval_apply, model, kwargs)
    pair = functools.partial(_pair_gram, apply_fn, num_classes, full)
    if same:
        return jax.jit(
            lambda v, x: seed_axis_lib.over_seeds(lambda w: pair(w, x, None), seed_axis)(v)
        )
    return jax.jit(
        lambda v, xa, xb: seed_axis_lib.over_seeds(lambda w: pair(w, xa, xb), seed_axis)(v)
    )


def _compiled(model, num_classes, full, seed_axis, same):
    try:
        return _program_cached(model, num_classes, full, seed_axis, same)
    except TypeError:  # an unhashable module
        return _program(model, num_classes, full, seed_axis, same)


def ntk_gram(
    model,
    variables,
    images,
    *,
    batch_size: int = 100,
    full: bool = False,
    seed_axis: str | None = None,
) -> np.ndarray:
    """The exact empirical NTK Gram matrix of `images` under each of K stacked models.

    Args:
      model: Flax module applied as `model.apply(variables, x, train=False)` (or without
        `train`), returning logits [B, C]; eval mode (BatchNorm running statistics).
      variables: K models stacked on a leading axis (see `scores.api.init_variables`).
      images: [n, ...] float, normalized as the model expects.
      batch_size: examples per capture; blocks of `batch_size` x `batch_size` are computed
        (the last block padded), so memory grows with `batch_size`, not with n.
      full: every pair of logits ([K, n*C, n*C], row `i * C + c`) instead of the trace.
      seed_axis: 'unroll' (CPU default), 'vmap' (accelerator default) or 'map'.
    Returns:
      [K, n, n] float32 `K_ij = sum_c J_i^c . J_j^c`, or [K, n*C, n*C] with `full`.
    Raises:
      ValueError: integer or non-finite images, variables without a seed axis, a bad batch size.
    """
    seed_axis = seed_axis_lib.resolve(seed_axis)
    inputs.check_args(batch_size, seed_axis)
    images = np.asarray(images)
    inputs.check_float_images(images.dtype)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"images have shape {images.shape}; pass [n, ...] with n >= 1")
    inputs.check_finite(images)
    mode = tuple(LinenModel.of(model).mode_kwargs(False).items())
    num_seeds, num_classes = inputs.check_model(
        model, variables, images.shape[1:], images.dtype, mode
    )
    n = len(images)
    bsz = min(int(batch_size), n)
    blocks = -(-n // bsz)
    padded = np.zeros((blocks * bsz, *images.shape[1:]), images.dtype)
    padded[:n] = images
    chunks = [jnp.asarray(padded[b * bsz : (b + 1) * bsz]) for b in range(blocks)]
    variables = jax.device_put(variables)
    diag = _compiled(model, num_classes, full, seed_axis, True)
    cross = _compiled(model, num_classes, full, seed_axis, False) if blocks > 1 else None
    shape = (num_seeds, num_classes, blocks * bsz, num_classes, blocks * bsz)
    out = np.zeros(shape if full else (num_seeds, blocks * bsz, blocks * bsz), np.float32)
    for a in range(blocks):
        for b in range(a, blocks):
            block = np.asarray(
                diag(variables, chunks[a]) if a == b else cross(variables, chunks[a], chunks[b])
            )
            ra, rb = slice(a * bsz, (a + 1) * bsz), slice(b * bsz, (b + 1) * bsz)
            if full:
                out[:, :, ra, :, rb] = block
                out[:, :, rb, :, ra] = np.swapaxes(np.swapaxes(block, 1, 3), 2, 4)
            else:
                out[:, ra, rb] = block
                out[:, rb, ra] = np.swapaxes(block, 1, 2)
    if not full:
        return out[:, :n, :n]
    out = out[:, :, :n, :, :n]  # [K, C, n, C, n] -> example-major [K, n*C, n*C]
    return np.ascontiguousarray(out.transpose(0, 2, 1, 4, 3)).reshape(
        num_seeds, n * num_classes, -1
    )


def kernel_distance(k1, k2) -> np.ndarray:
    """Cosine distance `1 - <K1, K2>_F / (||K1||_F ||K2||_F)` of Gram matrices (Fort et al.).

    Args:
      k1, k2: [..., m, m] Gram matrices of the same examples (e.g. at epochs t and t + 1).
    Returns:
      [...] float64 distances in [0, 2] (0: the same kernel up to a positive scale).
    Raises:
      ValueError: shapes differ, or a kernel is zero or not finite.
    """
    k1, k2 = np.asarray(k1, np.float64), np.asarray(k2, np.float64)
    if k1.shape != k2.shape or k1.ndim < 2:
        raise ValueError(f"kernels have shapes {k1.shape} and {k2.shape}; pass two [..., m, m]")
    n1 = np.sqrt(np.sum(k1 * k1, axis=(-2, -1)))
    n2 = np.sqrt(np.sum(k2 * k2, axis=(-2, -1)))
    if not (np.all(np.isfinite(n1)) and np.all(np.isfinite(n2))):
        raise ValueError("a kernel is NaN or inf; check the networks' weights")
    if np.any(n1 == 0) or np.any(n2 == 0):
        raise ValueError("a kernel is zero, so its direction is undefined; check the networks")
    return 1.0 - np.sum(k1 * k2, axis=(-2, -1)) / (n1 * n2)
