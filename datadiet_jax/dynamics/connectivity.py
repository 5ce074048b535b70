"""Linear mode connectivity of children spawned from one parent, on chosen sets of examples.

The protocol of Frankle et al. (ICML 2020), as Paul et al. apply it to subsets ranked by EL2N
(Figure 4): train a parent network and stop it at a spawning step t*; from its weights train two
children to the end T, each with its own data order (one K=2 training, `loop.fit` with
`init_state`); measure the error barrier between the children (`barriers.error_curves`) on each
set of examples. The children inherit the parent's whole training state (weights, BatchNorm
statistics, momentum, the position in the learning-rate schedule), so only the SGD noise of the
data order separates them.

Layout under the work directory of one spawning run:
  parent/ckpt/, parent/metrics.jsonl          the parent (one seed), stopped at each t* in turn
  children/stepNNNNNN/ckpt/, metrics.jsonl    the two children of spawning step NNNNNN
  barriers/stepNNNNNN.json                    the measurements of that step (written last)

Usage:

    from datadiet_jax.dynamics import connectivity
    spec = connectivity.SpawningSpec(spawn_epochs=(0, 0.5, 1), subset_size=1000,
                                     alphas=(0.0, 0.25, 0.5, 0.75, 1.0))
    rows = connectivity.spawning_run(config.train, 0, workdir, model, split, test_split,
                                     el2n.mean(0), spec)   # one row per step, subset, alpha
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from datadiet_jax.dynamics import barriers
from datadiet_jax.scores import pruning
from datadiet_jax.scores.model_form import linen_module
from datadiet_jax.training import files, input_pipeline, keys, loop

NUM_CHILDREN = 2


@dataclasses.dataclass(frozen=True)
class SpawningSpec:
    """The settings of one spawning study (Figure 4).

    Attributes:
      spawn_epochs: spawning times t* in epochs (fractions allowed; floored to steps).
      subset_size: examples in each of the highest, lowest and random training subsets.
      alphas: interpolation grid, with 0, 0.5 and 1.
      bn_modes: BatchNorm modes measured (`barriers.BN_MODES`; the first is the reported one).
      augment: random crop and flip when the parent and children train.
    """

    spawn_epochs: tuple[float, ...]
    subset_size: int
    alphas: tuple[float, ...]
    bn_modes: tuple[str, ...] = barriers.BN_MODES
    augment: bool = False


def total_steps(train_cfg, num_examples: int) -> int:
    """T: `train_cfg.num_epochs` epochs of `num_examples` examples."""
    return int(train_cfg.num_epochs) * input_pipeline.steps_per_epoch(
        num_examples, train_cfg.batch_size
    )


def spawn_steps(spawn_epochs: Sequence[float], steps_per_epoch: int, num_steps: int) -> list[int]:
    """Spawning steps floor(e * steps_per_epoch), sorted and without repeats, each in [0, T)."""
    steps = sorted({int(np.floor(float(e) * steps_per_epoch + 1e-9)) for e in spawn_epochs})
    if not steps or steps[0] < 0 or steps[-1] >= num_steps:
        raise ValueError(
            f"spawning epochs {list(spawn_epochs)} give steps {steps}, outside [0, {num_steps}); "
            "spawn before the end of training (raise train.num_epochs or lower the epochs)"
        )
    return steps


def example_subsets(scores, size: int, seed: int) -> dict[str, np.ndarray]:
    """The `size` highest-scoring, `size` lowest-scoring and `size` random examples.

    Args:
      scores: [N] float (e.g. EL2N, mean over seeds).
      size: examples per subset, in [1, N].
      seed: seed of the random subset.

    Returns:
      {'highest': [size] int64, 'lowest': [size] int64, 'random': [size] int64}, sorted indices.
    """
    scores = pruning.validate_scores(scores, np.shape(scores)[0])
    return {
        "highest": pruning.keep_hardest(scores, size),
        "lowest": pruning.keep_easiest(scores, size),
        "random": pruning.random_subset(scores.shape[0], size, [seed, keys.FIG4_SUBSET]),
    }


def _save_or_check_subsets(path: str, index: Mapping[str, np.ndarray]) -> None:
    """Saves the subsets, or checks that the saved ones (of earlier measurements) are the same."""
    if not os.path.exists(path):
        files.save_npz(path, **index)
        return
    with np.load(path) as saved:
        same = set(saved.files) == set(index) and all(
            np.array_equal(saved[k], v) for k, v in index.items()
        )
    if not same:
        raise ValueError(
            f"{path} holds other subsets than these scores select; the scores changed since the "
            "barriers there were measured: use a new work directory"
        )


def _one(state, k: int) -> dict:
    return jax.tree.map(lambda x: x[k], {"params": state.params, **state.model_state})


def train_parent(train_cfg: Any, seed: int, workdir: str, model, split, step: int, augment: bool):
    """The parent (one seed, all of `split`) at `step`, trained or resumed from its checkpoints.

    Spawning steps must be visited in increasing order: the parent's latest checkpoint is where
    it stopped last.

    Args:
      train_cfg: `config.train` (num_epochs, batch_size, optimizer fields).
      seed: the run seed.
      workdir: the work directory of the spawning run.
      model: a Linen model (`linen_module`).
      split: training split (all of it is trained on).
      step: the spawning step t* to stop at.
      augment: random crop and flip.

    Returns:
      `TrainState` [1, ...] at `step`.
    """
    num_steps = total_steps(train_cfg, split.num_examples)
    spec = loop.TrainSpec(
        train_cfg=train_cfg,
        num_seeds=1,
        seed=seed,
        purpose=keys.Purpose.PARENT,
        num_steps=num_steps,
        schedule_steps=num_steps,
        ckpt_dir=os.path.join(workdir, "parent", "ckpt"),
        augment=augment,
        name="parent",
        max_steps=step,
        on_diverge="raise",
    )
    state, _, reached = loop.fit(model, split, split.index, spec)
    if reached != step:
        raise ValueError(
            f"the parent in {workdir} is at step {reached}, past the spawning step {step}; spawn "
            "in increasing order, or use a new work directory for other spawning times"
        )
    return state


def train_children(
    train_cfg: Any, seed: int, workdir: str, model, split, parent, step: int, augment: bool
):
    """Two children from the parent's state at `step`, trained to T with their own data orders.

    Args:
      train_cfg, seed, workdir, model, split, augment: as in `train_parent`.
      parent: `TrainState` [1, ...] of the parent at `step`.
      step: the spawning step t*.

    Returns:
      `TrainState` [2, ...] at T.
    """
    num_steps = total_steps(train_cfg, split.num_examples)
    twins = jax.tree.map(lambda x: np.repeat(np.asarray(x), NUM_CHILDREN, axis=0), parent)
    spec = loop.TrainSpec(
        train_cfg=train_cfg,
        num_seeds=NUM_CHILDREN,
        seed=seed,
        purpose=keys.Purpose.CHILD,
        num_steps=num_steps,
        schedule_steps=num_steps,
        ckpt_dir=os.path.join(workdir, "children", f"step{step:06d}", "ckpt"),
        augment=augment,
        name=f"children of step {step}",
        on_diverge="raise",
    )
    state, _, _ = loop.fit(model, split, split.index, spec, init_state=twins)
    return state


def measure(
    model,
    children,
    subsets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    alphas: Sequence[float],
    bn_rules: Sequence[barriers.BatchNormRule],
    batch_size: int,
) -> list[dict]:
    """Error curves between the two children on every subset, for each BatchNorm rule.

    Args:
      model: a Linen model.
      children: `TrainState` [2, ...] of the two children.
      subsets: {name: (images [M, ...] float32 normalized, labels [M] int)}.
      alphas: interpolation grid, with 0, 0.5 and 1.
      bn_rules: the BatchNorm rules measured, one curve set each (rows name them by mode).
      batch_size: evaluation batch size.

    Returns:
      One row per (bn mode, subset, alpha): 'bn', 'subset', 'subset_size', 'alpha', 'error', and
      the curve's 'error_1', 'error_2', 'barrier', 'max_barrier', 'argmax_alpha'.
    """
    v1, v2 = _one(children, 0), _one(children, 1)
    rows = []
    for bn in bn_rules:
        curves = barriers.error_curves(
            model, v1, v2, subsets, alphas=alphas, bn=bn, batch_size=batch_size
        )
        for name, c in curves.items():
            summary = {k: c[k] for k in ("error_1", "error_2", "barrier", "max_barrier")}
            summary["argmax_alpha"] = c["argmax_alpha"]
            for a, e in zip(c["alphas"], c["errors"], strict=True):
                row = dict(
                    bn=bn.mode, subset=name, subset_size=len(subsets[name][1]), alpha=a, error=e
                )
                rows.append(row | summary)
    return rows


def _subsets(split, test_split, scores, size: int, seed: int):
    """The measured sets and the BatchNorm images of a spawning run.

    Returns:
      (index {name: [size] int64} of the training subsets, subsets {name: (images, labels)}
      with 'test' added, bn_images [N, ...] float32: the training images in one fixed shuffled
      order, from which BatchNorm statistics are recomputed).
    """
    images = split.model_inputs()
    index = example_subsets(scores, size, seed)
    subsets = {name: (images[i], split.labels[i]) for name, i in index.items()}
    subsets["test"] = (test_split.model_inputs(), test_split.labels)
    order = np.random.default_rng([seed, keys.FIG4_BN_ORDER]).permutation(len(images))
    return index, subsets, images[order]


def spawning_run(
    train_cfg: Any,
    seed: int,
    workdir: str,
    model,
    split,
    test_split,
    scores,
    spec: SpawningSpec,
) -> list[dict]:
    """Barriers between children spawned at each step, on the highest-, lowest- and random-score
    subsets of the training split and on the test split. Resumable: a spawning step whose
    measurements are saved is skipped.

    Args:
      train_cfg: `config.train` (num_epochs, batch_size, eval_batch_size, optimizer fields);
        `batch_size` is also the batch size of the BatchNorm recomputation.
      seed: the run seed (training keys, the random subset, the BatchNorm image order).
      workdir: the work directory of this spawning run.
      model: a Flax Linen module (or its `LinenModel`).
      split: training split (the parent and children train on all of it).
      test_split: test split, measured as one more subset ('test').
      scores: [N] scores ranking the training examples (e.g. mean EL2N).
      spec: the study's settings (`SpawningSpec`).

    Returns:
      Rows of `measure`, each with 'spawn_step' and 'spawn_epoch' added, in spawning order.
    """
    barriers.check_alphas(spec.alphas)
    model = linen_module(model)
    spe = input_pipeline.steps_per_epoch(split.num_examples, train_cfg.batch_size)
    steps = spawn_steps(spec.spawn_epochs, spe, total_steps(train_cfg, split.num_examples))
    index, subsets, bn_images = _subsets(split, test_split, scores, spec.subset_size, seed)
    bn_rules = [barriers.BatchNormRule(m, bn_images, train_cfg.batch_size) for m in spec.bn_modes]
    _save_or_check_subsets(os.path.join(workdir, "subsets.npz"), index)
    rows = []
    for step in steps:
        path = os.path.join(workdir, "barriers", f"step{step:06d}.json")
        if not os.path.exists(path):
            parent = train_parent(train_cfg, seed, workdir, model, split, step, spec.augment)
            children = train_children(
                train_cfg, seed, workdir, model, split, parent, step, spec.augment
            )
            measured = measure(
                model,
                children,
                subsets,
                alphas=spec.alphas,
                bn_rules=bn_rules,
                batch_size=train_cfg.eval_batch_size,
            )
            measured = [dict(spawn_step=step, spawn_epoch=step / spe) | r for r in measured]
            files.write_json(path, measured)
            mid = [r for r in measured if r["alpha"] == 0.5 and r["bn"] == spec.bn_modes[0]]
            logging.info(
                "Spawn step %d: barriers %s",
                step,
                ", ".join(f"{r['subset']} {r['barrier']:+.4f}" for r in mid),
            )
        rows += files.read_json(path)
    return rows
