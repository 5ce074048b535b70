"""The jitted K-seed step: the K seeds' train steps and per-example statistics as one program.

The statistics updated inside the step are forgetting, AUM, the first non-finite step of each
seed and, when asked, the trajectory scores (`init_stats`). With a pruning schedule the
statistics also hold its state (`stats['prune']`, `prune_schedules`): the step then weighs each
example's loss by its weight there, records each presented example's unweighted loss, and
leaves a seed whose batch is all padding unchanged. `programs` is shared by every training
with the same model, optimizer, schedule and mesh (the score training and all retrainings of a
run), so each compiles once; the step donates its state and statistics.

Usage:

    from datadiet_jax.training import k_step, keys
    init_fn, step_fn = k_step.programs(model, config.train, schedule_steps)
    state = init_fn(keys.init_keys(seed, purpose, K), sample)        # every leaf [K, ...]
    stats = k_step.init_stats(K, N)
    state, stats, loss = step_fn(state, stats, batch)                 # loss [K]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from datadiet_jax.scores import aum, forgetting, trajectory
from datadiet_jax.scores.model_form import model_form
from datadiet_jax.scores.seed_axis import over_seeds
from datadiet_jax.training import health, train, train_mesh


def init_stats(
    num_seeds: int, num_examples: int, *, num_classes: int = 0, dynamics_window: int = 0
) -> dict:
    """Empty training statistics of K seeds over N examples (also a checkpoint's template):
    {'forgetting': [K, N] arrays, 'aum': [K, N] arrays, 'nonfinite_step': [K]} and, when
    `dynamics_window` > 0, 'dynamics' (`scores.trajectory.init_dynamics`, arrays [K, N, ...])."""
    stats = {
        "forgetting": forgetting.init_forgetting(num_seeds, num_examples),
        "aum": aum.init_aum(num_seeds, num_examples),
        "nonfinite_step": health.init_nonfinite(num_seeds),
    }
    if dynamics_window:
        stats["dynamics"] = trajectory.init_dynamics(
            num_seeds, num_examples, num_classes, window=dynamics_window
        )
    return stats


_OPTIMIZER_FIELDS = (
    "learning_rate",
    "lr_drop_fractions",
    "lr_drop_factor",
    "momentum",
    "nesterov",
    "weight_decay",
    "warmup_epochs",
    "num_epochs",
)


def programs(model, train_cfg, schedule_steps: int, mesh=None, *, rate_per_batch: bool = False):
    """The jitted K-seed init `(keys [K], sample) -> state` and step `(state, stats, batch) ->
    (state, stats, loss [K])`, shared by every training with the same model, optimizer,
    schedule and mesh (the score training and all retrainings of a run), so each compiles once.

    The step donates its state and statistics; `train_cfg.fast_backward` chooses its gradient
    program (`train.fast_backward`). With a ('seed', 'data') `mesh` the step takes and returns
    mesh-placed arrays (`train_mesh.sharded_step`); the init stays on one device. With
    `rate_per_batch` the step's rate is the schedule at each batch's `rate_step` [K]
    (`train.make_optimizer`).
    """
    model = model_form(model)
    fields = tuple((k, train_cfg[k]) for k in _OPTIMIZER_FIELDS if k in train_cfg)
    fast = train.fast_backward(train_cfg.get("fast_backward", "auto"))
    steps = (schedule_steps, rate_per_batch)
    return _programs(model, fields, steps, train_cfg.seed_axis, fast, mesh)


@functools.lru_cache(maxsize=8)
def _programs(model, optimizer_fields: tuple, steps: tuple, seed_axis: str, fast: bool, mesh):
    cfg = ml_collections.ConfigDict(dict(optimizer_fields))
    schedule_steps, per_batch = steps
    tx = train.make_optimizer(cfg, schedule_steps, rate_per_batch=per_batch)
    init = functools.partial(train.init_states, model, tx, seed_axis=seed_axis)
    rate = train.learning_rate_fn(cfg, schedule_steps) if per_batch else None
    step = functools.partial(train.train_step, model, tx, fast=fast, rate=rate)
    body = functools.partial(_k_step, step, train_mesh.step_seed_axis(seed_axis, mesh))
    if mesh is None:
        return jax.jit(init), jax.jit(body, donate_argnums=(0, 1))
    return jax.jit(init), train_mesh.sharded_step(body, mesh)


def _k_step(one_seed, seed_axis, state, stats, batch):
    step = over_seeds(one_seed, seed_axis)
    pruned = "prune" in stats  # static: a pruning schedule's state rides with the statistics
    if pruned:
        rows = jnp.arange(batch["index"].shape[0])[:, None]
        batch = {**batch, "weight": stats["prune"]["weight"][rows, batch["index"]]}
    before = state
    state, metrics = step(state, batch)
    index, mask, old = batch["index"], batch["mask"], stats
    if pruned:
        state = _keep_idle(before, state, mask)
    stats = {
        "forgetting": forgetting.update_forgetting(
            stats["forgetting"], index, metrics["correct"], mask
        ),
        "aum": aum.accumulate_margins(stats["aum"], index, metrics["margin"], mask),
        "nonfinite_step": health.update_nonfinite(
            stats["nonfinite_step"], metrics["loss"], state.step
        ),
    }
    if pruned:
        stats["prune"] = record_losses(old["prune"], index, metrics["losses"], mask)
    if "dynamics" in old:  # the pytree's structure is static: decided when the step is traced
        stats["dynamics"] = trajectory.update_dynamics(
            old["dynamics"], index, metrics["probs"], batch["label"], mask
        )
    return state, stats, metrics["loss"]


def _keep_idle(before, after, mask):
    """`after`, except for the seeds whose batch is all padding (a pruning round's last steps
    of a seed with fewer examples than another): they keep `before`, so the step is none for
    them (no weight decay, momentum or step count)."""
    active = mask.sum(axis=-1) > 0  # [K]

    def pick(old, new):
        return jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    return jax.tree.map(pick, before, after)


def record_losses(prune: dict, index, losses, mask) -> dict:
    """The pruning state with each presented example's unweighted loss recorded (the last one
    counts; InfoBatch's scores). index, losses, mask: [K, B]; padding is dropped."""
    n = prune["loss"].shape[1]
    rows = jnp.arange(index.shape[0])[:, None]
    idx = jnp.where(mask > 0, index, n)
    return {**prune, "loss": prune["loss"].at[rows, idx].set(losses, mode="drop")}
