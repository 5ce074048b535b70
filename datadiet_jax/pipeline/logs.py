"""Keeps the INFO lines of TFDS, TensorFlow, JAX, orbax and Flax out of a run's log.

Lines such as "Load dataset info ...", "Constructing tf.data.Dataset ...", "Unable to initialize
backend 'tpu'" and checkpoint internals are left out; these libraries' warnings and errors still
show. `--verbosity=1` (absl's flag) brings everything back.

Usage:

    from datadiet_jax.pipeline import logs
    logs.quiet_library_logs()      # once, at start-up: a filter on absl's handler
"""

from __future__ import annotations

import logging as std_logging

from absl import logging

# Path parts of the libraries whose INFO lines are left out.
QUIET_LIBRARIES = (
    "/tensorflow_datasets/",
    "/tensorflow/",
    "/orbax/",
    "/jax/",
    "/jaxlib/",
    "/etils/",
    "/flax/",
)


class _QuietLibraries(std_logging.Filter):
    def filter(self, record):
        if record.levelno >= std_logging.WARNING or logging.get_verbosity() >= logging.DEBUG:
            return True
        return not any(part in record.pathname for part in QUIET_LIBRARIES)


def quiet_library_logs() -> None:
    """Adds the filter to absl's handler (once)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())
