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

import jax.numpy as jnp
import numpy as np
from absl import logging

from datadiet_jax.scores.model_form import model_form
from datadiet_jax.scores.progress import Progress
from datadiet_jax.training import (
    budget,
    files,
    health,
    initial,
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
        its schedule plans round by round (`prune_feed`); its state is `stats['prune']`. None
        (the default) trains on every kept example each epoch.
      num_rounds: with `prune`, the budget in rounds: the training ends after this many rounds
        (its epochs; each as long as its pruned sets need, so a pruned training takes fewer
        steps than `num_steps`, its upper bound), and the learning rate follows the rounds
        (`prune_feed`). 0 (the default): the budget is `num_steps` steps.
      evaluate: `fn(state) -> [K]` test accuracies, called at each epoch end (outside the
        epoch's timed seconds); recorded in metrics.jsonl as `test_accuracy`.
      target_accuracy: with `evaluate`, > 0 ends the training at the first epoch end where
        every seed's accuracy reaches it (a time-to-accuracy budget); 0 (the default) does not.
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
    num_rounds: int = 0
    evaluate: Callable | None = None
    target_accuracy: float = 0.0

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
    if start < run.stop and not run.reached(start, state, stats):
        state, stats, start = run.steps(state, stats, start)
    run.ckpts.close()
    return run.gathered(state, stats) + (start,)


class _Training:
    """One call of `fit`: its checkpoints, hooks and the bookkeeping after each step."""

    def __init__(self, model, split, kept, spec: TrainSpec, hooks: dict):
        self.model, self.split, self.kept, self.spec = model, split, kept, spec
        self.spe = spec.steps_per_epoch(np.shape(kept)[-1])
        self.rounds = spec.prune is not None and spec.num_rounds > 0
        if self.rounds and hooks:
            raise ValueError(f"{spec.name}: epoch hooks need a step budget (num_rounds=0).")
        self.feed = None
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
            state = initial.initial_states(self.model, self.split, spec)
        else:
            state, first = initial.copy_init_state(init_state, spec.num_seeds, spec.num_steps)
        stats = self.empty_stats()
        state, stats = train_mesh.place(state, self.mesh), train_mesh.place(stats, self.mesh)
        latest, state, stats = self.ckpts.restore_latest(state, stats)
        if latest:
            logging.info("Resumed %s at step %d/%d", spec.ckpt_dir, latest, spec.num_steps)
        self.reported = health.report_diverged(stats, self.reported, spec, self.spe)
        return state, stats, latest or first

    def empty_stats(self) -> dict:
        """The statistics at step 0 (`init_stats`)."""
        spec, split = self.spec, self.split
        width = initial.num_outputs(self.model, split) if spec.dynamics_window else 0
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
                fresh = initial.initial_states(self.model, self.split, self.spec)
                at_step = (fresh, self.empty_stats())
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
        _, step_fn = k_step.programs(
            self.model, spec.train_cfg, spec.schedule_steps, self.mesh, rate_per_batch=self.rounds
        )
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
            ids, budget = (spec.seed, spec.purpose), (spec.num_steps, spec.num_rounds)
            self.feed = prune_feed.PruneFeed(
                self.model, split, self.kept, spec.prune, stream, ids, budget, self.mesh
            )
            batches = self.feed.batches(live)
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
            progress.update(step, f"(epoch {self.epoch(step)[1]:.2f})", pending=loss)
            if not self.end_of_step(step, state, stats, loss):
                break
        progress.finish(step, f"(epoch {self.epoch(step)[1]:.2f})", pending=loss)
        return state, stats, step

    def reached(self, start: int, state, stats) -> bool:
        """Whether a resumed training had reached `spec.target_accuracy` when it stopped."""
        spec = self.spec
        if spec.evaluate is None or spec.target_accuracy <= 0 or start == 0:
            return False
        return budget.test_accuracy(spec, self.gathered(state, stats)[0])[1]

    def epoch(self, step: int) -> tuple[bool, float, bool]:
        """(whether `step` ends an epoch, the epochs done, whether it ends the budget)."""
        rounds = self.spec.num_rounds if self.rounds else 0
        return budget.position(step, self.spe, self.stop, self.feed, rounds)

    def end_of_step(self, step: int, state, stats, loss) -> bool:
        """At an epoch end or a save: the non-finite check, a metrics line (and the test
        accuracy with `spec.evaluate`), the checkpoint, the epoch's hook. Returns False once
        every seed diverged or reached `spec.target_accuracy` (training stops)."""
        at_epoch_end, epoch, last = self.epoch(step)
        every = max(1, self.spec.train_cfg.checkpoint_every_epochs)
        if self.rounds:  # every `every` rounds
            periodic = at_epoch_end and round(epoch) % every == 0
        else:
            periodic = step % self.save_every == 0
        must_save = periodic or last or step == self.stop or step in self.keep_steps
        reached = False
        if at_epoch_end or must_save:
            self.reported = health.report_diverged(stats, self.reported, self.spec, self.spe)
        if at_epoch_end:
            record = {"step": step, "epoch": epoch, "loss": train_mesh.to_host(loss).tolist()}
            # Wall seconds of the epoch's training steps in this process (the first epoch after
            # a start or resume includes compilation; hooks, evaluation and saves are not).
            seconds = time.perf_counter() - self.epoch_clock
            record["seconds"] = round(seconds, 3)
            if "prune" in stats or self.spec.evaluate is not None:
                seen = jnp.sum(stats["forgetting"]["seen"], axis=1)  # presentations so far
                record["examples"] = train_mesh.to_host(seen).tolist()
            if self.spec.evaluate is not None:
                state_here = self.gathered(state, stats)[0]
                record["test_accuracy"], reached = budget.test_accuracy(self.spec, state_here)
                must_save = must_save or reached
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
        return not reached and not last

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
        last = step - 1  # the schedule step of the epoch's last step (of its round's, by rounds)
        if self.rounds:
            start, length, rnd = self.feed.current
            last = int(self.feed.rate_step(rnd, length - 1, length)[0])
        rate = train.learning_rate_fn(spec.train_cfg, spec.schedule_steps)(last)
        examples = (step - self.epoch_step) * spec.num_seeds * spec.train_cfg.batch_size
        values = {"learning_rate": float(rate)}
        values["examples_per_second"] = examples / max(seconds, 1e-9)
        for k in range(spec.num_seeds):
            values[f"loss/seed{k}"] = record["loss"][k]
            values[f"accuracy/seed{k}"] = accuracy[k]
        tracker.scalars(tracker.run_name(os.path.dirname(self.metrics_path)), step, values)


def metrics_fix(ckpt_dir: str) -> str:
    """What to do about a damaged `metrics.jsonl` beside `ckpt_dir`."""
    return (
        "delete it and rerun the same command: the training goes on from its last checkpoint and "
        f"logs the epochs after it (delete {ckpt_dir} too to train and log every epoch again)"
    )


def _append_jsonl(path: str, record: dict) -> None:
    files.append_line(path, json.dumps(record))
