"""Orbax checkpoints of the stacked K-seed training state and its statistics.

A save-restore round trip gives the same state and statistics, so a resumed training ends as an
uninterrupted one does. The latest two steps are kept, and every step in `keep_steps`. An
unreadable checkpoint (cut short by a crash or a full disk) is skipped and moved aside; a readable
one of another version is refused, never moved.

Usage:

    from datadiet_jax.training.checkpoints import Checkpoints
    ckpts = Checkpoints("run/ckpt", keep_steps=[100, 200])
    ckpts.save(step, state, stats)                            # state [K, ...], stats [K, N]
    step, state, stats = ckpts.restore_latest(state, stats)   # templates; step 0: none saved
    ckpts.close()
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterable

import jax
import orbax.checkpoint as ocp
from absl import logging

from datadiet_jax.training import multihost
from datadiet_jax.training.train import TrainState


class CheckpointMismatch(ValueError):
    """A readable checkpoint whose structure differs from what this version trains."""


class CheckpointUnreadable(ValueError):
    """A checkpoint that cannot be read (cut short, damaged): one line naming it."""


class OrbaxTaskNoise(std_logging.Filter):
    """Drops asyncio's 'Task (or Future) exception was never retrieved' records of a failed
    orbax restore: the other reads, logged when their tasks and TensorStore futures are
    collected (at exit), after the restore's own error has been raised and reported once. A
    record is dropped when its exception was raised in orbax, or is TensorStore's own (its
    message carries the TensorStore spec); every other is kept."""

    NEVER_RETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")

    def filter(self, record: std_logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.NEVER_RETRIEVED):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        frames = traceback.extract_tb(error.__traceback__)
        in_orbax = any(f"orbax{os.sep}checkpoint" in frame.filename for frame in frames)
        return not (in_orbax or "tensorstore_spec" in str(error))


def _quiet_closed_loops() -> None:
    """Drops the 'Event loop is closed' errors that TensorStore's callbacks raise, during a
    failed save or restore (a full disk, a damaged file), on the event loop orbax closed (each
    printed a traceback through `sys.unraisablehook`), the warnings of its coroutines that
    never ran and the never-retrieved errors of its other tasks (`OrbaxTaskNoise`); every other
    unraisable error goes to the hook installed before."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loops", False):
        return
    # The coroutines of the failed operation that never ran warn when collected, at exit.
    warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)
    std_logging.getLogger("asyncio").addFilter(OrbaxTaskNoise())

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_loops = True
    sys.unraisablehook = hook


class Checkpoints:
    """Orbax checkpoints of the stacked state and the training statistics, keyed by step.

    `stats` is the loop's dict of per-example statistics (forgetting and AUM, and a pruning
    schedule's state), saved with the state so that a resumed run ends with the same statistics
    and pruning rounds as an uninterrupted one.

    Keeps the latest two and every step in `keep_steps` (the epochs that scores need, the end).
    """

    def __init__(self, directory: str, keep_steps: Iterable[int] = ()):
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(2),
                ocp.checkpoint_managers.CustomSteps(sorted(set(keep_steps))),
            ]
        )
        self._directory = os.path.abspath(directory)
        _quiet_closed_loops()  # the thread noise of a failed save or restore
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy, enable_async_checkpointing=False
            ),
        )

    def save(self, step: int, state: TrainState, stats: dict) -> None:
        item = {"state": state, "stats": stats}
        self._manager.save(step, args=ocp.args.StandardSave(item), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, state: TrainState, stats: dict):
        """Restores (state, stats) at `step`, shaped like the given templates.

        Raises:
          CheckpointMismatch: the checkpoint is readable but of another version.
          CheckpointUnreadable: it cannot be read; one line naming it and what to do.
        """
        item = {"state": state, "stats": stats}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, item)
        try:
            out = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as err:  # noqa: BLE001 (orbax and TensorStore raise many types)
            if isinstance(err, ValueError) and "Structure mismatch" in str(err):
                raise CheckpointMismatch(
                    f"checkpoint step {step} in {self._manager.directory} holds other training "
                    "statistics than this version tracks (e.g. written before AUM was tracked); "
                    "resume it with the version that wrote it, or start in a new work directory."
                ) from None
            what = (
                f"Checkpoint {os.path.join(self._directory, str(step))} is unreadable "
                f"({type(err).__name__}: {' '.join(str(err).split())[:200]})"
            )
            unreadable = CheckpointUnreadable(
                f"{what}; delete {self._directory} and rerun the same command to train again "
                "from the start."
            )
            unreadable.what = what
            raise unreadable from None
        return out["state"], out["stats"]

    def restore_latest(self, state: TrainState, stats: dict):
        """Restores the newest readable checkpoint, shaped like the given templates.

        An unreadable checkpoint (e.g. cut short by a crash or a full disk) is skipped with a
        warning naming it, and moved aside (to `<step>.unreadable`) so training can save that
        step again.

        Returns:
          (step, state, stats); (0, state, stats) unchanged when there is no checkpoint.

        Raises:
          ValueError: checkpoints exist but none is readable.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                restored = self.restore(step, state, stats)
            except CheckpointUnreadable as e:
                logging.warning(
                    "%s%s",
                    e.what,
                    "; trying an older one." if i + 1 < len(steps) else ".",
                )
                continue
            for bad in steps[:i]:  # Moved aside, so training can save these steps again.
                path = os.path.join(self._directory, str(bad))
                with multihost.one_writer(path) as writes:
                    if writes:
                        os.replace(path, f"{path}.unreadable")
                logging.warning("Resuming from step %d; moved %s aside.", step, path)
            if i:
                self._manager.reload()
            return (step, *restored)
        if steps:
            raise ValueError(
                f"No readable checkpoint in {self._directory} (steps {sorted(steps)}); delete that "
                "directory to restart this training from the beginning."
            )
        return 0, state, stats

    def all_steps(self) -> list[int]:
        """The steps saved, oldest first."""
        return sorted(self._manager.all_steps())

    def close(self) -> None:
        self._manager.close()
