"""The K-seed training step of `k_step.programs` on one device, on a mesh of every device, and
stacked (S runs of R seeds as one K = S*R step against S steps of R seeds): `device_check`'s
`train_sharded` and `train_stacked`.

Synthetic batches (no TensorFlow): `image [K, B, ...]`, `label`, `index`, `mask`, Dropout keys.
Needs ml_collections (the training config) besides JAX, Flax and optax.
"""

from __future__ import annotations

import time

SEEDS = 4  # K of the sharded step
STACK = (3, 2)  # S runs of R seeds


def _setup(model_name: str, num_seeds: int, batch: int, mesh):
    import jax
    import numpy as np

    from datadiet_jax.models import get_model
    from datadiet_jax.pipeline.config_base import base_config
    from datadiet_jax.training import k_step, keys, train_mesh

    cfg = base_config().train
    cfg.batch_size = batch
    cfg.seed_axis = "auto"
    model = get_model(model_name, 10)
    shape = (28, 28, 1) if model_name == "small_cnn" else (32, 32, 3)
    init_fn, step_fn = k_step.programs(model, cfg, 1000, mesh)
    state = init_fn(keys.init_keys(0, 1, num_seeds), np.zeros((1, *shape), np.float32))
    n = 4 * batch
    stats = k_step.init_stats(num_seeds, n)
    rng = np.random.default_rng(0)
    host = {
        "image": rng.normal(size=(num_seeds, batch, *shape)).astype(np.float32),
        "label": rng.integers(0, 10, (num_seeds, batch)).astype(np.int32),
        "index": rng.integers(0, n, (num_seeds, batch)).astype(np.int64),
        "mask": np.ones((num_seeds, batch), np.float32),
        "rng": keys.dropout_keys(0, 1, num_seeds),
    }
    state, stats = train_mesh.place(state, mesh), train_mesh.place(stats, mesh)
    batch_arrays = train_mesh.place_batch(host, mesh, num_seeds, batch)
    jax.block_until_ready(state)
    return step_fn, state, stats, batch_arrays


def _rate(model_name: str, num_seeds: int, batch: int, iters: int, mesh) -> float:
    """Examples/s of `iters` K-seed steps after a compiling one."""
    import jax

    step_fn, state, stats, b = _setup(model_name, num_seeds, batch, mesh)
    state, stats, loss = step_fn(state, stats, b)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(iters):
        state, stats, loss = step_fn(state, stats, b)
    jax.block_until_ready(loss)
    return num_seeds * batch * iters / (time.perf_counter() - start)


def sharded(model_name: str, batch: int, iters: int) -> dict:
    """K=SEEDS seeds on one device and on the 'auto' mesh of every device."""
    import jax

    from datadiet_jax.training import train_mesh

    mesh = train_mesh.make_mesh("auto", SEEDS, batch, "train_sharded")
    out = {
        "num_seeds": SEEDS,
        "batch_size": batch,
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape) if mesh is not None else None,
        "one_device_examples_per_s": _rate(model_name, SEEDS, batch, iters, None),
    }
    if mesh is not None:
        out["mesh_examples_per_s"] = _rate(model_name, SEEDS, batch, iters, mesh)
        out["mesh_speedup"] = out["mesh_examples_per_s"] / out["one_device_examples_per_s"]
    return out


def stacked(model_name: str, batch: int, iters: int) -> dict:
    """S runs of R seeds: S separate R-seed steps against one stacked K = S*R step (one device)."""
    runs, seeds = STACK
    separate = _rate(model_name, seeds, batch, iters, None)  # each run alone, S times over
    together = _rate(model_name, runs * seeds, batch, iters, None)
    return {
        "runs": runs,
        "seeds": seeds,
        "batch_size": batch,
        "separate_examples_per_s": separate,
        "stacked_examples_per_s": together,
        "stacked_speedup": together / separate,
    }
