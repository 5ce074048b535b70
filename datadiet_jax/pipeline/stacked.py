"""Retraining runs of equal-size kept sets and equal steps trained as one stacked K-seed training.

`config.retrain.stack` ('auto': on accelerators) turns it on. Member s of a group of S runs holds
seeds s*R .. s*R + R - 1 of one K = S*R training. Each seed keeps the init, Dropout keys and data
order of the seed it stands for in its own run (`TrainSpec.streams`: 0..R-1 once per member) and
trains on its member's kept set (`kept [K, M]`), so every member ends as its own run would,
within float32 rounding. The group's checkpoints live in `WORKDIR/retrain/_stacked/<group>/`
(named by the members' records, so an interrupted group resumes when the same runs are pending);
each member's result lands in its own run folder.

Usage:

    from datadiet_jax.pipeline import stacked
    if stacked.enabled(spec):                                  # spec: a specs.RetrainSpec
        for group in stacked.groups(spec, split.num_examples, pending):
            members = [(run, kept, made_from) for _, run, kept, _, made_from in group]
            trained = stacked.train_group(spec, workdir, model, split, members)
            # one (init_state, state, nonfinite_step, steps) per member, as its own run ends
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING

import jax
import numpy as np

from datadiet_jax.training import initial, input_pipeline, keys, loop, prune_schedules

if TYPE_CHECKING:
    from datadiet_jax.pipeline.specs import RetrainSpec

STACK_MODES = ("auto", "on", "off")


def enabled(spec: RetrainSpec) -> bool:
    """Whether retraining stacks: `spec.stack` 'on', or 'auto' on an accelerator. Never with a
    pruning schedule (a round lasts as long as its largest per-seed set, so members would share
    their rounds), a learning curve or a target accuracy (judged per run): each run trains on
    its own then."""
    prune = spec.train_cfg.get("prune")
    if (prune is not None and prune.get("schedule", "")) or spec.curve or spec.target_accuracy:
        return False
    if spec.stack == "auto":
        return jax.default_backend() != "cpu"
    return spec.stack == "on"


def retrain_steps(spec: RetrainSpec, num_examples: int, num_kept: int) -> int:
    """The steps of one retraining (`spec.budget`: the full data's or the kept's)."""
    basis = num_examples if spec.budget == "steps" else num_kept
    steps_per_epoch = input_pipeline.steps_per_epoch(basis, spec.train_cfg.batch_size)
    return spec.train_cfg.num_epochs * steps_per_epoch


def train_spec(
    spec: RetrainSpec, split, num_kept: int, ckpt_dir: str, name: str, copies=1, evaluate=None
):
    """The `loop.TrainSpec` of a retraining on `num_kept` examples of `split`: R seeds, or
    `copies` runs' R seeds stacked (seed s*R + r stands for seed r of its run). A pruning
    schedule with the 'epochs' budget trains `num_epochs` rounds; `evaluate` (`fn(state) ->
    [K]` test accuracies) logs a learning curve and stops at `spec.target_accuracy`."""
    steps = retrain_steps(spec, split.num_examples, num_kept)
    prune = prune_schedules.from_config(spec.train_cfg.get("prune"), seed=spec.seed)
    rounds = spec.train_cfg.num_epochs if prune is not None and spec.budget == "epochs" else 0
    return loop.TrainSpec(
        train_cfg=spec.train_cfg,
        num_seeds=spec.num_seeds * copies,
        seed=spec.seed,
        purpose=keys.Purpose.RETRAIN,
        num_steps=steps,
        schedule_steps=steps,
        ckpt_dir=ckpt_dir,
        augment=input_pipeline.augments(spec.data_cfg, split.inputs.shape),
        name=name,
        streams=tuple(range(spec.num_seeds)) * copies if copies > 1 else (),
        prune=prune,
        num_rounds=rounds,
        evaluate=evaluate,
        target_accuracy=spec.target_accuracy,
    )


def groups(spec: RetrainSpec, num_examples: int, pending: list) -> list[list]:
    """`pending` items `(position, run, kept, ...)` grouped by (kept size, steps), in plan
    order; each group trains as one stacked training (a group of one as its own run)."""
    by_shape: dict[tuple, list] = {}
    for item in pending:
        m = len(item[2])
        by_shape.setdefault((m, retrain_steps(spec, num_examples, m)), []).append(item)
    return list(by_shape.values())


def group_dir(workdir: str, records: list[dict]) -> str:
    """`WORKDIR/retrain/_stacked/<digest of the members' records>`."""
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode())
    return os.path.join(workdir, "retrain", "_stacked", digest.hexdigest()[:16])


def train_group(spec: RetrainSpec, workdir: str, model, split, members: list) -> list[tuple]:
    """Trains the S `members` `(run, kept [M], made_from)` as one K = S*R training.

    Returns:
      [(init_state, state, nonfinite_step, steps)] per member: its R seeds' stacked initial and
      final `TrainState`s, their non-finite steps and the steps trained, as `loop.fit` of its
      own run gives them.
    """
    r = spec.num_seeds
    names = [run.name for run, _, _ in members]
    ckpt_dir = os.path.join(group_dir(workdir, [m[2] for m in members]), "ckpt")
    name = f"stacked retraining of {len(members)} runs ({names[0]}, ...)"
    train = train_spec(spec, split, len(members[0][1]), ckpt_dir, name, copies=len(members))
    kept = np.repeat(np.stack([np.asarray(k, np.int64) for _, k, _ in members]), r, axis=0)
    state, stats, step = loop.fit(model, split, kept, train)
    init = initial.initial_states(model, split, train)

    def member(tree, s):
        return jax.tree.map(lambda x: x[s * r : (s + 1) * r], tree)

    nonfinite = np.asarray(stats["nonfinite_step"])
    return [
        (member(init, s), member(state, s), nonfinite[s * r : (s + 1) * r], step)
        for s in range(len(members))
    ]
