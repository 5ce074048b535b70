"""Command line of the pipeline: runs (or resumes) one config in one work directory.

Every setting is a config field, overridden with `--config.x.y=value`; `WORKDIR/config.json`
records the run completely. Running the same command again resumes the run; Ctrl-C or SIGTERM
stops it with one line naming the stage (exit 130 or 143), and one process works in a work
directory at a time. Bad input, a damaged file, a full disk, a model failing in the middle of a
stage or a diverged training ends with one `error:` line.

On several hosts every process runs the same command with `--distributed` (JAX detects Slurm,
Cloud TPU, Kubernetes or Open MPI) or with `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`; the trainings then shard over the devices of all of them (`multihost`).

Usage:

    python -m datadiet_jax.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist
    python -m datadiet_jax.main --config=configs/fashion_mnist.py:smoke --workdir=/tmp/smoke
    python -m datadiet_jax.main --config=configs/cifar10.py --workdir=DIR --config.seed=1
    python -m datadiet_jax.main --config=configs/cifar10.py --workdir=DIR --distributed
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from datadiet_jax.pipeline import interrupts, logs, overrides, run  # noqa: E402
from datadiet_jax.training import multihost  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of the run (resumed if present).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Join a jax.distributed job of several processes (hosts), detecting "
    "the cluster (Slurm, Cloud TPU, Kubernetes, Open MPI) or taking the three flags below.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a job launched by hand."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job (by hand).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (by hand).")
flags.mark_flags_as_required(["config", "workdir"])


def summary(results: dict, workdir: str) -> str:
    """A few lines for people: test accuracy of every run and where the files are.

    The accuracy is the mean over the healthy seeds only; seeds that collapsed or diverged are
    named and left out (see `datadiet_jax.training.health`).
    """
    lines = ["", "Test accuracy (mean over healthy retraining seeds):"]
    for r in results["runs"]:
        mean = r.get("mean_test_accuracy")
        text = "no healthy seed" if mean is None else f"{mean:.4f}"
        statuses = r.get("status") or []
        bad = [f"seed {k} {s}" for k, s in enumerate(statuses) if s != "ok"]
        note = f"  (left out: {', '.join(bad)})" if bad else ""
        lines.append(f"  {r['name']:<28} kept {r['num_kept']:>6}  accuracy {text}{note}")
    where = os.path.abspath(workdir)
    lines.append(f"Scores:  {where}/scores/")
    lines.append(f"Results: {where}/results.json, results.csv")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; settings go in --config.x=value.")
    logs.quiet_library_logs()
    if _DISTRIBUTED.value or _COORDINATOR.value:
        multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    with interrupts.exit_on_interrupt():
        logging.info("JAX devices: %s", jax.devices())
        results = run_or_exit(_CONFIG.value, _WORKDIR.value)
    logging.info("%s", summary(results, _WORKDIR.value))
    diverged = [
        f"{r['name']} seed {k}"
        for r in results["runs"]
        for k, s in enumerate(r.get("status") or [])
        if s == "diverged"
    ]
    if diverged:
        names = ", ".join(diverged)
        sys.exit(
            f"error: {len(diverged)} training(s) diverged (non-finite loss): {names}; their "
            "results are marked 'diverged'. Lower config.train.learning_rate or set "
            "config.train.warmup_epochs."
        )


def run_or_exit(config, workdir: str) -> dict:
    """`run.run`, with bad input, a full disk and a model failing in a stage turned into one
    `error:` line on stderr (`interrupts.error_line`; `--verbosity=1` also logs the traceback)."""
    try:
        return run.run(config, workdir)
    except Exception as e:
        line = interrupts.error_line(e, workdir)
        if line is None:
            raise
        logging.debug("The error in full:", exc_info=e)
        sys.exit(f"error: {line}")


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; a bad `--config` override exits with one line naming it and the fix."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        text = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
        if len(text) > 1 and text[0] == text[-1] == "'":
            text = text[1:-1]
        unknown = overrides.unknown_key(argv)
        if unknown:
            sys.exit(f"error: {unknown}")
        given = " ".join(a for a in argv[1:] if a.startswith("--config.")) or " ".join(argv[1:])
        sys.exit(f"error: bad flag or config override ({given}): {text}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
