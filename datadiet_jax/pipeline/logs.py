"""Keeps the INFO lines of TFDS, TensorFlow, JAX, orbax and Flax out of a run's log.

Lines such as "Load dataset info ...", "Constructing tf.data.Dataset ...", "Unable to initialize
backend 'tpu'" and checkpoint internals are left out; these libraries' warnings and errors still
show, except the tracebacks that repeat an error the run ends with in one line anyway (orbax's
writing threads on a full disk, JAX on an exception in a host callback). `--verbosity=1`
(absl's flag) brings everything back. Notebooks get the same library filter
(`scores/notebook_logs.py`).

Usage:

    from datadiet_jax.pipeline import logs
    logs.quiet_library_logs()      # once, at start-up: a filter on absl's handler
"""

from __future__ import annotations

import logging as std_logging

from absl import logging

from datadiet_jax.pipeline import interrupts
from datadiet_jax.scores.notebook_logs import QUIET_LIBRARIES


class _QuietLibraries(std_logging.Filter):
    def filter(self, record):
        if logging.get_verbosity() >= logging.DEBUG:
            return True
        library = any(part in record.pathname for part in QUIET_LIBRARIES)
        if record.levelno >= std_logging.WARNING:
            return not (library and _reported_by_the_run(record))
        return not library


def _reported_by_the_run(record) -> bool:
    """Whether a library's error record repeats, with its traceback, an error that reaches the
    run's own one line: a full disk met by orbax's writing threads, or an exception raised in
    a host callback of a jitted program (JAX logs it, then raises it in the main thread)."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return False
    callback = str(record.msg).startswith("jax.") and "callback failed" in str(record.msg)
    return callback or interrupts.disk_full(error)


def quiet_library_logs() -> None:
    """Adds the filter to absl's handler (once)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())
