"""The exact fallback, `vmap(grad)` restricted to some parameters, and what both GraNd paths share.

Every parameter that no fast rule covers gets its per-example gradient from `jax.vmap(jax.grad)` of
the per-example cross-entropy, restricted to those parameters (the Linen path by parameter path,
the pure-form path by leaf index: both through `per_leaf_sq_norms`). It is also the guard's
reference. `example_weights` (the mask of a padded batch) and `vary_like` (differentiated values
inside `shard_map`, so no psum adds up different examples' gradients) serve both paths.

Usage:

    sq = fallback.linen_sq_norms(apply_fn, variables, images, labels, only=paths)  # [B] float32
    per_leaf = fallback.pure_leaf_sq_norms(form.logits, one, images, labels)  # {leaf: [B]}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax
import jax
import jax.numpy as jnp

from datadiet_jax.scores.losses import cross_entropy
from datadiet_jax.scores.pergrad.linen_sites import ParamPath


def example_weights(labels, mask=None) -> jax.Array:
    """[B] float32 weights of a batch's examples: its mask (0 for padding), or ones."""
    return jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)


def per_leaf_sq_norms(
    logits_fn: Callable, leaves: Sequence, wanted: Sequence[int], images, labels, like
) -> list[jax.Array]:
    """Per-example squared gradient norms of some leaves by `vmap(grad)` (exact, generic).

    Args:
      logits_fn: `(leaves, x [1, ...]) -> logits [1, C]`, the model as a function of the list of
        all its param leaves.
      leaves: every param leaf of one model (no seed axis).
      wanted: indices of the leaves to differentiate.
      images: [B, ...]; labels: [B] int.
      like: values whose mesh axes the differentiated leaves must vary over (see `vary_like`).
    Returns:
      One [B] float32 array per wanted leaf, in `wanted` order.
    """
    wrt = vary_like([leaves[i] for i in wanted], images, like)

    def loss_one(sub, x, y):
        full = list(leaves)
        for i, v in zip(wanted, sub, strict=True):
            full[i] = v
        return cross_entropy(logits_fn(full, x[None]), y[None])[0]

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(wrt, images, labels)
    return [jnp.sum(g.astype(jnp.float32).reshape(g.shape[0], -1) ** 2, axis=1) for g in grads]


def linen_leaf_sq_norms(
    apply_fn, variables, images, labels, only=None
) -> dict[ParamPath, jax.Array]:
    """Per-example squared gradient norm of each Linen parameter leaf by `vmap(grad)`.

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]`.
      variables: one model's variables; only `variables['params']` is differentiated.
      images: [B, ...]; labels: [B] int.
      only: optional set of `('params', *path)` leaf paths to differentiate (default: all params).
    Returns:
      {('params', *path): [B] float32}.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    paths = list(flat)
    wanted = [i for i, p in enumerate(paths) if only is None or ("params", *p) in only]

    def logits_fn(leaves, x):
        params = flax.traverse_util.unflatten_dict(dict(zip(paths, leaves, strict=True)))
        return apply_fn({**variables, "params": params}, x)

    norms = per_leaf_sq_norms(
        logits_fn, [flat[p] for p in paths], wanted, images, labels, variables
    )
    return {("params", *paths[i]): n for i, n in zip(wanted, norms, strict=True)}


def linen_sq_norms(apply_fn, variables, images, labels, only=None) -> jax.Array:
    """Per-example squared gradient norms by `vmap(grad)`, summed over params -> [B] float32.

    Args: as `linen_leaf_sq_norms`.
    """
    leaves = linen_leaf_sq_norms(apply_fn, variables, images, labels, only)
    return sum(leaves.values(), jnp.zeros((images.shape[0],), jnp.float32))


def pure_leaf_sq_norms(apply, variables, images, labels, only=None) -> dict[int, jax.Array]:
    """Per-example squared gradient norm of each param leaf of a pure-form model by `vmap(grad)`.

    Args:
      apply: `(params, state, images [B, ...]) -> logits [B, C]`.
      variables: `{'params': ..., 'state': ...}` of one model; params are differentiated.
      images: [B, ...]; labels: [B] int.
      only: optional param leaf indices to differentiate (default: all).
    Returns:
      {leaf index: [B] float32}.
    """
    leaves, tree = jax.tree.flatten(variables["params"])
    wanted = [i for i in range(len(leaves)) if only is None or i in set(only)]

    def logits_fn(full, x):
        return apply(jax.tree.unflatten(tree, full), variables["state"], x)

    norms = per_leaf_sq_norms(logits_fn, leaves, wanted, images, labels, variables)
    return dict(zip(wanted, norms, strict=True))


def _varying_axes(x) -> frozenset:
    """The manual mesh axes `x` varies over inside shard_map (empty outside)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()) or ())


def vary_like(tree, *likes):
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
