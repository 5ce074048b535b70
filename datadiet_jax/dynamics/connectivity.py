"""Linear mode connectivity of children spawned from one parent, on chosen sets of examples.

The protocol of Frankle et al. (ICML 2020), as Paul et al. apply it to subsets ranked by EL2N
(Figure 4): train a parent network and stop it at a spawning step t*; from its weights train two
children to the end T, each with its own data order (one K=2 training, `loop.fit` with
`init_state`); measure the error barrier between the children (`barriers.error_curves`) on each
set of examples.

The children inherit the parent's whole training state: weights, BatchNorm statistics, momentum
and the position in the learning-rate schedule (the schedule spans T steps for parent and
children alike). So a child whose data order matched the parent's would reproduce the parent's
own continued run; only the SGD noise of the data order separates the two children.

Layout under the work directory of one spawning run:
  parent/ckpt/, parent/metrics.jsonl          the parent (one seed), stopped at each t* in turn
  children/stepNNNNNN/ckpt/, metrics.jsonl    the two children of spawning step NNNNNN
  barriers/stepNNNNNN.json                    the measurements of that step (written last)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from absl import logging

from datadiet_jax.dynamics import barriers
from datadiet_jax.scores import pruning
from datadiet_jax.scores.model_form import linen_module
from datadiet_jax.training import files, input_pipeline, keys, loop

NUM_CHILDREN = 2


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


def train_parent(config, workdir: str, model, split, step: int, augment: bool):
    """The parent (one seed, all of `split`) at `step`, trained or resumed from its checkpoints.

    Spawning steps must be visited in increasing order: the parent's latest checkpoint is where
    it stopped last.

    Returns:
      `TrainState` [1, ...] at `step`.
    """
    num_steps = total_steps(config.train, split.num_examples)
    spec = loop.TrainSpec(
        train_cfg=config.train,
        num_seeds=1,
        seed=config.seed,
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


def train_children(config, workdir: str, model, split, parent, step: int, augment: bool):
    """Two children from the parent's state at `step`, trained to T with their own data orders.

    Returns:
      `TrainState` [2, ...] at T.
    """
    num_steps = total_steps(config.train, split.num_examples)
    twins = jax.tree.map(lambda x: np.repeat(np.asarray(x), NUM_CHILDREN, axis=0), parent)
    spec = loop.TrainSpec(
        train_cfg=config.train,
        num_seeds=NUM_CHILDREN,
        seed=config.seed,
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
    bn_images: np.ndarray,
    *,
    alphas: Sequence[float],
    bn_modes: Sequence[str],
    bn_batch_size: int,
    batch_size: int,
) -> list[dict]:
    """Error curves between the two children on every subset, for each BatchNorm mode.

    Returns:
      One row per (bn mode, subset, alpha): 'bn', 'subset', 'subset_size', 'alpha', 'error', and
      the curve's 'error_1', 'error_2', 'barrier', 'max_barrier', 'argmax_alpha'.
    """
    v1, v2 = _one(children, 0), _one(children, 1)
    rows = []
    for bn in bn_modes:
        curves = barriers.error_curves(
            model,
            v1,
            v2,
            subsets,
            alphas=alphas,
            bn=bn,
            bn_images=bn_images,
            bn_batch_size=bn_batch_size,
            batch_size=batch_size,
        )
        for name, c in curves.items():
            summary = {k: c[k] for k in ("error_1", "error_2", "barrier", "max_barrier")}
            summary["argmax_alpha"] = c["argmax_alpha"]
            for a, e in zip(c["alphas"], c["errors"], strict=True):
                row = dict(bn=bn, subset=name, subset_size=len(subsets[name][1]), alpha=a, error=e)
                rows.append(row | summary)
    return rows


def spawning_run(
    config,
    workdir: str,
    model,
    split,
    test_split,
    scores,
    *,
    spawn_epochs: Sequence[float],
    subset_size: int,
    alphas: Sequence[float],
    bn_modes: Sequence[str] = barriers.BN_MODES,
    augment: bool = False,
) -> list[dict]:
    """Barriers between children spawned at each step, on the highest-, lowest- and random-score
    subsets of the training split and on the test split. Resumable: a spawning step whose
    measurements are saved is skipped.

    Args:
      config: the run's config (train fields, seed).
      workdir: the work directory of this spawning run.
      model: a Flax Linen module (or its `LinenModel`).
      split: training split (the parent and children train on all of it).
      test_split: test split, measured as one more subset ('test').
      scores: [N] scores ranking the training examples (e.g. mean EL2N).
      spawn_epochs: spawning times t* in epochs (fractions allowed; floored to steps).
      subset_size: examples per training subset.
      alphas: interpolation grid, with 0, 0.5 and 1.
      bn_modes: BatchNorm modes measured ('recompute' first is the reported one).
      augment: random crop and flip in training.

    Returns:
      Rows of `measure`, each with 'spawn_step' and 'spawn_epoch' added, in spawning order.
    """
    barriers.check_alphas(alphas)
    model = linen_module(model)
    spe = input_pipeline.steps_per_epoch(split.num_examples, config.train.batch_size)
    steps = spawn_steps(spawn_epochs, spe, total_steps(config.train, split.num_examples))
    images = split.normalized_images()
    index = example_subsets(scores, subset_size, config.seed)
    subsets = {name: (images[i], split.labels[i]) for name, i in index.items()}
    subsets["test"] = (test_split.normalized_images(), test_split.labels)
    # BatchNorm statistics from the training images in one fixed shuffled order.
    order = np.random.default_rng([config.seed, keys.FIG4_BN_ORDER]).permutation(len(images))
    bn_images = images[order]
    _save_or_check_subsets(os.path.join(workdir, "subsets.npz"), index)
    rows = []
    for step in steps:
        path = os.path.join(workdir, "barriers", f"step{step:06d}.json")
        if not os.path.exists(path):
            parent = train_parent(config, workdir, model, split, step, augment)
            children = train_children(config, workdir, model, split, parent, step, augment)
            measured = measure(
                model,
                children,
                subsets,
                bn_images,
                alphas=alphas,
                bn_modes=bn_modes,
                bn_batch_size=config.train.batch_size,
                batch_size=config.train.eval_batch_size,
            )
            measured = [dict(spawn_step=step, spawn_epoch=step / spe) | r for r in measured]
            files.write_json(path, measured)
            mid = [r for r in measured if r["alpha"] == 0.5 and r["bn"] == bn_modes[0]]
            logging.info(
                "Spawn step %d: barriers %s",
                step,
                ", ".join(f"{r['subset']} {r['barrier']:+.4f}" for r in mid),
            )
        rows += files.read_json(path)
    return rows
