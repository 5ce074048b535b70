"""A run that stops (Ctrl-C, SIGTERM, a full disk, a failing model): one line, and a clean resume.

`stage(name)` names the work under way; an interrupt inside it becomes `Interrupted(name)`, and
any other error leaving it records the stage's name (`stage_of`). `exit_on_interrupt` (the entry
points) turns SIGTERM into the same exception, and prints one line, "interrupted during <stage>;
rerun the same command to resume", exiting 130 (SIGINT) or 143 (SIGTERM). `error_line` words an
error that ends a run as one line: a full disk (`disk_full`), one of the run's own checks, or an
error of the model (or another library) with the stage it stopped and the model's own message.
Every output is written atomically and every training resumes from its last checkpoint, so the
rerun ends with the same files as an uninterrupted run.

Usage:

    from datadiet_jax.pipeline import interrupts
    with interrupts.exit_on_interrupt():            # once, in the entry point
        with interrupts.stage("score training"):
            train()
    interrupts.error_line(error, workdir)   # 'score training stopped: ValueError: ...' or None
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import traceback

from absl import logging

# The attribute an error leaving a `stage` carries: the innermost stage's name.
_STAGE_ATTR = "datadiet_stage"
# What the message of an error raised in a host callback holds: the callback's traceback.
_WRAPPED = "Traceback (most recent call last)"
# This package's folder: errors raised here are the run's own one-line checks.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like a KeyboardInterrupt."""


class Interrupted(KeyboardInterrupt):
    """An interrupt during a named stage; `signum` is SIGINT or SIGTERM."""

    def __init__(self, stage_name: str, signum: int):
        super().__init__(stage_name)
        self.stage, self.signum = stage_name, signum


@contextlib.contextmanager
def stage(name: str):
    """Names the work of the block for the interrupt message (the innermost stage wins)."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as e:
        signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        raise Interrupted(name, signum) from None
    except Exception as e:
        if stage_of(e) is None:
            with contextlib.suppress(AttributeError):  # a type without attributes: no stage
                setattr(e, _STAGE_ATTR, name)
        raise


def stage_of(error: BaseException) -> str | None:
    """The innermost `stage` an error left, None when it was raised outside every stage."""
    return getattr(error, _STAGE_ATTR, None)


def disk_full(error: BaseException | None) -> bool:
    """Whether `error` or an exception it was raised from is a full disk or an exhausted quota
    (orbax and TensorStore wrap the OSError, or keep only its text)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(error) for s in (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))):
            return True
        error = error.__cause__ or error.__context__
    return False


def error_line(error: Exception, workdir: str) -> str | None:
    """The one line (without 'error: ') that ends a run stopped by `error`; None for an error
    raised outside every stage that is not a ValueError or FileNotFoundError (a bug: its
    traceback shows).

    - a full disk: where, and that freeing space and rerunning resumes;
    - a ValueError or FileNotFoundError of the run's own checks: its message, one line already;
    - any other error inside a stage (the model's, a library's, a host callback's): the stage it
      stopped and the error's own message, '<stage> stopped: <Type>: <message>'.
    """
    if disk_full(error):
        return (
            f"the disk is full (no space left to write in {os.path.abspath(workdir)}); free some "
            "space and run the same command again: it resumes where it stopped."
        )
    checked = isinstance(error, ValueError | FileNotFoundError)
    if checked and _raised_here(error) and _WRAPPED not in str(error):
        return str(error)
    where = stage_of(error)
    if where is not None:
        return f"{where} stopped: {own_message(error)}"
    return own_message(error, typed=False) if checked else None


def own_message(error: BaseException, typed: bool = True) -> str:
    """An error's own message on one line, as '<Type>: <message>' (`typed`). An error raised in
    a host callback of a jitted program (`jax.pure_callback`, `jax.debug.callback`), which JAX
    wraps with the callback's traceback, gives the callback's own exception line."""
    text = str(error).strip()
    if _WRAPPED in text:
        return text.splitlines()[-1].strip()
    text = " ".join(text.split()) or "(no message)"
    return f"{type(error).__name__}: {text}" if typed else text


def _raised_here(error: BaseException) -> bool:
    """Whether `error` was raised by this package's own code (its innermost frame is here)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE_DIR)


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def exit_on_interrupt():
    """Runs the block with SIGTERM raising `Terminated`; an interrupt prints one line and exits.

    The process ends with `os._exit` after the line is flushed: the interpreter's teardown with
    TensorFlow and XLA threads still running can crash, and nothing is left to write (every file
    is written atomically; the rerun resumes from the last checkpoint).
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # Python raises KeyboardInterrupt on SIGINT only when it started with SIGINT's default
    # disposition; a process started from one that ignores SIGINT (a test runner's worker, a
    # background job of a script) would ignore Ctrl-C and run on.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted):
            where, signum = e.stage, e.signum
        else:
            where = "start-up"
            signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        logging.flush()
        sys.stdout.flush()
        sys.stderr.write(f"error: interrupted during {where}; rerun the same command to resume\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
