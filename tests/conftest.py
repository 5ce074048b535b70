"""Shared test setup: quiet TensorFlow, keep it off accelerators, and small helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compiled XLA programs are cached on disk and shared by the test processes and the subprocesses
# they start (the entry point and figure scripts compile the same small programs many times).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datadiet_jax import data  # noqa: E402


def make_split(n=64, num_classes=3, hw=28, channels=1, seed=0) -> data.Split:
    """A learnable synthetic split: the class sets the mean brightness."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    base = labels[:, None, None, None] * (200 // num_classes)
    images = (rng.integers(0, 50, (n, hw, hw, channels)) + base).astype(np.uint8)
    return data.Split(
        name="synthetic",
        split="train",
        images=images,
        labels=labels,
        index=np.arange(n, dtype=np.int64),
        num_classes=num_classes,
        mean=np.full(channels, 0.4, np.float32),
        std=np.full(channels, 0.25, np.float32),
        clean_labels=labels,
        noisy_index=np.zeros(0, np.int64),
    )


@pytest.fixture
def synthetic_split():
    return make_split()
