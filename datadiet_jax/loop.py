"""The K-seed training loop: resumable from orbax checkpoints, with epoch hooks for scoring."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from datadiet_jax import aum, forgetting, health, pipelines, seeds, train


def seed_keys(seed: int, purpose: int, num_seeds: int) -> jax.Array:
    """K init keys derived from (config seed, purpose, seed index); `[K]` key array."""
    base = jax.random.fold_in(jax.random.key(seed), purpose)
    return jax.vmap(lambda k: jax.random.fold_in(base, k))(np.arange(num_seeds))


def train_seeds(
    model,
    split,
    kept: np.ndarray,
    *,
    train_cfg,
    num_seeds: int,
    seed: int,
    purpose: int,
    num_steps: int,
    schedule_steps: int,
    ckpt_dir: str,
    augment: bool,
    hooks: dict[int, Callable] | None = None,
    keep_epochs=(),
    max_steps: int | None = None,
    name: str = "train",
    on_diverge: str = "mark",
    init_state: train.TrainState | None = None,
):
    """Trains K seeds together on `split` restricted to `kept`, resuming from `ckpt_dir`.

    Each seed has its own init (key from `seed`, `purpose`, seed index) and its own data order.
    Forgetting and AUM statistics are tracked on the way and checkpointed with the state.

    Args:
      model: Flax module.
      split: `data.Split` (train split, possibly with noisy labels).
      kept: [M] int64 dataset indices to train on.
      train_cfg: `config.train` (batch_size, optimizer fields, seed_axis, checkpoint_every_epochs).
      num_seeds: K.
      seed: run seed.
      purpose: distinguishes independent trainings of one run (score stage, each retraining).
      num_steps: steps to train.
      schedule_steps: length of the learning-rate schedule (a stage may stop before its end).
      ckpt_dir: orbax checkpoint directory.
      augment: random crop and flip.
      hooks: {epoch: fn(state, stats)} called when `epoch` is reached (epoch 0 is the init).
      keep_epochs: epochs whose checkpoints are kept.
      max_steps: stop early at this step (the run can later resume); 0 stops at the start.
      name: label of the progress log lines and errors.
      on_diverge: what a non-finite loss does. 'raise': stop with a ValueError naming `name`, the
        seed and the step (the score stage: scores of a diverged seed mean nothing). 'mark': log
        one error line naming `name` and the seed, and go on with the other seeds; the seed's
        first non-finite step stays in `stats['nonfinite_step']` for the caller to report. Every
        seed diverged stops the training.
      init_state: stacked `TrainState` [K, ...] to start from instead of a fresh init (e.g. K
        copies of a parent network, for linear mode connectivity). Training starts at its step
        counter (equal for all K) and keeps its optimizer state: momentum and the position in the
        learning-rate schedule continue as if the parent had gone on training. Only the data
        order (from `seed`, `purpose`, seed index) differs. Forgetting statistics start at zero.

    Returns:
      (state, stats, step): stacked `TrainState` [K, ...], stats
      `{'forgetting': forgetting state, 'aum': AUM state}` (arrays [K, N]) and
      `'nonfinite_step'` ([K], see `health`), last step.
    """
    hooks = hooks or {}
    spe = pipelines.steps_per_epoch(len(kept), train_cfg.batch_size)
    init_fn, step_fn = _programs(model, _optimizer_fields(train_cfg), schedule_steps,
                                 train_cfg.seed_axis)  # fmt: skip
    first = 0
    if init_state is None:
        sample = np.zeros((1, *split.images.shape[1:]), np.float32)
        state = init_fn(seed_keys(seed, purpose, num_seeds), sample)
    else:
        state, first = _copy_init_state(init_state, num_seeds, num_steps)
    stats = init_stats(num_seeds, split.num_examples)
    keep_steps = {e * spe for e in keep_epochs} | {num_steps}
    ckpts = train.Checkpoints(ckpt_dir, keep_steps)
    latest, state, stats = ckpts.restore_latest(state, stats)
    start = latest or first
    if latest:
        logging.info("Resumed %s at step %d/%d", ckpt_dir, start, num_steps)
    reported = _check_finite(stats, set(), name, spe, on_diverge)
    hook_steps = {e * spe: fn for e, fn in hooks.items()}
    if start in hook_steps:
        hook_steps[start](state, stats)
    stop = num_steps if max_steps is None else min(num_steps, max_steps)
    if start >= stop:
        ckpts.close()
        return state, stats, start

    batches = pipelines.train_batches(
        split.images,
        split.labels,
        kept,
        mean=split.mean,
        std=split.std,
        num_seeds=num_seeds,
        batch_size=train_cfg.batch_size,
        seed=seed * 1000 + purpose,
        num_steps=stop,
        start_step=start,
        augment=augment,
    )
    progress = train.Progress(name, stop, start, num_seeds * train_cfg.batch_size)
    save_every = max(1, train_cfg.checkpoint_every_epochs) * spe
    metrics_path = os.path.join(os.path.dirname(ckpt_dir.rstrip("/")), "metrics.jsonl")
    step, loss = start, None
    for batch in batches:
        state, stats, loss = step_fn(state, stats, batch)
        step += 1
        progress.update(step, f"(epoch {step / spe:.2f})", pending=loss)
        at_epoch_end = step % spe == 0 or step == stop
        must_save = step % save_every == 0 or step == stop or step in keep_steps
        if at_epoch_end or must_save:
            reported = _check_finite(stats, reported, name, spe, on_diverge)
        if at_epoch_end:
            _append_jsonl(
                metrics_path, {"step": step, "epoch": step / spe, "loss": np.asarray(loss).tolist()}
            )
        if must_save:
            ckpts.save(step, state, stats)
        if step in hook_steps:
            hook_steps[step](state, stats)
        if len(reported) == num_seeds:
            logging.error("%s: every seed diverged; training stopped at step %d.", name, step)
            break
    ckpts.close()
    return state, stats, step


def _check_finite(stats, reported: set, name: str, spe: int, on_diverge: str) -> set:
    """Reports seeds whose loss became non-finite since the last check; returns all reported."""
    steps = np.asarray(stats["nonfinite_step"])
    new = [k for k in np.flatnonzero(steps >= 0) if k not in reported]
    for k in new:
        message = (
            f"{name}: seed {k} diverged (non-finite loss at step {steps[k]}, epoch "
            f"{steps[k] / spe:.2f}); lower config.train.learning_rate or set "
            "config.train.warmup_epochs"
        )
        if on_diverge == "raise":
            raise ValueError(message + ".")
        logging.error("%s; its result is marked 'diverged'.", message)
    return reported | set(new)


def init_stats(num_seeds: int, num_examples: int) -> dict:
    """Empty training statistics of K seeds over N examples (also a checkpoint's template):
    {'forgetting': [K, N] arrays, 'aum': [K, N] arrays, 'nonfinite_step': [K]}."""
    return {
        "forgetting": forgetting.init_forgetting(num_seeds, num_examples),
        "aum": aum.init_aum(num_seeds, num_examples),
        "nonfinite_step": health.init_nonfinite(num_seeds),
    }


def initial_states(model, split, *, train_cfg, num_seeds: int, seed: int, purpose: int,
                   schedule_steps: int) -> train.TrainState:  # fmt: skip
    """The K stacked initial states `train_seeds` starts from with the same arguments."""
    init_fn, _ = _programs(model, _optimizer_fields(train_cfg), schedule_steps,
                           train_cfg.seed_axis)  # fmt: skip
    sample = np.zeros((1, *split.images.shape[1:]), np.float32)
    return init_fn(seed_keys(seed, purpose, num_seeds), sample)


def _copy_init_state(init_state, num_seeds: int, num_steps: int):
    """A private copy of `init_state` (the step donates its input) and its step counter."""
    lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(init_state)}
    if lead != {num_seeds}:
        raise ValueError(
            f"init_state has leading axes {sorted(lead, key=str)}, expected {num_seeds} (one per "
            "seed); stack one state per seed, e.g. K copies of the parent."
        )
    steps = np.unique(np.asarray(init_state.step))
    if steps.size != 1 or not 0 <= int(steps[0]) <= num_steps:
        raise ValueError(
            f"init_state steps {steps.tolist()} must be one value in [0, {num_steps}]; start "
            "all seeds from the same step of the schedule."
        )
    return jax.tree.map(lambda x: jnp.array(x, copy=True), init_state), int(steps[0])


_OPTIMIZER_FIELDS = (
    "learning_rate", "lr_drop_fractions", "lr_drop_factor", "momentum", "nesterov", "weight_decay",
    "warmup_epochs", "num_epochs",
)  # fmt: skip


def _optimizer_fields(train_cfg) -> tuple:
    return tuple((k, train_cfg[k]) for k in _OPTIMIZER_FIELDS if k in train_cfg)


@functools.lru_cache(maxsize=8)
def _programs(model, optimizer_fields: tuple, schedule_steps: int, seed_axis: str):
    """Jitted K-seed init and step, shared by every training with the same model and optimizer
    (the score training and all retrainings of a run), so each compiles once."""
    tx = train.make_optimizer(ml_collections.ConfigDict(dict(optimizer_fields)), schedule_steps)

    init = functools.partial(train.init_states, model, tx, seed_axis=seed_axis)
    step = jax.jit(functools.partial(_k_step, model, tx, seed_axis), donate_argnums=(0, 1))
    return jax.jit(init), step


def _k_step(model, tx, seed_axis, state, stats, batch):
    step = seeds.over_seeds(functools.partial(train.train_step, model, tx), seed_axis)
    state, metrics = step(state, batch)
    index, mask = batch["index"], batch["mask"]
    stats = {
        "forgetting": forgetting.update_forgetting(
            stats["forgetting"], index, metrics["correct"], mask
        ),
        "aum": aum.accumulate_margins(stats["aum"], index, metrics["margin"], mask),
        "nonfinite_step": health.update_nonfinite(
            stats["nonfinite_step"], metrics["loss"], state.step
        ),
    }
    return state, stats, metrics["loss"]


def _append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
