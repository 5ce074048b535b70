"""Scores over a device mesh with axes ('seed', 'data').

Seeds are split over the 'seed' axis and each batch over the 'data' axis; every device scores its
own seeds on its own examples, so the result equals the single-device one. The batch function runs
under `shard_map` with a per-shard `lax.map` over the local seeds (jit with sharded stacked seeds
fails in JAX's convolution batching rule). Inside, every differentiated value is marked as varying
over both axes (see `pergrad.fallback.vary_like`); a replicated value would make the backward
pass psum per-example gradients across data shards. On several hosts, every process runs the same
call with the same full `images`/`labels` (each transfers only the slices its own devices hold)
and receives the full [K, N] result. K must be a multiple of the 'seed' axis size and
`batch_size` of the 'data' axis size.

Usage (one host, or several after `jax.distributed.initialize()`):

    from jax.sharding import Mesh
    devices = np.array(jax.devices()).reshape(2, -1)  # [seed, data]
    mesh = Mesh(devices, ('seed', 'data'))
    scores = grand_scores(model, variables, images, labels, batch_size=128, mesh=mesh)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("seed", "data")


def check_mesh(mesh: Mesh, num_seeds: int, batch_size: int) -> None:
    """Raises ValueError unless `mesh` has axes ('seed', 'data') that divide K and batch_size."""
    if tuple(mesh.axis_names) != AXES:
        raise ValueError(
            f"mesh axes are {tuple(mesh.axis_names)}; build it as Mesh(devices, ('seed', 'data'))."
        )
    seeds, data = mesh.shape["seed"], mesh.shape["data"]
    if num_seeds % seeds:
        raise ValueError(
            f"K={num_seeds} seeds do not divide over the mesh 'seed' axis of size {seeds}; "
            "use a number of seeds that is a multiple of it."
        )
    if batch_size % data:
        raise ValueError(
            f"batch_size={batch_size} does not divide over the mesh 'data' axis of size {data}; "
            "use a multiple of it."
        )


def shard_scores_fn(local_fn: Callable, mesh: Mesh) -> Callable:
    """Wraps a [k, b] batch function into a jitted [K, B] one sharded over `mesh`.

    Args:
      local_fn: `(variables [k, ...], images [b, ...], labels [b], mask [b]) -> [k, b]`, the
        scores of the local seeds on the local examples.
      mesh: Mesh with axes ('seed', 'data').
    Returns:
      `(variables [K, ...], images [B, ...], labels [B], mask [B]) -> [K, B]`.
    """
    sharded = jax.shard_map(
        local_fn,
        mesh=mesh,
        in_specs=(P("seed"), P("data"), P("data"), P("data")),
        out_specs=P("seed", "data"),
    )
    return jax.jit(sharded)


def put_array(x, sharding: NamedSharding) -> jax.Array:
    """Places a host array (the same full array on every process) with `sharding`; each process
    transfers only the slices its own devices hold."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_variables(variables, mesh: Mesh):
    """Places stacked variables [K, ...] with the seed axis split over 'seed'."""
    sharding = NamedSharding(mesh, P("seed"))
    return jax.tree.map(lambda v: put_array(v, sharding), variables)


def put_batch(x, mesh: Mesh) -> jax.Array:
    """Places a host batch [B, ...] split over 'data' (replicated over 'seed')."""
    return put_array(x, NamedSharding(mesh, P("data")))


def fetch(x: jax.Array) -> np.ndarray:
    """Brings a (sharded) result to host memory on every process: the whole array on each."""
    if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a scores call's arrays live: the default device (`mesh` None) or a ('seed',
    'data') mesh; how batches go there (`put`) and results come back (`fetch`)."""

    mesh: Mesh | None = None

    def put(self, x) -> jax.Array:
        """A host batch `[B, ...]` on the devices (split over 'data' on a mesh)."""
        return jnp.asarray(x) if self.mesh is None else put_batch(x, self.mesh)

    def fetch(self, x) -> np.ndarray:
        """A device result as one host array."""
        return np.asarray(x) if self.mesh is None else fetch(x)

    def put_variables(self, variables, num_seeds: int, batch_size: int):
        """The stacked variables `[K, ...]` on the devices (seeds over 'seed' on a mesh).

        Raises:
          ValueError: a mesh that does not fit `num_seeds` and `batch_size` (`check_mesh`).
        """
        if self.mesh is None:
            return jax.device_put(variables)
        check_mesh(self.mesh, num_seeds, batch_size)
        return put_variables(variables, self.mesh)
