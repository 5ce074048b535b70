"""Stopping a run with Ctrl-C or SIGTERM: one line naming the stage, and a clean resume.

`stage(name)` names the work under way; an interrupt inside it becomes `Interrupted(name)`.
`exit_on_interrupt` (the entry points) turns SIGTERM into the same exception, and prints one
line, "interrupted during <stage>; rerun the same command to resume", exiting 130 (SIGINT) or
143 (SIGTERM). Every output is written atomically and every training resumes from its last
checkpoint, so the rerun ends with the same files as an uninterrupted run.

Usage:

    from datadiet_jax.pipeline import interrupts
    with interrupts.exit_on_interrupt():            # once, in the entry point
        with interrupts.stage("score training"):
            train()
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from absl import logging


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
