"""Timing and peak memory of the benchmark processes: examples/s of a call, the process's peak.

Usage:

    from benchmarks import timing
    rate = timing.timed(lambda: step(state, batch), num_examples=128)  # examples/s, warmed up
    peak = timing.peak_mb()  # the device's peak (accelerators) or the process's peak RSS (CPU)
"""

from __future__ import annotations

import resource
import time


def peak_mb() -> float:
    import jax

    if jax.default_backend() != "cpu":
        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_once(fn, num_examples: int) -> float:
    """Examples/s of one call of `fn()`."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn())
    return num_examples / (time.perf_counter() - start)


def timed(fn, num_examples: int) -> float:
    """Examples/s of `fn()` after one warm-up call."""
    import jax

    jax.block_until_ready(fn())
    return timed_once(fn, num_examples)


def cpu_model(default: str = "unknown") -> str:
    """The processor's model name from /proc/cpuinfo, else `default`."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return default
