"""Progress lines: the rate and ETA leave out the slow first unit (the compilation)."""

import logging
import re

import pytest

from datadiet_jax.scores import progress


class FakeClock:
    """`time.perf_counter` under the test's control."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress, "time", fake)
    return fake


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "absl"]


@pytest.mark.parametrize("start", [0, 50])
def test_rate_and_eta_exclude_the_first_unit(clock, caplog, start):
    caplog.set_level(logging.INFO, logger="absl")
    total, per_unit, first_s = 1000, 4, 100.0
    p = progress.Progress("train", total, start=start, examples_per_unit=per_unit, every_s=10.0)
    clock.now = first_s  # the first step compiles for 100 s, every later step takes 1 s
    p.update(start + 1)
    for k in range(2, 21):
        clock.now = first_s + (k - 1)
        p.update(start + k)
    p.finish(start + 20)
    lines = _lines(caplog)
    # Hand values: the line at t = 110 s has done 10 steps in the 10 s since the first one.
    steps_after_first, seconds_after_first = 10, 10.0
    rate = steps_after_first / seconds_after_first
    eta = (total - (start + 11)) / rate
    assert lines[0].startswith(f"train: step {start + 1}/{total}, the first in 100.0 s")
    assert lines[1] == (
        f"train: step {start + 11}/{total}, {rate * per_unit:.1f} examples/s, ETA {eta:.0f}s "
    )
    # Counting the first step would give 11 steps in 110 s: 0.1 steps/s, an ETA ten times longer.
    assert f"ETA {(total - start - 11) / (11 / 110):.0f}s" not in lines[1]
    mean = 20 * per_unit / 119.0
    assert lines[-1] == (
        f"train: {start + 20} steps  in 119.0 s (first 100.0 s), {mean:.1f} examples/s"
    )


def test_fast_first_unit_logs_nothing_and_unknown_total_has_no_eta(clock, caplog):
    caplog.set_level(logging.INFO, logger="absl")
    p = progress.Progress("el2n", None, unit="example", every_s=10.0)
    clock.now = 2.0  # compiled and ran the first batch of 256 in 2 s: under every_s, no line
    p.update(256, "x 2 seeds")
    assert _lines(caplog) == []
    clock.now = 12.0  # 4 more batches in 10 s
    p.update(5 * 256, "x 2 seeds")
    assert _lines(caplog) == [f"el2n: example {5 * 256}, {4 * 256 / 10.0:.1f} examples/s x 2 seeds"]


def test_real_sleep_first_step_is_left_out(caplog):
    import time

    caplog.set_level(logging.INFO, logger="absl")
    p = progress.Progress("grand", 10, unit="example", every_s=0.0)
    time.sleep(0.5)  # a slow first unit
    p.update(1)
    time.sleep(0.02)
    p.update(2)
    rate = float(re.search(r", ([\d.]+) examples/s", _lines(caplog)[-1]).group(1))
    # One unit in about 0.02 s after the first: about 50/s; counting the first 0.5 s gives < 4/s.
    assert rate > 8.0, _lines(caplog)
