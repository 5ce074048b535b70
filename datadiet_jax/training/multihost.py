"""One run over several processes (hosts) of a `jax.distributed` job: start-up and who writes.

Every process runs the whole pipeline with the same config and work directory (on a file
system all of them see). The sharded trainings are one SPMD program over the global mesh; the
work around them (scores of the gathered state, pruning, evaluation) is computed by every
process alike. Files are written by process 0 only, between two barriers
(`one_writer`): no process can see a file appear between two of its own checks, so every
process takes the same branch at every "is it already there?" and the runs stay in step.
With one process every function here is a no-op.

Usage:

    from datadiet_jax.training import multihost
    multihost.initialize()                    # first; or (coordinator_address, num_processes, id)
    with multihost.one_writer(path) as writes:
        if writes:                            # process 0, between two barriers
            write(path)
"""

from __future__ import annotations

import contextlib
import itertools

import jax
from absl import logging

_COUNTER = itertools.count()


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins the `jax.distributed` job this process belongs to (before any other JAX call).

    With no arguments JAX detects the cluster (Slurm, Cloud TPU, Kubernetes, Open MPI); give all
    three to launch processes by hand. CPU processes exchange collectives through gloo.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    logging.info(
        "Process %d of %d: %d local devices, %d in all.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def is_writer() -> bool:
    """Whether this process writes the work directory's files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier of the same name (one process: returns)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def from_writer(value: int) -> int:
    """Process 0's `value` on every process (an int; one process: `value`)."""
    if jax.process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


@contextlib.contextmanager
def one_writer(what: str):
    """A file change made by process 0 alone, between two barriers; yields whether this
    process is the one that writes.

        with multihost.one_writer(path) as writes:
            if writes:
                write(path)
    """
    if jax.process_count() == 1:
        yield True
        return
    name = f"{next(_COUNTER)}:{what}"  # the same sequence on every process: same program
    barrier(f"before {name}")
    yield is_writer()
    barrier(f"after {name}")
