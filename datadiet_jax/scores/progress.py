"""Progress of long work (training steps, scored examples): count, rate and ETA through absl.

One logger for every long loop of the project, shown in notebooks too (`notebook_logs`): the
scores log examples done, the K-seed training loop logs steps (and the examples they process).
The first unit of a loop usually includes the jit compilation of its step, so the rate and the
ETA count from the end of the first unit: the first `update` waits for its `pending` work and
records the time and the count, and later lines divide the units done since by the seconds
since. `finish` reports the total seconds, the first unit included.

Usage:

    progress = Progress("grand", total=N, unit="example")
    progress.update(done, "x 4 seeds", pending=result)  # a line at most every `every_s` seconds
    progress.finish(done, "x 4 seeds", setup=3.2)  # 3.2 s of it fixed costs (checks, ...)
"""

from __future__ import annotations

import time

import jax
from absl import logging

from datadiet_jax.scores import notebook_logs

# Least seconds between two progress lines (`Progress(every_s=...)`).
EVERY_S = 10.0


class Progress:
    """Logs `done/total`, the rate and the ETA at most every `every_s` seconds, then the total.

    The rate and ETA leave out the first unit done in this loop (it holds the compilation);
    `finish` counts every second from the start.

    Args:
      name: what is running, the first word of every line ('score training', 'grand').
      total: units to do, or None when unknown (a stream): then count and rate alone.
      start: units already done before this loop (a resumed training); the rate counts the rest.
      unit: what is counted ('step', 'example').
      examples_per_unit: examples one unit processes (the rate is in examples/s).
      every_s: least seconds between two lines (None: `EVERY_S`).
    """

    def __init__(
        self,
        name: str,
        total: int | None,
        *,
        start: int = 0,
        unit: str = "step",
        examples_per_unit: int = 1,
        every_s: float | None = None,
    ):
        notebook_logs.show_progress()  # outside app.run: progress lines show, library INFO not
        self.name, self.total, self.start, self.unit = name, total, start, unit
        self.examples_per_unit = examples_per_unit
        self.every_s = EVERY_S if every_s is None else every_s
        self.t0 = self.last = time.perf_counter()
        # (time, units done) at the end of the first update: where the rate and ETA count from.
        self.mark: tuple[float, int] | None = None

    def update(self, done: int, extra: str = "", pending=None) -> None:
        """Logs progress at `done` units if `every_s` passed since the last line.

        `pending` (arrays still being computed) is waited for first, so the rate counts finished
        work, not work queued by asynchronous dispatch. The first call always waits for it and
        starts the rate there; it logs (without a rate) only if the first unit took `every_s`.
        """
        if self.mark is None:
            jax.block_until_ready(pending)
            now = time.perf_counter()
            self.mark = (now, done)
            if now - self.last >= self.every_s:
                self.last = now
                logging.info(
                    "%s: %s, the first in %.1f s (compilation included) %s",
                    self.name,
                    self._count(done),
                    now - self.t0,
                    extra,
                )
            return
        if time.perf_counter() - self.last < self.every_s:
            return
        jax.block_until_ready(pending)
        self.last = time.perf_counter()
        rate = self._rate(done)
        eta = ""
        if self.total is not None:
            seconds = (self.total - done) / rate if rate > 0 else float("inf")
            eta = f", ETA {seconds:.0f}s"
        logging.info(
            "%s: %s, %.1f examples/s%s %s",
            self.name,
            self._count(done),
            rate * self.examples_per_unit,
            eta,
            extra,
        )

    def finish(self, done: int, extra: str = "", pending=None, setup: float | None = None) -> None:
        """Logs the end: `done` units, the seconds since the start (the first unit included, its
        own seconds in parentheses) and the mean rate over them; with `setup`, the seconds of
        fixed costs among them (checks, a guard, a method race) and the rest, the work."""
        jax.block_until_ready(pending)
        seconds = time.perf_counter() - self.t0
        first = "" if self.mark is None else f" (first {self.mark[0] - self.t0:.1f} s)"
        mean = (done - self.start) / max(seconds, 1e-9) * self.examples_per_unit
        fixed = ""
        if setup is not None:
            fixed = f"; setup {setup:.1f} s (checks, guard, method), work {seconds - setup:.1f} s"
        logging.info(
            "%s: %d %ss %s in %.1f s%s, %.1f examples/s%s",
            self.name,
            done,
            self.unit,
            extra,
            seconds,
            first,
            mean,
            fixed,
        )

    def _count(self, done: int) -> str:
        return f"{self.unit} {done}" + ("" if self.total is None else f"/{self.total}")

    def _rate(self, done: int) -> float:
        """Units per second since the end of the first update (the compilation left out)."""
        mark_time, mark_done = self.mark
        return (done - mark_done) / max(time.perf_counter() - mark_time, 1e-9)
