"""Exact per-example gradient norms of a Flax Linen model from one batched backward pass.

Instead of materializing every per-example gradient with `jax.vmap(jax.grad(...))`, ONE backward
pass of the summed per-example losses runs w.r.t. zero perturbations added to the output of
every site (a Dense, Conv or BatchNorm call a rule covers, `linen_sites.find_sites`), captured
with `flax.linen.intercept_methods`. Each perturbation's gradient is the per-example gradient
`g_i` of that layer's output; with the captured layer input `a_i` it gives the layer's
per-example squared norm (`rules`). Parameters no site covers (tied kernels, layers without a
rule, lifted transforms) get exact per-example gradients from `vmap(grad)` (`fallback`), and
`guard` checks each site on the first batch of every `grand_scores` call. A BatchNorm with batch
statistics mixes examples: a one-line ValueError asks for `train=False`. `capture` is reusable
(e.g. an empirical NTK, vmapped over classes): `Capture` is a pytree of per-site `inputs` and
`out_grads`, with static `sites` and `fallback` paths.

Usage:

    apply_fn = lambda v, x: model.apply(v, x, train=False)
    norms = per_example_grad_norms(apply_fn, variables, images, labels)  # [B] float32
    cap = capture(apply_fn, variables, images, lambda logits: logits[:, c])
    cap.inputs[key], cap.out_grads[key]  # a [B, ...] (BatchNorm: x_hat), g [B, ...]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from datadiet_jax.scores.losses import cross_entropy
from datadiet_jax.scores.pergrad import fallback, fast_pools, linen_sites, rules
from datadiet_jax.scores.pergrad.linen_sites import ApplyFn, LinenSite, ParamPath


@flax.struct.dataclass
class Capture:
    """Per-site captured inputs and output gradients (see the module docstring)."""

    sites: tuple[LinenSite, ...] = flax.struct.field(pytree_node=False)
    fallback: tuple[ParamPath, ...] = flax.struct.field(pytree_node=False)
    inputs: dict[str, jax.Array]
    out_grads: dict[str, jax.Array]


def capture(
    apply_fn: ApplyFn,
    variables,
    images: jax.Array,
    output_fn: Callable[[jax.Array], jax.Array],
    *,
    exclude: Iterable[str] = (),
) -> Capture:
    """Captures every site's per-example input and output gradient in one backward pass.

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]` in eval mode (no layer may mix
        examples). Collections other than 'params' are constants.
      variables: one model's variables (no seed axis).
      images: [B, ...] float.
      output_fn: `logits [B, C] -> [B]` per-example values (e.g. losses, or `logits[:, c]`);
        `out_grads` hold the gradient of their sum, i.e. of each example's own value.
      exclude: site keys to leave to the fallback (see `guard`).
    Returns:
      Capture with `inputs[key]: a [B, ...]`, `out_grads[key]: g [B, *out_shape[1:]]` (the
      layer output's dtype), the static `sites` and the `fallback` parameter paths.
    """
    sites, leftover = linen_sites.find_sites(apply_fn, variables, images, exclude)
    if not sites:
        return Capture(sites, leftover, {}, {})
    by_key = {s.key: s for s in sites}
    eps = fallback.vary_like(
        {s.key: jnp.zeros(s.out_shape, s.out_dtype) for s in sites}, images, variables
    )

    def summed(eps):
        captured = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            site = by_key.get("/".join(context.module.path))
            if context.method_name != "__call__" or site is None:
                return out
            x = linen_sites.call_input(args, kwargs)
            if site.kind == "batchnorm":
                x = rules.batchnorm_input(context.module, x)
            captured[site.key] = jax.lax.stop_gradient(x)
            return out + eps[site.key]

        with nn.intercept_methods(interceptor):
            logits = apply_fn(variables, images)
        return jnp.sum(output_fn(logits)), captured

    grads, captured = jax.grad(fast_pools.with_fast_pools(summed), has_aux=True)(eps)
    return Capture(sites, leftover, captured, grads)


def site_sq_norms(
    apply_fn: ApplyFn, variables, images, labels, mask=None, *, exclude: Iterable[str] = ()
) -> tuple[dict[str, jax.Array], tuple[ParamPath, ...]]:
    """Per-site per-example squared norms of the cross-entropy gradient, by the fast rules.

    Args: as `per_example_grad_norms`.
    Returns:
      ({site key: [B] float32}, fallback parameter paths that no site covers).
    """
    weight = fallback.example_weights(labels, mask)
    cap = capture(
        apply_fn, variables, images, lambda z: cross_entropy(z, labels) * weight, exclude=exclude
    )
    norms = {
        s.key: rules.site_sq_norm(s, cap.inputs[s.key], cap.out_grads[s.key]) for s in cap.sites
    }
    return norms, cap.fallback


def per_example_grad_norms(
    apply_fn: ApplyFn, variables, images, labels, mask=None, *, exclude: Iterable[str] = ()
) -> jax.Array:
    """Exact per-example L2 norms of the cross-entropy gradient w.r.t. all of `variables['params']`.

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]`, a Flax `apply` in eval mode (no
        layer may mix examples). Other collections than 'params' are held constant.
      variables: one model's variables (no seed axis).
      images: [B, ...] float; labels: [B] int in [0, C).
      mask: optional [B] {0, 1}; masked-out examples get norm 0.
      exclude: site keys (module paths joined with '/') whose params go to the fallback.
    Returns:
      norms: [B] float32.
    """
    return norms_and_site_sq_norms(apply_fn, variables, images, labels, mask, exclude=exclude)[0]


def norms_and_site_sq_norms(
    apply_fn: ApplyFn, variables, images, labels, mask=None, *, exclude: Iterable[str] = ()
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`per_example_grad_norms` and the per-site squared norms it sums (for the guard).

    Args: as `per_example_grad_norms`.
    Returns:
      (norms [B] float32, {site key: [B] float32 squared norm of the site's covered params}).
    """
    norms, leftover = site_sq_norms(apply_fn, variables, images, labels, mask, exclude=exclude)
    total = sum(norms.values(), jnp.zeros(labels.shape, jnp.float32))
    if leftover:
        exact = fallback.linen_sq_norms(apply_fn, variables, images, labels, frozenset(leftover))
        total = total + exact * fallback.example_weights(labels, mask)
    return jnp.sqrt(total), norms


def coverage(apply_fn: ApplyFn, variables, images, exclude: Iterable[str] = ()) -> dict[str, int]:
    """Counts of parameters covered by each fast rule and by the vmap(grad) fallback.

    Args:
      apply_fn, variables: as in `per_example_grad_norms` (one model).
      images: [B, ...] array or ShapeDtypeStruct.
      exclude: as in `per_example_grad_norms`.
    Returns:
      {'dense': n, 'conv': n, 'batchnorm': n, 'fallback': n} parameter counts.
    """
    sites, leftover = linen_sites.find_sites(apply_fn, variables, images, exclude)
    flat = _flat_params(variables)
    counts = {"dense": 0, "conv": 0, "batchnorm": 0}
    for s in sites:
        counts[s.kind] += sum(int(flat[p].size) for p in s.param_paths)
    counts["fallback"] = sum(int(flat[p].size) for p in leftover)
    return counts


def _flat_params(variables: Mapping) -> dict[ParamPath, jax.Array]:
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    return {("params", *k): v for k, v in flat.items()}
