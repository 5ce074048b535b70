"""Progress of long work (training steps, scored examples): count, rate and ETA through absl.

One logger for every long loop of the project: the scores log examples done, the K-seed training
loop logs steps (and the examples they process).
"""

from __future__ import annotations

import time

import jax
from absl import logging


class Progress:
    """Logs `done/total`, the rate and the ETA at most every `every_s` seconds, then the total.

    Args:
      name: what is running, the first word of every line ('score training', 'grand').
      total: units to do, or None when unknown (a stream): then count and rate alone.
      start: units already done before this loop (a resumed training); the rate counts the rest.
      unit: what is counted ('step', 'example').
      examples_per_unit: examples one unit processes (the rate is in examples/s).
      every_s: least seconds between two lines.
    """

    def __init__(
        self,
        name: str,
        total: int | None,
        *,
        start: int = 0,
        unit: str = "step",
        examples_per_unit: int = 1,
        every_s: float = 10.0,
    ):
        self.name, self.total, self.start, self.unit = name, total, start, unit
        self.examples_per_unit, self.every_s = examples_per_unit, every_s
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int, extra: str = "", pending=None) -> None:
        """Logs progress at `done` units if `every_s` passed since the last line.

        `pending` (arrays still being computed) is waited for first, so the rate counts finished
        work, not work queued by asynchronous dispatch.
        """
        if time.perf_counter() - self.last < self.every_s:
            return
        jax.block_until_ready(pending)
        self.last = time.perf_counter()
        rate = self._rate(done)
        count = f"{self.unit} {done}" + ("" if self.total is None else f"/{self.total}")
        eta = ""
        if self.total is not None:
            seconds = (self.total - done) / rate if rate > 0 else float("inf")
            eta = f", ETA {seconds:.0f}s"
        logging.info("%s: %s, %.1f examples/s%s %s", self.name, count,
                     rate * self.examples_per_unit, eta, extra)  # fmt: skip

    def finish(self, done: int, extra: str = "", pending=None) -> None:
        """Logs the end: `done` units, the seconds since the start and the mean rate."""
        jax.block_until_ready(pending)
        seconds = time.perf_counter() - self.t0
        logging.info("%s: %d %ss %s in %.1f s, %.1f examples/s", self.name, done, self.unit,
                     extra, seconds, self._rate(done) * self.examples_per_unit)  # fmt: skip

    def _rate(self, done: int) -> float:
        """Units per second since the start, counting only this loop's units."""
        return (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
