"""Exact per-example gradient norms from one batched backward pass.

The GraNd score of an example is the L2 norm of the gradient of its cross-entropy loss with respect
to all trainable parameters. `jax.vmap(jax.grad(...))` materializes every per-example gradient and
runs convolutions one example at a time; this module instead runs ONE backward pass of the summed
per-example losses with respect to zero perturbations added to the output of every site (a Dense,
Conv or BatchNorm call that a rule covers, found by `grad_sites.find_sites`), captured with
`flax.linen.intercept_methods`. Each perturbation's gradient is the per-example gradient `g_i` of
that layer's output (the loss is a sum, and in eval mode no layer mixes examples); with the
captured layer input `a_i` it gives the layer's per-example squared norm (`grad_rules`).

Exact, or refused:
- `grad_sites` accepts a call as a site only if its rule applies to the module's configuration,
  the module is called once, its leading axis follows the batch size, and its parameters are used
  nowhere else (weight tying); BatchNorm rules reduce over the module's own feature axes.
- Every parameter no site covers gets exact per-example gradients from `vmap(grad)` restricted to
  those parameters (the fallback), so tied kernels, layers without a rule and lifted transforms
  are exact too, only slower.
- `grad_guard` checks each site against `vmap(grad)` on a few examples of the first batch of every
  `grand_scores` call and moves a disagreeing layer to the fallback (`exclude=`).
- A BatchNorm with batch statistics mixes examples: a one-line ValueError asks for `train=False`.

Reusable capture (e.g. for an empirical NTK, vmapped over logit classes):

    cap = capture(apply_fn, variables, images, lambda logits: logits[:, c])
    cap.sites      # tuple of grad_sites.Site: key, kind ('dense'|'conv'|'batchnorm'), conv config
    cap.inputs     # {site.key: a [B, ...]}: the layer input (BatchNorm: x_hat, normalized)
    cap.out_grads  # {site.key: g [B, ...]}: d output_fn(logits)_i / d layer output_i
    cap.fallback   # ('params', ...) paths no site covers: use vmap(grad)/jacrev for those

`Capture` is a pytree whose array leaves are `inputs` and `out_grads` (sites and fallback are
static), so `jax.vmap(lambda c: capture(...), ...)(classes)` stacks them over classes.

Usage:

    apply_fn = lambda v, x: model.apply(v, x, train=False)
    norms = per_example_grad_norms(apply_fn, variables, images, labels)  # [B] float32
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from datadiet_jax import fast_pools, grad_rules, grad_sites
from datadiet_jax.grad_sites import ApplyFn, ParamPath, Site


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy. logits: [B, C], labels: [B] int -> [B] float32."""
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
    return jax.nn.logsumexp(logits, axis=1) - label_logit


@flax.struct.dataclass
class Capture:
    """Per-site captured inputs and output gradients (see the module docstring)."""

    sites: tuple[Site, ...] = flax.struct.field(pytree_node=False)
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
      exclude: site keys to leave to the fallback (see `grad_guard`).
    Returns:
      Capture with `inputs[key]: a [B, ...]`, `out_grads[key]: g [B, *out_shape[1:]]` (the
      layer output's dtype), the static `sites` and the `fallback` parameter paths.
    """
    sites, fallback = grad_sites.find_sites(apply_fn, variables, images, exclude)
    if not sites:
        return Capture(sites, fallback, {}, {})
    by_key = {s.key: s for s in sites}
    eps = _vary_like({s.key: jnp.zeros(s.out_shape, s.out_dtype) for s in sites}, images, variables)

    def summed(eps):
        captured = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            site = by_key.get("/".join(context.module.path))
            if context.method_name != "__call__" or site is None:
                return out
            x = grad_sites.call_input(args, kwargs)
            if site.kind == "batchnorm":
                x = grad_rules.batchnorm_input(context.module, x)
            captured[site.key] = jax.lax.stop_gradient(x)
            return out + eps[site.key]

        with nn.intercept_methods(interceptor):
            logits = apply_fn(variables, images)
        return jnp.sum(output_fn(logits)), captured

    grads, captured = jax.grad(fast_pools.with_fast_pools(summed), has_aux=True)(eps)
    return Capture(sites, fallback, captured, grads)


def _weight(labels, mask) -> jax.Array:
    return jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)


def site_sq_norms(
    apply_fn: ApplyFn, variables, images, labels, mask=None, *, exclude: Iterable[str] = ()
) -> tuple[dict[str, jax.Array], tuple[ParamPath, ...]]:
    """Per-site per-example squared norms of the cross-entropy gradient, by the fast rules.

    Args: as `per_example_grad_norms`.
    Returns:
      ({site key: [B] float32}, fallback parameter paths that no site covers).
    """
    weight = _weight(labels, mask)
    cap = capture(
        apply_fn, variables, images, lambda z: cross_entropy(z, labels) * weight, exclude=exclude
    )
    norms = {
        s.key: grad_rules.site_sq_norm(s, cap.inputs[s.key], cap.out_grads[s.key])
        for s in cap.sites
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
    norms, fallback = site_sq_norms(apply_fn, variables, images, labels, mask, exclude=exclude)
    total = sum(norms.values(), jnp.zeros(labels.shape, jnp.float32))
    if fallback:
        exact = vmap_grad_sq_norms(apply_fn, variables, images, labels, frozenset(fallback))
        total = total + exact * _weight(labels, mask)
    return jnp.sqrt(total), norms


def vmap_grad_leaf_sq_norms(
    apply_fn: ApplyFn, variables, images, labels, only=None
) -> dict[ParamPath, jax.Array]:
    """Per-example squared gradient norm of each parameter leaf by `vmap(grad)` (exact, generic).

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]`.
      variables: one model's variables; only `variables['params']` is differentiated.
      images: [B, ...]; labels: [B] int.
      only: optional set of `('params', *path)` leaf paths to differentiate (default: all params).
    Returns:
      {('params', *path): [B] float32}.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    keys = [k for k in flat if only is None or ("params", *k) in only]
    wrt = _vary_like({k: flat[k] for k in keys}, images, variables)

    def loss_one(sub, x, y):
        params = flax.traverse_util.unflatten_dict({**flat, **sub})
        logits = apply_fn({**variables, "params": params}, x[None])
        return cross_entropy(logits, y[None])[0]

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(wrt, images, labels)
    return {
        ("params", *k): jnp.sum(g.astype(jnp.float32).reshape(g.shape[0], -1) ** 2, axis=1)
        for k, g in grads.items()
    }


def vmap_grad_sq_norms(apply_fn: ApplyFn, variables, images, labels, only=None) -> jax.Array:
    """Per-example squared gradient norms by `vmap(grad)`, summed over params -> [B] float32.

    Args: as `vmap_grad_leaf_sq_norms`.
    """
    leaves = vmap_grad_leaf_sq_norms(apply_fn, variables, images, labels, only)
    return sum(leaves.values(), jnp.zeros((images.shape[0],), jnp.float32))


def coverage(apply_fn: ApplyFn, variables, images, exclude: Iterable[str] = ()) -> dict[str, int]:
    """Counts of parameters covered by each fast rule and by the vmap(grad) fallback.

    Args:
      apply_fn, variables: as in `per_example_grad_norms` (one model).
      images: [B, ...] array or ShapeDtypeStruct.
      exclude: as in `per_example_grad_norms`.
    Returns:
      {'dense': n, 'conv': n, 'batchnorm': n, 'fallback': n} parameter counts.
    """
    sites, fallback = grad_sites.find_sites(apply_fn, variables, images, exclude)
    flat = _flat_params(variables)
    counts = {"dense": 0, "conv": 0, "batchnorm": 0}
    for s in sites:
        counts[s.kind] += sum(int(flat[p].size) for p in s.param_paths)
    counts["fallback"] = sum(int(flat[p].size) for p in fallback)
    return counts


def _flat_params(variables: Mapping) -> dict[ParamPath, jax.Array]:
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    return {("params", *k): v for k, v in flat.items()}


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
