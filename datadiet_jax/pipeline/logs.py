"""Keeps the INFO lines of TFDS, TensorFlow, JAX, orbax and Flax out of a run's log.

Lines such as "Load dataset info ...", "Constructing tf.data.Dataset ...", "Unable to initialize
backend 'tpu'" and checkpoint internals are left out; these libraries' warnings and errors still
show. `--verbosity=1` (absl's flag) brings everything back. The filter is the one notebooks get
(`scores/notebook_logs.py`).

Usage:

    from datadiet_jax.pipeline import logs
    logs.quiet_library_logs()      # once, at start-up: a filter on absl's handler
"""

from __future__ import annotations

from absl import logging

from datadiet_jax.scores.notebook_logs import QUIET_LIBRARIES, add_quiet_filter

__all__ = ["QUIET_LIBRARIES", "quiet_library_logs"]


def quiet_library_logs() -> None:
    """Adds the filter to absl's handler (once)."""
    add_quiet_filter(logging.get_absl_handler())
