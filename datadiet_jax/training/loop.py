"""The K-seed training loop: resumable from orbax checkpoints, with epoch hooks for scoring.

One loop serves every training of the project (the score stage, each retraining, the dynamics
studies). What a training is lives in a `TrainSpec`; `fit` restores the latest
checkpoint, runs the jitted K-seed step over the tf.data batches and, at each epoch end, checks
the losses, appends a metrics line, saves a checkpoint when due and calls the epoch's hook.
With several devices the stacked state lives on a ('seed', 'data') mesh (`train_mesh`,
`config.train.mesh`); hooks and the caller get it back on the default device.

Usage:

    from datadiet_jax.training import keys, loop
    spec = loop.TrainSpec(config.train, num_seeds=4, seed=0, purpose=keys.Purpose.SCORE,
                          num_steps=1000, schedule_steps=1000, ckpt_dir="run/ckpt", augment=False)
    hooks = {1: lambda state, stats: save_scores(state)}      # at the end of epoch 1
    state, stats, step = loop.fit(model, split, split.index, spec, hooks=hooks)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from datadiet_jax.scores.model_form import model_form
from datadiet_jax.scores.progress import Progress
from datadiet_jax.training import (
    files,
    input_pipeline,
    k_step,
    keys,
    mode_guard,
    prune_feed,
    prune_schedules,
    tracking,
    train,
    train_mesh,
)
from datadiet_jax.training.checkpoints import Checkpoints


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """One K-seed training.

    Attributes:
      train_cfg: `config.train` (batch_size, optimizer fields, seed_axis, mesh,
        checkpoint_every_epochs).
      num_seeds: K.
      seed: run seed.
      purpose: distinguishes independent trainings of one run (`keys.Purpose`): each seed's init
        key and data order derive from (seed, purpose, seed index).
      num_steps: steps to train.
      schedule_steps: length of the learning-rate schedule (a stage may stop before its end).
      ckpt_dir: orbax checkpoint directory; `metrics.jsonl` goes next to it.
      augment: random crop and flip.
      name: label of the progress log lines and errors.
      keep_epochs: epochs whose checkpoints are kept.
      max_steps: stop early at this step (the run can later resume); 0 stops at the start.
      on_diverge: what a non-finite loss does. 'raise': stop with a ValueError naming `name`, the
        seed and the step (the score stage: scores of a diverged seed mean nothing). 'mark': log
        one error line naming `name` and the seed, and go on with the other seeds; the seed's
        first non-finite step stays in `stats['nonfinite_step']` for the caller to report. Every
        seed diverged stops the training.
      dynamics_window: > 0 also tracks the training-dynamics scores (`scores.trajectory`: Dyn-Unc,
        TDDS, DUAL) over windows of this many epochs; 0 (the default) does not.
      streams: the seed index each of the K seeds stands for (its init, Dropout and data
        streams, `keys.seed_indices`); () is 0..K-1. A stacked training of S runs of R seeds
        gives (0..R-1) S times, so each member trains as in its own run.
      prune: a pruning schedule (`prune_schedules.PruneSchedule`, e.g. from
        `prune_schedules.from_config(config.train.prune)`): each seed trains on the kept sets
        its schedule plans round by round (`prune_feed`), for the same `num_steps`; its state
        is `stats['prune']`. None (the default) trains on every kept example each epoch.
    """

    train_cfg: Any
    num_seeds: int
    seed: int
    purpose: int
    num_steps: int
    schedule_steps: int
    ckpt_dir: str
    augment: bool
    name: str = "train"
    keep_epochs: tuple[int, ...] = ()
    max_steps: int | None = None
    on_diverge: str = "mark"
    dynamics_window: int = 0
    streams: tuple[int, ...] = ()
    prune: prune_schedules.PruneSchedule | None = None

    def steps_per_epoch(self, num_kept: int) -> int:
        return input_pipeline.steps_per_epoch(num_kept, self.train_cfg.batch_size)


def fit(
    model,
    split,
    kept: np.ndarray,
    spec: TrainSpec,
    *,
    hooks: dict[int, Callable] | None = None,
    init_state: train.TrainState | None = None,
    past_hooks: bool = False,
):
    """Trains K seeds together on `split` restricted to `kept`, resuming from `spec.ckpt_dir`.

    Each seed has its own init and its own data order. Forgetting and AUM statistics are tracked
    on the way and checkpointed with the state.

    Args:
      model: a Linen module, an NNX factory, a plain-function model or their `ModelForm`
        (`scores/model_form/`).
      split: `data.Split` (train split, possibly with noisy labels).
      kept: [M] int64 dataset indices to train on, or [K, M]: one kept set per seed (a
        stacked training of several runs of equal-size kept sets).
      spec: what the training is (`TrainSpec`).
      hooks: {epoch: fn(state, stats)} called when `epoch` is reached (epoch 0 is the init).
      init_state: stacked `TrainState` [K, ...] to start from instead of a fresh init (e.g. K
        copies of a parent network, for linear mode connectivity). Training starts at its step
        counter (equal for all K) and keeps its optimizer state: momentum and the position in the
        learning-rate schedule continue as if the parent had gone on training. Only the data
        order (from seed, purpose, seed index) differs. Forgetting statistics start at zero.
      past_hooks: also call the hooks of epochs before the resumed step, each on that epoch's
        checkpoint (`spec.keep_epochs` keeps them; epoch 0 is the initialization again): the
        score stage recomputes a deleted score file this way, without training.

    Returns:
      (state, stats, step): stacked `TrainState` [K, ...], stats
      `{'forgetting': forgetting state, 'aum': AUM state}` (arrays [K, N]),
      `'nonfinite_step'` ([K], see `health`) and, with `spec.dynamics_window`, `'dynamics'`
      (`scores.trajectory` state, arrays [K, N, ...]), last step.
    """
    run = _Training(model_form(model), split, kept, spec, hooks or {})
    state, stats, start = run.restore(init_state)
    if past_hooks:
        run.past_hooks(start, state, stats, init_state)
    if start in run.hook_steps:
        run.hook_steps[start](state, stats)
    if start < run.stop:
        state, stats, start = run.steps(state, stats, start)
    run.ckpts.close()
    return run.gathered(state, stats) + (start,)


class _Training:
    """One call of `fit`: its checkpoints, hooks and the bookkeeping after each step."""

    def __init__(self, model, split, kept, spec: TrainSpec, hooks: dict):
        self.model, self.split, self.kept, self.spec = model, split, kept, spec
        self.spe = spec.steps_per_epoch(np.shape(kept)[-1])
        self.keep_steps = {e * self.spe for e in spec.keep_epochs} | {spec.num_steps}
        self.hook_steps = {e * self.spe: fn for e, fn in hooks.items()}
        self.stop = (
            spec.num_steps if spec.max_steps is None else min(spec.num_steps, spec.max_steps)
        )
        self.save_every = max(1, spec.train_cfg.checkpoint_every_epochs) * self.spe
        self.metrics_path = os.path.join(
            os.path.dirname(spec.ckpt_dir.rstrip("/")), "metrics.jsonl"
        )
        self.ckpts = Checkpoints(spec.ckpt_dir, self.keep_steps)
        self.reported: set = set()
        self.mesh = train_mesh.make_mesh(
            spec.train_cfg.get("mesh", "auto"), spec.num_seeds, spec.train_cfg.batch_size, spec.name
        )
        self.hook_steps = {
            step: functools.partial(self._call_hook, fn) for step, fn in self.hook_steps.items()
        }

    def _call_hook(self, fn, state, stats):
        return fn(*self.gathered(state, stats))

    def gathered(self, state, stats) -> tuple:
        """(state, stats) on the default device, as a single-device training leaves them."""
        return train_mesh.gather(state, self.mesh), train_mesh.gather(stats, self.mesh)

    def restore(self, init_state):
        """(state, stats, first step): the latest checkpoint, else the initial state."""
        spec, first = self.spec, 0
        files.read_jsonl(self.metrics_path, fix=metrics_fix(spec.ckpt_dir))  # refused if damaged
        if init_state is None:
            state = initial_states(self.model, self.split, spec)
        else:
            state, first = _copy_init_state(init_state, spec.num_seeds, spec.num_steps)
        stats = self.empty_stats()
        state, stats = train_mesh.place(state, self.mesh), train_mesh.place(stats, self.mesh)
        latest, state, stats = self.ckpts.restore_latest(state, stats)
        if latest:
            logging.info("Resumed %s at step %d/%d", spec.ckpt_dir, latest, spec.num_steps)
        self.reported = _check_finite(stats, self.reported, spec, self.spe)
        return state, stats, latest or first

    def empty_stats(self) -> dict:
        """The statistics at step 0 (`init_stats`)."""
        spec, split = self.spec, self.split
        width = num_outputs(self.model, split) if spec.dynamics_window else 0
        stats = k_step.init_stats(
            spec.num_seeds,
            split.num_examples,
            num_classes=width,
            dynamics_window=spec.dynamics_window,
        )
        if spec.prune is not None:
            state = prune_schedules.init_state(spec.num_seeds, split.num_examples, self.kept)
            stats["prune"] = prune_feed.jax_arrays(state)
        return stats

    def past_hooks(self, start: int, state, stats, init_state) -> None:
        """Calls the hooks of steps before `start`, each on the state saved at its step."""
        saved = set(self.ckpts.all_steps())
        for step in sorted(s for s in self.hook_steps if s < start):
            if step in saved:
                at_step = self.ckpts.restore(step, state, stats)
            elif step == 0 and init_state is None:
                at_step = (initial_states(self.model, self.split, self.spec), self.empty_stats())
            else:
                raise ValueError(
                    f"{self.spec.name}: the checkpoint of step {step} (epoch {step // self.spe}) "
                    f"is not in {self.spec.ckpt_dir}, so its epoch's work cannot be redone; "
                    "delete that folder to train again from the start."
                )
            self.hook_steps[step](*at_step)

    def steps(self, state, stats, start: int):
        """Trains from `start` to the stop step; returns (state, stats, last step)."""
        spec, split = self.spec, self.split
        _, step_fn = k_step.programs(self.model, spec.train_cfg, spec.schedule_steps, self.mesh)
        stream = input_pipeline.BatchStream(
            num_seeds=spec.num_seeds,
            batch_size=spec.train_cfg.batch_size,
            seed=keys.data_seed(spec.seed, spec.purpose),
            num_steps=self.stop,
            start_step=start,
            augment=spec.augment,
            streams=spec.streams,
            block=train_mesh.local_block(self.mesh, spec.num_seeds, spec.train_cfg.batch_size),
        )
        live = {"state": state, "stats": stats}
        if spec.prune is None:
            batches = input_pipeline.train_batches(split, self.kept, stream)
        else:
            ids = (spec.seed, spec.purpose)
            batches = prune_feed.PruneFeed(
                self.model, split, self.kept, spec.prune, stream, ids, spec.num_steps, self.mesh
            ).batches(live)
        per_step = spec.num_seeds * spec.train_cfg.batch_size
        rng = keys.dropout_keys(spec.seed, spec.purpose, spec.num_seeds, spec.streams)
        progress = Progress(spec.name, self.stop, start=start, examples_per_unit=per_step)
        step, loss = start, None
        self.epoch_clock, self.epoch_step = time.perf_counter(), start
        before = mode_guard.host_state(state.model_state)
        for batch in batches:
            state, stats = live["state"], live["stats"]  # a new round's state (`prune_feed`)
            batch = train_mesh.place_batch(
                {**batch, "rng": rng}, self.mesh, spec.num_seeds, spec.train_cfg.batch_size
            )
            state, stats, loss = step_fn(state, stats, batch)
            live["state"], live["stats"] = state, stats
            if step == start:  # the first step of this process: was it a train-mode step?
                mode_guard.check(self.model, before, state, batch, spec.name)
            step += 1
            progress.update(step, f"(epoch {step / self.spe:.2f})", pending=loss)
            if not self.end_of_step(step, state, stats, loss):
                break
        progress.finish(step, f"(epoch {step / self.spe:.2f})", pending=loss)
        return state, stats, step

    def end_of_step(self, step: int, state, stats, loss) -> bool:
        """At an epoch end or a save: the non-finite check, a metrics line, the checkpoint, the
        epoch's hook. Returns False once every seed diverged (training stops)."""
        at_epoch_end = step % self.spe == 0 or step == self.stop
        must_save = step % self.save_every == 0 or step == self.stop or step in self.keep_steps
        if at_epoch_end or must_save:
            self.reported = _check_finite(stats, self.reported, self.spec, self.spe)
        if at_epoch_end:
            record = {
                "step": step,
                "epoch": step / self.spe,
                "loss": train_mesh.to_host(loss).tolist(),
            }
            # Wall seconds of the epoch's training steps in this process (the first epoch after
            # a start or resume includes compilation; hooks and epoch-end saves are not counted).
            seconds = time.perf_counter() - self.epoch_clock
            record["seconds"] = round(seconds, 3)
            if "prune" in stats:  # a pruning schedule: each seed's presentations so far
                seen = jnp.sum(stats["forgetting"]["seen"], axis=1)
                record["examples"] = train_mesh.to_host(seen).tolist()
            _append_jsonl(self.metrics_path, record)
            self.track(record, stats, seconds)
        if must_save:
            self.ckpts.save(step, state, stats)
        if step in self.hook_steps:
            self.hook_steps[step](state, stats)
        if at_epoch_end:
            self.epoch_clock, self.epoch_step = time.perf_counter(), step
        if len(self.reported) == self.spec.num_seeds:
            logging.error(
                "%s: every seed diverged; training stopped at step %d.", self.spec.name, step
            )
            return False
        return True

    def track(self, record: dict, stats, seconds: float) -> None:
        """The epoch's scalars to the open tracker (`tracking.current`): each seed's last loss
        and epoch accuracy (the share of its kept examples classified correctly when last
        seen, from the forgetting statistics), the learning rate of the last step, and the
        examples per second of the epoch's `seconds` (compilation included after a start)."""
        tracker = tracking.current()
        if not tracker.active:
            return
        step, spec = record["step"], self.spec
        correct = train_mesh.to_host(stats["forgetting"]["previous"])
        kept = np.broadcast_to(np.asarray(self.kept), (spec.num_seeds, np.shape(self.kept)[-1]))
        accuracy = np.take_along_axis(correct, kept, axis=1).mean(axis=1)
        rate = train.learning_rate_fn(spec.train_cfg, spec.schedule_steps)(step - 1)
        examples = (step - self.epoch_step) * spec.num_seeds * spec.train_cfg.batch_size
        values = {"learning_rate": float(rate)}
        values["examples_per_second"] = examples / max(seconds, 1e-9)
        for k in range(spec.num_seeds):
            values[f"loss/seed{k}"] = record["loss"][k]
            values[f"accuracy/seed{k}"] = accuracy[k]
        tracker.scalars(tracker.run_name(os.path.dirname(self.metrics_path)), step, values)


def _check_finite(stats, reported: set, spec: TrainSpec, spe: int) -> set:
    """Reports seeds whose loss became non-finite since the last check; returns all reported."""
    steps = train_mesh.to_host(stats["nonfinite_step"])
    new = [k for k in np.flatnonzero(steps >= 0) if k not in reported]
    for k in new:
        message = (
            f"{spec.name}: seed {k} diverged (non-finite loss at step {steps[k]}, epoch "
            f"{steps[k] / spe:.2f}); lower config.train.learning_rate or set "
            "config.train.warmup_epochs"
        )
        if spec.on_diverge == "raise":
            raise ValueError(message + ".")
        logging.error("%s; its result is marked 'diverged'.", message)
    return reported | set(new)


def num_outputs(model, split) -> int:
    """C, the width of the model's logits on `split`'s inputs (abstractly, without compiling)."""
    model, sample = model_form(model), sample_input(split)
    params, state = jax.eval_shape(model.init, jax.random.key(0), sample)
    logits, _ = jax.eval_shape(
        functools.partial(model.apply, train=True, rng=jax.random.key(1)), params, state, sample
    )
    return int(logits.shape[-1])


def initial_states(model, split, spec: TrainSpec) -> train.TrainState:
    """The K stacked initial states `fit` starts a fresh `spec` from."""
    init_fn, _ = k_step.programs(model, spec.train_cfg, spec.schedule_steps)
    inits = keys.init_keys(spec.seed, spec.purpose, spec.num_seeds, spec.streams)
    return init_fn(inits, sample_input(split))


def sample_input(split) -> np.ndarray:
    """One zero input `[1, ...]` of the shape and dtype the model gets from `split` (int32 for
    token ids, an embedding's input; float32 otherwise)."""
    dtype = np.int32 if split.kind == "tokens" else np.float32
    return np.zeros((1, *split.inputs.shape[1:]), dtype)


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


def metrics_fix(ckpt_dir: str) -> str:
    """What to do about a damaged `metrics.jsonl` beside `ckpt_dir`."""
    return (
        "delete it and rerun the same command: the training goes on from its last checkpoint and "
        f"logs the epochs after it (delete {ckpt_dir} too to train and log every epoch again)"
    )


def _append_jsonl(path: str, record: dict) -> None:
    files.append_line(path, json.dumps(record))
