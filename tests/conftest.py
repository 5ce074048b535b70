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

import csv  # noqa: E402
import glob  # noqa: E402

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


def train_cfg(**kw):
    """The base `config.train` with batch 16 and a checkpoint every epoch, updated by `kw`."""
    # Imported here: the score tests also run where ml_collections and TensorFlow are absent.
    from datadiet_jax.config_base import base_config

    cfg = base_config().train
    cfg.batch_size = 16
    cfg.checkpoint_every_epochs = 1
    cfg.update(kw)
    return cfg


def train_tiny(split, ckpt_dir, **kw):
    """`loop.train_seeds` of a width-4 small CNN: 2 seeds, 12 steps of 16, unless `kw` says."""
    args = dict(
        train_cfg=train_cfg(),
        num_seeds=2,
        seed=0,
        purpose=1,
        num_steps=12,
        schedule_steps=12,
        ckpt_dir=str(ckpt_dir),
        augment=False,
    )
    args.update(kw)
    from datadiet_jax import loop, models

    model = models.get_model("small_cnn", split.num_classes, width=4)
    return loop.train_seeds(model, split, split.index, **args)


def read_rows(path):
    """The rows of a CSV file, as dicts."""
    with open(path) as f:
        return list(csv.DictReader(f))


def snapshot(runs_dir, scale="smoke"):
    """{path: (mtime_ns, size)} of every file under RUNS/<scale>/ (proves nothing was rewritten)."""
    out = {}
    for path in glob.glob(os.path.join(runs_dir, scale, "**", "*"), recursive=True):
        if os.path.isfile(path):
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
    return out


def figure_dirs(tmp_path_factory, name):
    """(runs, out) folders under a fresh temporary root, with the figures' XLA cache enabled."""
    from experiments import common  # imported lazily: score tests run without ml_collections

    root = tmp_path_factory.mktemp(name)
    runs, out = str(root / "runs"), str(root / "out")
    common.enable_compilation_cache(runs)
    return runs, out
