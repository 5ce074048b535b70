"""The command line of the figure scripts: flags, the compile cache, quiet library logs, and
one-line errors (bad input, Ctrl-C, SIGTERM)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging

from datadiet_jax.pipeline import interrupts, logs
from experiments import sweeps

SCALE = flags.DEFINE_enum(
    "scale", "cpu", ["cpu", "paper", "smoke"], "Size of the reproduction (see configs/studies)."
)
OUT = flags.DEFINE_string("out", "figures", "Folder for figures, CSV files and reports.")
RUNS = flags.DEFINE_string("runs", "runs/figures", "Folder for the work directories of the runs.")


def main(argv, title: str, reproduce: Callable) -> None:
    """The entry point of a figure script: flags -> reproduce -> a one-line error on bad input."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
    logs.quiet_library_logs()
    sweeps.enable_compilation_cache(RUNS.value)
    try:
        with interrupts.exit_on_interrupt():
            out = reproduce(SCALE.value, RUNS.value, OUT.value)
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")
    logging.info("%s: %s", title, ", ".join(out["figure"] + out["csv"] + out["summary"]))
