"""The seed axis: running a function of one seed over K stacked seeds inside one jit.

Every K-seed program of the project (scores, NTK, training steps, evaluation) lifts a function of
one seed with `over_seeds`, and every caller resolves its `seed_axis` option with `resolve`, so
the CPU/accelerator default is decided here and nowhere else.

Usage:

    mode = seed_axis.resolve(None)  # 'unroll' on CPU, 'vmap' on accelerators
    logits = seed_axis.over_seeds(lambda v: model.apply(v, x), mode)(variables)  # [K, B, C]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# The explicit modes; 'auto' (and None) resolve to one of them (see `resolve`).
MODES = ("unroll", "vmap", "map")


def resolve(mode: str | None) -> str:
    """The mode to run: `mode` itself, or for 'auto'/None vmap on accelerators, unroll on CPU.

    On CPU, vmapping convolutions over seeds makes them grouped convolutions that run 1.5-8x
    slower in 3x the memory, and XLA runs a training step inside a loop (`lax.map`) about 7x
    slower than the same step unrolled; on accelerators vmap batches the seeds.

    Raises:
      ValueError: an unknown mode.
    """
    if mode in (None, "auto"):
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    if mode not in MODES:
        raise ValueError(f"Unknown seed_axis {mode!r}; use 'auto', 'vmap', 'unroll' or 'map'.")
    return mode


def over_seeds(fn: Callable, mode: str | None) -> Callable:
    """Lifts `fn(*args)` of one seed to args with a leading seed axis K.

    Args:
      fn: function of one seed's arguments.
      mode: 'vmap'; 'unroll' (the K seeds one after another, unrolled inside the jit); 'map'
        (`lax.map`, a loop inside the jit that compiles once whatever K is); or 'auto'/None
        (`resolve`: vmap on accelerators, unroll on CPU).
    """
    mode = resolve(mode)
    if mode == "vmap":
        return jax.vmap(fn)
    if mode == "map":
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)

    def unrolled(*args):
        num_seeds = jax.tree.leaves(args)[0].shape[0]
        outs = [fn(*jax.tree.map(lambda x, k=k: x[k], args)) for k in range(num_seeds)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return unrolled
