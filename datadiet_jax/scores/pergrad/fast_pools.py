"""Non-overlapping max-pools with a fast, equivalent gradient, for GraNd and the training step.

`with_fast_pools(fn)` traces `fn` and evaluates its jaxpr with every non-overlapping max-pool
(a `reduce_window_max` whose strides equal its window, unpadded, undilated, tiling its input)
replaced by a reshape-and-max whose custom gradient goes to the first maximum of each window,
exactly as `jax.grad` of `reduce_window_max` does, without XLA's CPU select-and-scatter. A
function without max-pools runs as it is.

Usage:

    grads = jax.grad(fast_pools.with_fast_pools(loss_fn))(params)  # loss_fn(params) -> scalar
"""

from __future__ import annotations

import functools

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from datadiet_jax.scores.pergrad import jaxpr_eval


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _block_max(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    return _block_max_fwd(x, window)[0]


def _blocks(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """[n_0, ..., n_d] -> [n_0/w_0, ..., n_d/w_d, prod(w)] (non-overlapping windows last)."""
    split = [d for n, w in zip(x.shape, window, strict=True) for d in (n // w, w)]
    rank = len(window)
    order = [2 * i for i in range(rank)] + [2 * i + 1 for i in range(rank)]
    blocks = x.reshape(split).transpose(order)
    return blocks.reshape(*blocks.shape[:rank], -1)


def _block_max_fwd(x, window):
    blocks = _blocks(x, window)
    return jnp.max(blocks, axis=-1), (jnp.argmax(blocks, axis=-1), x.shape)


def _block_max_bwd(window, res, g):
    first, shape = res
    rank = len(window)
    scattered = g[..., None] * jax.nn.one_hot(first, int(np.prod(window)), dtype=g.dtype)
    scattered = scattered.reshape(*g.shape, *window)
    order = [i for r in range(rank) for i in (r, rank + r)]
    return (scattered.transpose(order).reshape(shape),)


_block_max.defvjp(_block_max_fwd, _block_max_bwd)


def _is_block_pool(params, shape) -> bool:
    window = params["window_dimensions"]
    return (
        tuple(params["window_strides"]) == tuple(window)
        and all(tuple(p) == (0, 0) for p in params["padding"])
        and all(d == 1 for d in (*params["base_dilation"], *params["window_dilation"]))
        and all(n % w == 0 for n, w in zip(shape, window, strict=True))
    )


def pool_override(eqn, invals) -> list | None:
    """A `jaxpr_eval` override: a non-overlapping max-pool as `_block_max`, else None.

    Both give the gradient to the first maximum of each window, but XLA's CPU select-and-scatter
    (the transpose of `reduce_window_max`) is several times slower than the whole forward pass.
    """
    if eqn.primitive.name == "reduce_window_max" and _is_block_pool(eqn.params, invals[0].shape):
        return [_block_max(invals[0], tuple(eqn.params["window_dimensions"]))]
    return None


def with_fast_pools(fn):
    """`fn` (one array argument) with its max-pools differentiated by `_block_max`."""

    def wrapped(arg):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(arg)
        if not any(e.primitive.name == "reduce_window_max" for e in _all_eqns(closed.jaxpr)):
            return fn(arg)
        outs = jaxpr_eval.eval_inlined(
            closed.jaxpr, closed.consts, jax.tree.leaves(arg), pool_override
        )
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


def _all_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        inner = eqn.params.get("jaxpr")
        if eqn.primitive.name in ("jit", "pjit") and isinstance(inner, jex.ClosedJaxpr):
            yield from _all_eqns(inner.jaxpr)
