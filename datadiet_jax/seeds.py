"""Running a function of one seed over K stacked seeds inside one jit."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def over_seeds(fn: Callable, mode: str) -> Callable:
    """Lifts `fn(*args)` of one seed to args with a leading seed axis K.

    Args:
      fn: function of one seed's arguments.
      mode: 'vmap'; 'unroll' (the K seeds one after another, unrolled inside the jit); 'map'
        (`lax.map`, a loop inside the jit that compiles once whatever K is); or 'auto': vmap on
        accelerators, unroll on CPU. On CPU, vmapping convolutions over seeds is several times
        slower than running them one after another, and XLA runs a training step inside a loop
        about 7x slower than the same step unrolled.
    """
    if mode == "auto":
        mode = "unroll" if jax.default_backend() == "cpu" else "vmap"
    if mode == "vmap":
        return jax.vmap(fn)
    if mode == "map":
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)
    if mode == "unroll":

        def unrolled(*args):
            num_seeds = jax.tree.leaves(args)[0].shape[0]
            outs = [fn(*jax.tree.map(lambda x, k=k: x[k], args)) for k in range(num_seeds)]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

        return unrolled
    raise ValueError(f"Unknown seed_axis {mode!r}; use 'auto', 'vmap', 'unroll' or 'map'.")
