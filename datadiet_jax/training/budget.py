"""Where a K-seed training stands in its budget: epochs of steps, or rounds of a pruning
schedule, and the test accuracy that can end it early.

A training's budget is `TrainSpec.num_steps` steps (its epochs are the kept set's steps per
epoch), or with a pruning schedule and `TrainSpec.num_rounds` that many rounds of the schedule,
each as long as its pruned sets need (`prune_feed`), so a pruned training ends in fewer steps.
Either ends early, at an epoch end, once every seed's test accuracy reaches
`TrainSpec.target_accuracy` (a time-to-accuracy budget).

Usage (inside `loop.fit`):

    ended, epochs_done, last = budget.position(step, spe, stop, feed, num_rounds)
    record["test_accuracy"], reached = budget.test_accuracy(spec, state)
"""

from __future__ import annotations

import numpy as np
from absl import logging


def position(step: int, spe: int, stop: int, feed=None, num_rounds: int = 0):
    """(whether `step` ends an epoch, the epochs done, whether it ends the budget).

    Args:
      step: steps done.
      spe: the kept set's steps per epoch; stop: the step budget (or where the run stops).
      feed: a pruned training's `prune_feed.PruneFeed` (its `current` round: first step,
        length, number); with `num_rounds` > 0 the epochs are its rounds.
    """
    if not num_rounds:
        last = step == stop
        return step % spe == 0 or last, step / spe, last
    start, length, rnd = feed.current if feed is not None else (0, 0, -1)
    ended = step == start + length
    done = rnd + 1 if ended else rnd + (step - start) / max(length, 1)
    return ended, done, (ended and rnd + 1 >= num_rounds) or step == stop


def test_accuracy(spec, state) -> tuple[list[float], bool]:
    """(each seed's test accuracy from `spec.evaluate(state)`, whether every seed reached
    `spec.target_accuracy`, when it is set); logs one line when it did."""
    accuracy = np.asarray(spec.evaluate(state), np.float64)
    reached = spec.target_accuracy > 0 and bool(np.all(accuracy >= spec.target_accuracy))
    if reached:
        logging.info(
            "%s: every seed reached test accuracy %g; training stops (target_accuracy).",
            spec.name,
            spec.target_accuracy,
        )
    return [round(float(a), 6) for a in accuracy], reached
