"""Training on a ('seed', 'data') device mesh: its shape, placement, and the sharded K-seed step.

Seeds go across devices first: the stacked state `[K, ...]` and the statistics `[K, N]` are split
over the 'seed' axis; when there are more devices than seeds, each seed's batch `[B]` is split
over 'data' too (data parallel within a seed). The step runs under `shard_map` with only 'seed'
manual: each device group lifts the one-seed step over its own K / seeds seeds
(`seed_axis.over_seeds`; one after another where vmapping would lose the data split,
`step_seed_axis`), and JAX's SPMD partitioner inserts the reductions across the data shards, so
BatchNorm statistics, gradients and the forgetting and AUM statistics are those of the whole
per-seed batch. The result equals the single-device one up to float rounding. (A plain jit of the
stacked step, with the seeds unrolled, would have every device compute all K seeds.)

With several processes (`multihost`) the mesh spans every device of every process, in process
order; each process's input pipeline makes only its block of the `[K, B]` batch (`local_block`),
and `place_batch` assembles the global arrays. `config.train.mesh` chooses the shape: 'off' (the
single-device program), 'auto' (`auto_shape`) or 'SEEDSxDATA' such as '2x4'.

Usage:

    from datadiet_jax.training import k_step, train_mesh
    mesh = train_mesh.make_mesh(config.train.mesh, num_seeds=K, batch_size=B)  # None: one device
    init_fn, step_fn = k_step.programs(model, config.train, schedule_steps, mesh)
    state, stats = train_mesh.place(state, mesh), train_mesh.place(stats, mesh)
    state, stats, loss = step_fn(state, stats, train_mesh.place_batch(batch, mesh, K, B))
    state = train_mesh.gather(state, mesh)                     # back on the default device
"""

from __future__ import annotations

import functools
import math
import re

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from datadiet_jax.scores import seed_axis, sharding

AXES = sharding.AXES
_EXPLICIT = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
# The batch keys split over ('seed', 'data'); every other key (the Dropout keys) over 'seed'.
_PER_EXAMPLE = ("image", "label", "index", "mask")


def check_mode(mode) -> None:
    """Raises ValueError unless `mode` is 'auto', 'off' or 'SEEDSxDATA' (e.g. '2x4')."""
    if mode in ("auto", "off") or (isinstance(mode, str) and _EXPLICIT.match(mode)):
        return
    raise ValueError(
        f"config.train.mesh is {mode!r}; set --config.train.mesh to 'auto', 'off' or "
        "'SEEDSxDATA' (e.g. '2x4')."
    )


def auto_shape(num_seeds: int, batch_size: int, num_devices: int) -> tuple[int, int]:
    """The (seeds, data) shape 'auto' picks: seeds = gcd(K, devices), data = the largest
    divisor of devices / seeds that divides `batch_size`.

    E.g. on 8 devices with batch 128: K=10 -> (2, 4), K=4 -> (4, 2), K=1 -> (1, 8), K=8 -> (8, 1).
    """
    seeds = math.gcd(num_seeds, num_devices)
    return seeds, math.gcd(num_devices // seeds, batch_size)


def mesh_shape(mode: str, num_seeds: int, batch_size: int, num_devices: int) -> tuple[int, int]:
    """The (seeds, data) shape of `mode` for K seeds and `batch_size` on `num_devices`.

    Raises:
      ValueError: an explicit shape needs more devices than there are, or does not divide K or
        `batch_size` (one line naming the fix).
    """
    check_mode(mode)
    if mode == "off":
        return 1, 1
    if mode == "auto":
        return auto_shape(num_seeds, batch_size, num_devices)
    seeds, data = (int(g) for g in _EXPLICIT.match(mode).groups())
    if seeds * data > num_devices:
        raise ValueError(
            f"config.train.mesh={mode!r} needs {seeds * data} devices, but JAX sees "
            f"{num_devices}; use 'auto' or a shape of at most {num_devices} devices."
        )
    if num_seeds % seeds or batch_size % data:
        raise ValueError(
            f"config.train.mesh={mode!r} does not divide K={num_seeds} seeds over {seeds} or "
            f"batch_size={batch_size} over {data}; use 'auto' or a shape whose seed size divides "
            "K and whose data size divides the batch size."
        )
    return seeds, data


def make_mesh(mode: str, num_seeds: int, batch_size: int, name: str = "train") -> Mesh | None:
    """The ('seed', 'data') mesh of one training, or None for one device; logs the choice once.

    Args:
      mode: `config.train.mesh`.
      num_seeds: K; batch_size: B, per seed.
      name: the training's name in the log line.

    Raises:
      ValueError: a shape `mesh_shape` refuses, or (a job of several processes) a mesh that
        leaves devices out.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    seeds, data = mesh_shape(mode, num_seeds, batch_size, len(devices))
    if jax.process_count() > 1 and seeds * data != len(devices):
        raise ValueError(
            f"{name}: config.train.mesh={mode!r} gives a {seeds}x{data} mesh, {seeds * data} of "
            f"the {len(devices)} devices of this {jax.process_count()}-process job, but every "
            "device must take part; use a mesh of all of them (a batch size or K they divide)."
        )
    if seeds * data == 1:
        logging.info("%s: training on one device (train.mesh=%r).", name, mode)
        return None
    grid = [devices[i * data : (i + 1) * data] for i in range(seeds)]
    mesh = Mesh(grid, AXES)
    logging.info(
        "%s: training on a mesh %s (train.mesh=%r, %d of %d devices).",
        name,
        dict(mesh.shape),
        mode,
        seeds * data,
        len(devices),
    )
    return mesh


@functools.lru_cache(maxsize=64)
def local_block(mesh: Mesh | None, num_seeds: int, batch_size: int) -> tuple[slice, slice]:
    """The block `(seeds, batch columns)` of a `[K, B]` batch that this process's devices hold
    (the whole batch with one process or without a mesh): the part its input pipeline makes.

    Raises:
      ValueError: this process's shards do not form one block (a device order no mesh of
        `make_mesh` has).
    """
    if mesh is None:
        return slice(0, num_seeds), slice(0, batch_size)
    shape = (num_seeds, batch_size)
    shards = NamedSharding(mesh, P("seed", "data")).addressable_devices_indices_map(shape)
    spans = {
        tuple(s.indices(n)[:2] for s, n in zip(index, shape, strict=True))
        for index in shards.values()
    }
    (r0, r1), (c0, c1) = (
        (min(s[a][0] for s in spans), max(s[a][1] for s in spans)) for a in range(2)
    )
    held = sum((s[0][1] - s[0][0]) * (s[1][1] - s[1][0]) for s in spans)
    if held != (r1 - r0) * (c1 - c0):
        raise ValueError(
            f"the devices of process {jax.process_index()} hold no single block of the "
            f"[{num_seeds}, {batch_size}] batch; build the mesh with train_mesh.make_mesh."
        )
    return slice(r0, r1), slice(c0, c1)


def step_seed_axis(mode: str, mesh: Mesh | None) -> str:
    """The `seed_axis` of the training step on `mesh`: `mode`, except that 'auto' becomes 'map'
    where it would vmap the seeds of a mesh with a 'data' axis.

    Vmapped seeds turn each convolution into a grouped one over the seeds; JAX's SPMD
    partitioner does not split those over 'data' and all-gathers every activation instead, so
    each device would compute its seeds on the whole batch (ResNet18, K=10 on 2x4: 85
    all-gathers and 3.7 GB of temporaries per device, against none and 0.7 GB with 'map';
    `tests/training/test_train_mesh.py`). Seeds one after another keep the data split. An
    explicit 'vmap' is kept, with a warning.
    """
    if mesh is None or mesh.shape["data"] == 1 or seed_axis.resolve(mode) != "vmap":
        return mode
    if mode in (None, "auto"):
        return "map"
    logging.warning(
        "train.seed_axis='vmap' on a mesh with a 'data' axis of %d: the partitioner "
        "gathers each whole batch on every device (no data parallelism); 'auto' "
        "runs the seeds one after another instead.",
        mesh.shape["data"],
    )
    return mode


def sharded_step(body, mesh: Mesh):
    """The jitted K-seed step over `mesh`, donating its state and statistics.

    Args:
      body: `(state, stats, batch) -> (state, stats, loss)` of the k = K / seeds seeds one
        device group holds (the loop's K-seed step, run on k seeds).
      mesh: the ('seed', 'data') mesh.

    Returns:
      `(state [K, ...], stats [K, ...], batch) -> (state, stats, loss [K])`, with batch arrays
      `[K, B, ...]` and per-seed fields (the Dropout keys `rng [K, 2]`, a pruned training's
      `rate_step [K]`) split over 'seed'; one program per set of batch fields.
    """
    seed_spec = NamedSharding(mesh, P("seed"))
    local = jax.shard_map(
        body, mesh=mesh, in_specs=P("seed"), out_specs=P("seed"), axis_names={"seed"}
    )

    @functools.lru_cache(maxsize=4)
    def program(fields: tuple):
        batch_specs = {
            k: NamedSharding(mesh, P("seed", "data")) if k in _PER_EXAMPLE else seed_spec
            for k in fields
        }
        return jax.jit(
            local,
            in_shardings=(seed_spec, seed_spec, batch_specs),
            out_shardings=seed_spec,
            donate_argnums=(0, 1),
        )

    def step(state, stats, batch):
        return program(tuple(sorted(batch)))(state, stats, batch)

    step.lower = lambda state, stats, batch: program(tuple(sorted(batch))).lower(
        state, stats, batch
    )
    return step


def place(tree, mesh: Mesh | None):
    """Places a stacked pytree `[K, ...]` (state or statistics) split over 'seed'; unchanged
    without a mesh."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: sharding.put_array(x, NamedSharding(mesh, P("seed"))), tree)


def place_batch(batch: dict, mesh: Mesh | None, num_seeds: int, batch_size: int) -> dict:
    """Places this process's block of a batch (`local_block`: `image [k, b, ...]`, `label`,
    `index`, `mask` `[k, b]`) as global arrays `[K, B, ...]` split over ('seed', 'data'), and
    the Dropout keys `rng [K, 2]` (whole on every process) over 'seed'; unchanged without a
    mesh."""
    if mesh is None:
        return batch
    rows, cols = local_block(mesh, num_seeds, batch_size)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if key not in _PER_EXAMPLE:
            out[key] = sharding.put_array(value, NamedSharding(mesh, P("seed")))
            continue

        def local(index, value=value):  # global slices -> the same slices of the local block
            (r, c), rest = index[:2], index[2:]
            r0, r1, _ = r.indices(num_seeds)
            c0, c1, _ = c.indices(batch_size)
            block = (
                slice(r0 - rows.start, r1 - rows.start),
                slice(c0 - cols.start, c1 - cols.start),
            )
            return value[block + tuple(rest)]

        shape = (num_seeds, batch_size, *value.shape[2:])
        out[key] = jax.make_array_from_callback(
            shape, NamedSharding(mesh, P("seed", "data")), local
        )
    return out


def to_host(x) -> np.ndarray:
    """A (possibly mesh-placed, possibly multi-process) array as one host array on every
    process."""
    return sharding.fetch(x)


def gather(tree, mesh: Mesh | None):
    """A mesh-placed pytree brought back to the default device (what hooks and callers get, so
    the programs after training run as they do after a single-device training)."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: jax.device_put(sharding.fetch(x)), tree)
