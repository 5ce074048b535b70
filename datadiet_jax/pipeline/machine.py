"""The processor, backend, jax version and `XLA_FLAGS` of this process, for a run's provenance.

XLA reads `XLA_FLAGS` once, when JAX's backend starts, and the fastest XLA CPU configuration
depends on the processor (docs/performance.md, "XLA flags for the CPU at hand"); a flag there
changes which kernels run, so scores and trained weights can differ in the last bits between
configurations. Score files record this in their provenance ('environment') and results.json
beside the runs.

Usage:

    from datadiet_jax.pipeline import machine
    machine.environment()  # {'cpu': 'Intel(R) Xeon(R) Processor', 'backend': 'cpu',
                           #  'jax': '0.10.2', 'xla_flags': ''}
"""

from __future__ import annotations

import os


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The first processor's model name in `path`; 'unknown' without one (not Linux)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return "unknown"


def environment() -> dict:
    """{'cpu', 'backend', 'jax', 'xla_flags'} of this process; 'xla_flags' is the environment's
    `XLA_FLAGS` ('' when unset), what the backend read when it started."""
    import jax

    return {
        "cpu": cpu_model(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
