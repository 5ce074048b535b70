"""Many retraining runs as one stacked training: the runs of equal-size kept sets and equal
steps trained together on the seed axis (`config.retrain.stack`).

Member s of a group of S runs holds seeds s*R .. s*R + R - 1 of one K = S*R training. Each
seed keeps the init, Dropout keys and data order of the seed it stands for in its own run
(`TrainSpec.streams`: 0..R-1 once per member) and trains on its member's kept set (`kept [K, M]`),
so every member ends as its own run would, within float32 rounding: the per-seed computation is
the same, only batched with more seeds. The group's checkpoints live in
`WORKDIR/retrain/_stacked/<group>/` (named by the members' records, so an interrupted group
resumes when the same runs are pending); each member's result lands in its own run folder.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np

from datadiet_jax.training import input_pipeline, keys, loop

STACK_MODES = ("auto", "on", "off")


def enabled(config) -> bool:
    """Whether retraining stacks: `config.retrain.stack` 'on', or 'auto' on an accelerator."""
    mode = config.retrain.get("stack", "auto")
    if mode == "auto":
        return jax.default_backend() != "cpu"
    return mode == "on"


def retrain_steps(config, num_examples: int, num_kept: int) -> int:
    """The steps of one retraining (`config.retrain.budget`: the full data's or the kept's)."""
    basis = num_examples if config.retrain.budget == "steps" else num_kept
    return config.train.num_epochs * input_pipeline.steps_per_epoch(basis, config.train.batch_size)


def groups(config, num_examples: int, pending: list) -> list[list]:
    """`pending` items `(position, run, kept, ...)` grouped by (kept size, steps), in plan
    order; each group trains as one stacked training (a group of one as its own run)."""
    by_shape: dict[tuple, list] = {}
    for item in pending:
        m = len(item[2])
        by_shape.setdefault((m, retrain_steps(config, num_examples, m)), []).append(item)
    return list(by_shape.values())


def group_dir(workdir: str, records: list[dict]) -> str:
    """`WORKDIR/retrain/_stacked/<digest of the members' records>`."""
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode())
    return os.path.join(workdir, "retrain", "_stacked", digest.hexdigest()[:16])


def train_group(config, workdir: str, model, split, members: list) -> list[tuple]:
    """Trains the S `members` `(run, kept [M], made_from)` as one K = S*R training.

    Returns:
      [(init_state, state, nonfinite_step)] per member: its R seeds' stacked initial and final
      `TrainState`s and their non-finite steps, as `loop.fit` of its own run gives them.
    """
    r = config.retrain.num_seeds
    num_kept = len(members[0][1])
    steps = retrain_steps(config, split.num_examples, num_kept)
    names = [run.name for run, _, _ in members]
    spec = loop.TrainSpec(
        train_cfg=config.train,
        num_seeds=r * len(members),
        seed=config.seed,
        purpose=keys.Purpose.RETRAIN,
        num_steps=steps,
        schedule_steps=steps,
        ckpt_dir=os.path.join(group_dir(workdir, [m[2] for m in members]), "ckpt"),
        augment=input_pipeline.augments(config.data, split.images.shape),
        name=f"stacked retraining of {len(members)} runs ({names[0]}, ...)",
        streams=tuple(range(r)) * len(members),
    )
    kept = np.repeat(np.stack([np.asarray(k, np.int64) for _, k, _ in members]), r, axis=0)
    state, stats, _ = loop.fit(model, split, kept, spec)
    init = loop.initial_states(model, split, spec)

    def member(tree, s):
        return jax.tree.map(lambda x: x[s * r : (s + 1) * r], tree)

    nonfinite = np.asarray(stats["nonfinite_step"])
    return [
        (member(init, s), member(state, s), nonfinite[s * r : (s + 1) * r])
        for s in range(len(members))
    ]
