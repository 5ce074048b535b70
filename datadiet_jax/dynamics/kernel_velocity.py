"""Kernel velocity of windows of examples ranked by EL2N (Paul et al., Figure 3).

At each measured epoch t, the training examples are sorted by their EL2N at t (mean over the K
seeds, ascending: rank 0 is the lowest score). For windows of `window_size` examples contiguous
in that order, the empirical NTK Gram matrix of the window (`ntk.ntk_gram`, the trace over
logits) is computed under each seed at epoch t and at epoch t + 1; the velocity of the window
under seed k is the cosine distance of the two matrices (`ntk.kernel_distance`, Fort et al.,
NeurIPS 2020), per epoch of training. One K-seed training (`loop.fit`) runs to the last t + 1,
its epoch hooks computing the EL2N and the Gram matrices. Every file is written once, so a
stopped run resumes where it stopped:
  train/ckpt/, train/metrics.jsonl     the K-seed training
  el2n/epochNNN.npz                    EL2N [K, N] at t, the window starts and windows [W, n]
  grams/tNNN_atMMM.npz                 Gram matrices [K, W, n, n] of the windows of t at epoch MMM

Usage:

    from datadiet_jax.dynamics import kernel_velocity
    spec = kernel_velocity.VelocitySpec(epochs=(0, 1), window_size=100, num_windows=10,
                                        num_seeds=4, score_batch_size=500)
    rows = kernel_velocity.velocity_run(config.train, 0, workdir, model, split, spec)
    # one row per (epoch, seed, window): 'velocity', 'el2n_rank_fraction', ...
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from datadiet_jax.dynamics import ntk
from datadiet_jax.scores import api
from datadiet_jax.scores.model_form import linen_module
from datadiet_jax.training import files, input_pipeline, keys, loop


@dataclasses.dataclass(frozen=True)
class VelocitySpec:
    """The settings of one kernel-velocity study (Figure 3).

    Attributes:
      epochs: epochs t at which velocities are measured (between t and t + 1).
      window_size: n examples per window.
      num_windows: W windows, their start ranks spread evenly over [0, N - n].
      num_seeds: K seeds trained at once (`config.score.num_seeds`).
      score_batch_size: examples per batch of the EL2N scoring (`config.score.batch_size`).
      ntk_batch_size: examples per NTK block (memory).
      augment: random crop and flip in training.
    """

    epochs: tuple[int, ...]
    window_size: int
    num_windows: int
    num_seeds: int
    score_batch_size: int
    ntk_batch_size: int = 100
    augment: bool = False


def window_starts(num_examples: int, window_size: int, num_windows: int) -> np.ndarray:
    """`num_windows` start ranks spread evenly over [0, N - n], without repeats -> [W] int64."""
    n, w = int(window_size), int(num_windows)
    if not 1 <= n <= num_examples or w < 1:
        raise ValueError(
            f"windows of {n} examples ({w} of them) do not fit in {num_examples} examples; "
            "lower the window size or raise the number of examples"
        )
    return np.unique(np.floor(np.linspace(0, num_examples - n, w) + 1e-9).astype(np.int64))


def rank_windows(scores, starts, window_size: int) -> np.ndarray:
    """Dataset indices of each window in the ascending order of `scores`.

    Args:
      scores: [N] float (e.g. mean EL2N at t); ties keep dataset order (stable sort).
      starts: [W] start ranks; window_size: n.
    Returns:
      [W, n] int64: row w holds the examples of ranks starts[w] .. starts[w] + n - 1.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or not np.all(np.isfinite(scores)):
        raise ValueError(f"scores must be a finite [N] vector, got shape {scores.shape}")
    order = np.argsort(scores, kind="stable")
    starts = np.asarray(starts, np.int64)
    if starts.min() < 0 or starts.max() + window_size > len(order):
        raise ValueError(f"window starts {starts.tolist()} leave [0, {len(order)}); lower them")
    return np.stack([order[s : s + window_size] for s in starts])


def measured_epochs(epochs: Sequence[int]) -> tuple[list[int], list[int]]:
    """(sorted epochs t, sorted epochs t and t + 1 at which Gram matrices are needed)."""
    ts = sorted({int(e) for e in epochs})
    if not ts or ts[0] < 0:
        raise ValueError(f"velocity epochs {list(epochs)} must be a non-empty set of epochs >= 0")
    return ts, sorted(set(ts) | {t + 1 for t in ts})


def _el2n_path(workdir, t):
    return os.path.join(workdir, "el2n", f"epoch{t:03d}.npz")


def _gram_path(workdir, t, e):
    return os.path.join(workdir, "grams", f"t{t:03d}_at{e:03d}.npz")


def _variables(state) -> dict:
    return {"params": state.params, **state.model_state}


def _hook(spec: VelocitySpec, workdir: str, model, labels, images, starts, epoch: int):
    """The epoch hook of `velocity_run` at `epoch`: EL2N and windows at t, Gram matrices."""
    ts, _ = measured_epochs(spec.epochs)

    def hook(state, stats):
        del stats
        variables = _variables(state)
        if epoch in ts and not os.path.exists(_el2n_path(workdir, epoch)):
            per_seed = api.el2n_scores(
                model, variables, images, labels, batch_size=spec.score_batch_size
            )
            mean = per_seed.mean(0)
            windows = rank_windows(mean, starts, spec.window_size)
            files.save_npz(
                _el2n_path(workdir, epoch),
                per_seed=per_seed,
                mean=mean,
                starts=starts,
                windows=windows,
            )
        for t in (t for t in ts if epoch in (t, t + 1)):
            path = _gram_path(workdir, t, epoch)
            if os.path.exists(path):
                continue
            with np.load(_el2n_path(workdir, t)) as f:
                windows = f["windows"]
            grams = np.stack(
                [
                    ntk.ntk_gram(model, variables, images[w], batch_size=spec.ntk_batch_size)
                    for w in windows
                ],
                axis=1,
            )  # [K, W, n, n]
            files.save_npz(path, grams=grams, windows=windows)
            logging.info(
                "Gram matrices of the %d windows of epoch %d at epoch %d", len(windows), t, epoch
            )

    return hook


def velocity_run(
    train_cfg: Any, seed: int, workdir: str, model, split, spec: VelocitySpec
) -> list[dict]:
    """Trains (or resumes) K seeds and measures the kernel velocity of EL2N-ranked windows.

    Args:
      train_cfg: `config.train` (num_epochs, batch_size, optimizer fields).
      seed: the run seed.
      workdir: the work directory of this run.
      model: a Flax Linen module (or its `LinenModel`; the NTK intercepts Linen layers).
      split: training split (labels possibly noisy; EL2N uses these labels).
      spec: the study's settings (`VelocitySpec`).

    Returns:
      One row per (epoch t, seed, window): 'epoch', 'seed', 'window_start', 'window_size',
      'velocity', 'el2n_window_mean' (mean over the window of the seed-mean EL2N at t),
      'el2n_rank_fraction' (window start / N), 'majority_class_share' (the fraction of the
      window in its most frequent label: EL2N ranks by class early in training, and a
      one-class window has its own kernel).
    """
    model = linen_module(model)
    ts, needed = measured_epochs(spec.epochs)
    spe = input_pipeline.steps_per_epoch(split.num_examples, train_cfg.batch_size)
    if needed[-1] > train_cfg.num_epochs:
        raise ValueError(
            f"kernel velocity at epoch {ts[-1]} needs epoch {needed[-1]}, past the "
            f"{train_cfg.num_epochs} training epochs; raise train.num_epochs or lower the epochs"
        )
    starts = window_starts(split.num_examples, spec.window_size, spec.num_windows)
    images = split.model_inputs()
    hooks = {e: _hook(spec, workdir, model, split.labels, images, starts, e) for e in needed}
    train_spec = loop.TrainSpec(
        train_cfg=train_cfg,
        num_seeds=spec.num_seeds,
        seed=seed,
        purpose=keys.Purpose.KERNEL,
        num_steps=needed[-1] * spe,
        schedule_steps=train_cfg.num_epochs * spe,
        ckpt_dir=os.path.join(workdir, "train", "ckpt"),
        augment=spec.augment,
        name="kernel velocity training",
        keep_epochs=tuple(needed),
        on_diverge="raise",
    )
    loop.fit(model, split, split.index, train_spec, hooks=hooks)
    return velocity_rows(workdir, ts, split.labels)


def majority_class_share(labels, windows) -> np.ndarray:
    """The fraction of each window in its most frequent label.

    Args:
      labels: [N] int labels; windows: [W, n] dataset indices.
    Returns:
      [W] float64 in [1/n, 1].
    """
    labels = np.asarray(labels)
    return np.array([np.bincount(labels[w]).max() / len(w) for w in np.asarray(windows)])


def velocity_rows(workdir: str, epochs: Sequence[int], labels) -> list[dict]:
    """The velocity rows of a finished run, from its saved EL2N and Gram files.

    Args:
      workdir: the run's work directory; epochs: the measured epochs t; labels: [N] the labels
        the run trained on (`velocity_run` documents the rows).
    """
    num_examples = len(labels)
    rows = []
    for t in epochs:
        paths = [_el2n_path(workdir, t), _gram_path(workdir, t, t), _gram_path(workdir, t, t + 1)]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]} is missing although training passed epoch {t + 1}; measure in a "
                "new work directory (the states of those epochs are not kept)"
            )
        with np.load(paths[0]) as el2n, np.load(paths[1]) as g0, np.load(paths[2]) as g1:
            windows, mean, starts = el2n["windows"], el2n["mean"], el2n["starts"]
            if len(mean) != num_examples:
                raise ValueError(
                    f"{paths[0]} scores {len(mean)} examples, not the {num_examples} labels "
                    "given; it is from another run: measure in a new work directory"
                )
            if not (
                np.array_equal(g0["windows"], windows) and np.array_equal(g1["windows"], windows)
            ):
                raise ValueError(
                    f"the Gram files of epoch {t} are of other windows than {paths[0]}"
                )
            velocity = ntk.kernel_distance(g0["grams"], g1["grams"])  # [K, W]
        share = majority_class_share(labels, windows)
        for k in range(velocity.shape[0]):
            for w, start in enumerate(starts):
                rows.append(
                    dict(
                        epoch=t,
                        seed=k,
                        window_start=int(start),
                        window_size=int(windows.shape[1]),
                        velocity=float(velocity[k, w]),
                        el2n_window_mean=float(mean[windows[w]].mean()),
                        el2n_rank_fraction=float(start) / num_examples,
                        majority_class_share=float(share[w]),
                    )
                )
    return rows
