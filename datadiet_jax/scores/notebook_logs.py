"""Progress lines outside `app.run` (a notebook, a script), library INFO lines left out.

absl shows INFO lines only once `app.run` has parsed its flags, so in a notebook the progress of
`train_seeds`, `el2n_scores` and `grand_scores` (`progress.Progress`) would not show. The first
`Progress` of a process outside `app.run` calls `show_progress`: absl's verbosity becomes INFO
unless the user set it (`logging.set_verbosity`), absl's handler writes to stderr unless Python
logging already has a handler, and a filter on absl's logger leaves out the INFO lines of TFDS,
TensorFlow, JAX, orbax and Flax (orbax logs about 50 per checkpoint), as the command line does
(`pipeline/logs.py`). Their warnings and errors still show; verbosity DEBUG shows everything.

Usage:

    from datadiet_jax.scores import notebook_logs
    notebook_logs.show_progress()          # once; Progress calls it
    logging.set_verbosity(logging.WARNING)  # before it: no progress lines
"""

from __future__ import annotations

import logging as std_logging

from absl import flags, logging

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


class QuietLibraries(std_logging.Filter):
    """Leaves out the INFO lines of `QUIET_LIBRARIES` (all of them at verbosity DEBUG)."""

    def filter(self, record):
        if record.levelno >= std_logging.WARNING or logging.get_verbosity() >= logging.DEBUG:
            return True
        return not any(part in record.pathname for part in QUIET_LIBRARIES)


def add_quiet_filter(target: std_logging.Filterer) -> None:
    """Adds `QuietLibraries` to a handler or logger (once)."""
    if not any(isinstance(f, QuietLibraries) for f in target.filters):
        target.addFilter(QuietLibraries())


def show_progress() -> None:
    """Makes INFO lines (progress) show outside `app.run`, the libraries' INFO lines left out.

    Does nothing under `app.run` (the command line sets its own logging) or when the user set
    absl's verbosity; otherwise sets it to INFO, adds absl's handler when Python logging has no
    handler, and filters absl's logger (`QuietLibraries`).
    """
    if flags.FLAGS.is_parsed():
        return
    add_quiet_filter(logging.get_absl_logger())
    if flags.FLAGS["verbosity"].using_default_value:
        logging.set_verbosity(logging.INFO)
    if not std_logging.getLogger().handlers:
        logging.use_absl_handler()
