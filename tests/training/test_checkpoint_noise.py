"""The never-retrieved task and future errors of a failed orbax restore are dropped, and no
other's."""

import asyncio
import gc
import logging
import os

from datadiet_jax.training import checkpoints

# A coroutine compiled as if it lay in orbax's checkpoint package, and one compiled elsewhere.
SOURCE = "async def read():\n    raise ValueError('chunk cut short')\n"


def _coroutine(filename):
    namespace = {}
    exec(compile(SOURCE, filename, "exec"), namespace)  # noqa: S102
    return namespace["read"]


def _never_retrieved(read=None, error=None) -> list[logging.LogRecord]:
    """The asyncio records of a task running `read` (or a future given `error`) that failed and
    was collected without being awaited."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    handler.addFilter(checkpoints.OrbaxTaskNoise())
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    loop = asyncio.new_event_loop()
    try:
        if read is not None:
            task = loop.create_task(read())
            loop.run_until_complete(asyncio.sleep(0))  # the task runs and fails
        else:
            task = loop.create_future()
            task.set_exception(error)  # as TensorStore sets a failed read's future
        del task
        gc.collect()  # asyncio logs the never-retrieved error when the task is collected
    finally:
        loop.close()
        logger.removeHandler(handler)
    return [r for r in records if "exception was never retrieved" in r.getMessage()]


def test_orbax_task_errors_are_dropped_and_others_kept(tmp_path):
    inside = os.path.join(str(tmp_path), "orbax", "checkpoint", "serialization.py")
    assert _never_retrieved(_coroutine(inside)) == []
    kept = _never_retrieved(_coroutine(os.path.join(str(tmp_path), "model.py")))
    assert len(kept) == 1 and "chunk cut short" in repr(kept[0].exc_info[1])


def test_tensorstore_future_errors_are_dropped_and_others_kept():
    """A failed TensorStore read's future carries no Python frames, only TensorStore's spec."""
    spec = """[tensorstore_spec='{"driver":"zarr"}']"""
    assert _never_retrieved(error=ValueError(f"OUT_OF_RANGE: Error reading chunk {spec}")) == []
    kept = _never_retrieved(error=ValueError("chunk cut short"))
    assert len(kept) == 1 and "Future exception" in kept[0].getMessage()
