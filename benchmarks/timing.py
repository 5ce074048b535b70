"""Timing and peak memory of the benchmark processes: examples/s of a call, the process's peak,
and the machine a benchmark ran on (CPU model, XLA_FLAGS, jax version) for its JSON and table.

Usage:

    from benchmarks import timing
    rate = timing.timed(lambda: step(state, batch), num_examples=128)  # examples/s, warmed up
    peak = timing.peak_mb()  # the device's peak (accelerators) or the process's peak RSS (CPU)
    info = timing.machine()  # {'cpu', 'cores', 'xla_flags', 'jax', 'backend', ...}
    line = timing.machine_line(info)  # 'Machine: <CPU>, 2 cores, jax 0.10.2 on cpu; XLA_FLAGS=...'
    timing.write_outputs('bench', 'prune', result, text)  # prune.json, prune.md, logged
"""

from __future__ import annotations

import json
import os
import resource
import time

from absl import logging


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


def machine() -> dict:
    """The run's environment (`pipeline.machine.environment`: CPU model, backend, jax version,
    XLA_FLAGS), the core count and the compilation cache of this process.

    XLA_FLAGS is read once, when JAX's backend starts: what this process's environment holds is
    what its programs were compiled with (a child process started with other flags records its
    own).
    """
    import jax

    from datadiet_jax.pipeline import machine as run_machine

    return run_machine.environment() | {
        "cores": os.cpu_count(),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir or None,
    }


def machine_line(info: dict) -> str:
    """One line for a benchmark table's caption: CPU model, cores, jax, backend, XLA_FLAGS."""
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, jax {info['jax']} on "
        f"{info['backend']}; XLA_FLAGS={info['xla_flags'] or '(unset)'}."
    )


def write_outputs(out_dir: str, name: str, result: dict, text: str) -> None:
    """Writes OUT_DIR/NAME.json (`result`) and OUT_DIR/NAME.md (`text`, a benchmark's tables),
    and logs the tables."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(text)
    logging.info("%s:\n%s", name, text)
