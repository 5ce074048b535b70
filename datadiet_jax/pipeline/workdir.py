"""The work directory: writable, held by one process at a time, and holding one run.

- `check_writable` refuses a work directory that is a file or that cannot be written (or
  created), before any data is loaded.
- `hold` takes an OS lock on `WORKDIR/.lock` (`fcntl.flock`, so a killed process frees it) for as
  long as a run works there; a second process on the same folder stops at once with the holder's
  PID, or (figure sweeps, `wait=True`) waits for it.
- `check_config` records the run's config in `WORKDIR/config.json`, or checks it against the one
  there: the fields that make the score stage (data, model, training, scores, seed) must match;
  the retraining plan (`prune`, `retrain`) and where the dataset lies (`data.data_dir`,
  `data.download`) may change, and the stages after the scores follow their fingerprints.

Usage:

    from datadiet_jax.pipeline import workdir
    workdir.check_writable("runs/fm")
    with workdir.hold("runs/fm"):                # WorkdirBusy: another process holds it
        changed = workdir.check_config("runs/fm", config_to_dict(config))
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile

from absl import logging

from datadiet_jax.pipeline import artifacts
from datadiet_jax.training import files, multihost

# Config sections a rerun may change: the kept sets and retrainings follow their fingerprints.
PLAN_SECTIONS = ("prune", "retrain")
# Fields a rerun may change that do not change what is computed: where the dataset lies, and
# which program computes the same gradients, and on which devices. Training records leave them
# out too.
NEUTRAL_FIELDS = (
    "data.data_dir",
    "data.download",
    "train.fast_backward",
    "train.mesh",
    "retrain.stack",
    "track.writers",
)
LOCK_NAME = ".lock"


def check_writable(workdir: str, what: str = "Work directory", fix: str = "pass another --workdir"):
    """Refuses a folder that is a file or cannot be written, or created under its nearest parent.

    Raises:
      ValueError: one line naming the folder, what is wrong and `fix`.
    """
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {workdir} is a file, not a folder; {fix}.")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{what} {workdir} cannot be created: {parent} is a file; {fix}.")
    if not _can_write(parent):
        where = "it" if parent == path else f"its parent {parent}"
        raise ValueError(f"{what} {workdir} is not writable ({where} refuses new files); {fix}.")


def _can_write(folder: str) -> bool:
    """Whether a file can be created in `folder` (tried: permissions, read-only mounts and
    immutable folders all refuse it, also for root)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            return True
    except OSError:
        return False


class WorkdirBusy(ValueError):
    """Another process holds the work directory."""


@contextlib.contextmanager
def hold(workdir: str, *, wait: bool = False):
    """Holds `WORKDIR/.lock` while the block runs; the file names the holder's PID. In a job of
    several processes (`multihost`) process 0 holds it for the job, and all of them go on or
    stop together.

    Args:
      workdir: the work directory (created if missing).
      wait: wait for another holder to finish (logged once) instead of refusing.

    Raises:
      WorkdirBusy: another process holds the folder and `wait` is False.
    """
    os.makedirs(workdir, exist_ok=True)
    if not multihost.is_writer():  # process 0 of the job holds the lock for all of them
        holder = multihost.from_writer(0)
        if holder:
            raise WorkdirBusy(_busy(workdir, holder if holder > 0 else "unknown"))
        yield
        return
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _holder(fd)
            if not wait:
                multihost.from_writer(int(holder) if holder.isdigit() else -1)
                raise WorkdirBusy(_busy(workdir, holder)) from None
            logging.info("Waiting for process %s, which is working in %s", holder, workdir)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        multihost.from_writer(0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _busy(workdir: str, holder) -> str:
    return (
        f"Work directory {workdir} is in use by process {holder}; wait for it to finish, "
        "or pass another --workdir."
    )


def _holder(fd: int) -> str:
    """The PID written in the lock file by its holder ('unknown' while it is being written)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def check_config(workdir: str, config_dict: dict) -> list[str]:
    """Records the config in `workdir/config.json`, or checks it against the recorded one.

    Returns:
      The dotted keys that changed since the last run, all of them in `PLAN_SECTIONS` or
      `NEUTRAL_FIELDS` (the new config is recorded; the kept sets and retrainings follow),
      empty when nothing changed.

    A folder holding nothing but its config (a run refused before its first output, e.g. by a
    model that does not fit the data) takes the new config.

    Raises:
      ValueError: the folder holds a run whose score stage differs (data, model, training, scores
        or seed); nothing is touched.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        os.makedirs(workdir, exist_ok=True)
        files.write_json(path, config_dict)
        return []
    if not set(os.listdir(workdir)) - {"config.json", LOCK_NAME}:
        files.write_json(path, config_dict)  # a run that stopped before any output
        return []
    old = files.read_json(path)
    changed = sorted(artifacts.diff_keys(old, config_dict))
    fixed = [k for k in changed if k.split(".")[0] not in PLAN_SECTIONS and k not in NEUTRAL_FIELDS]
    if fixed:
        raise ValueError(
            f"Work directory {workdir} holds a run with a different config (differs in "
            f"{', '.join(fixed[:6])}); pass a new --workdir, or the same config to resume."
        )
    if changed:
        logging.info(
            "The plan changed since the last run in %s (%s); the kept sets and retrainings follow.",
            workdir,
            ", ".join(changed[:6]),
        )
        files.write_json(path, config_dict)
    return changed
