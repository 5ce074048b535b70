"""The notebook path: K-seed training of one's own model and the pruned tf.data pipeline.

The same loop, steps and input pipeline as the command line, as plain calls. `train_seeds` takes
any model `scores.model_form` takes (a Flax Linen module, an NNX module class or factory, a
plain-function model; `train_arg` names a Linen mode flag no convention names), logs progress
(rate and ETA, shown in a notebook without absl settings: `scores/notebook_logs.py`),
stops with one error line on a non-finite loss or a model trained in eval mode, and keeps orbax
checkpoints in `workdir` when one is given (a rerun resumes there).

Usage:

    from datadiet_jax import grand_scores, kept_indices, load_split, pruned_dataset, train_seeds
    split = load_split("fashion_mnist", "train", num_examples=4000)
    trained = train_seeds(MyNNXNet, split, num_seeds=4, num_epochs=1)       # K = 4 seeds
    grand = grand_scores(trained.model, trained.variables, split.model_inputs(), split.labels)
    kept = kept_indices(grand.mean(0), "hardest", keep_fraction=0.5)
    retrained = train_seeds(MyNNXNet, split, kept=kept, num_seeds=2, num_steps=trained.num_steps)
    for batch in pruned_dataset(split, kept, batch_size=128): ...        # or your own loop
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Iterator

import numpy as np

from datadiet_jax.pipeline import data
from datadiet_jax.pipeline.config_base import base_config
from datadiet_jax.scores import notebook_logs
from datadiet_jax.scores.model_form import ModelForm, model_form
from datadiet_jax.scores.progress import Progress
from datadiet_jax.training import input_pipeline, keys, loop, prune_schedules, train


@dataclasses.dataclass(frozen=True)
class Trained:
    """K trained seeds of one model.

    Attributes:
      model: the model's `ModelForm`.
      state: the stacked `train.TrainState`, every leaf `[K, ...]`.
      stats: the loop's statistics: 'forgetting' and 'aum' states (`[K, N]` arrays, for
        `forgetting_scores` and `aum_scores`) and 'nonfinite_step' `[K]`.
      num_steps: the steps trained.
    """

    model: ModelForm
    state: train.TrainState
    stats: dict
    num_steps: int

    @property
    def variables(self) -> dict:
        """`{'params', 'state'}` of the K seeds, what `el2n_scores(self.model, ...)` takes."""
        return {"params": self.state.params, "state": self.state.model_state}

    def evaluate(self, split, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy [K], mean loss [K]) of each seed on `split` (a `data.Split`), eval mode."""
        return train.evaluate(self.model, self.state, split, batch_size=batch_size)


# The run options of `train_seeds` and `pruned_dataset` beside the fields of `config.train`.
RUN_OPTIONS = {"seed": 0, "purpose": None, "augment": False, "dynamics_window": 0}


def train_seeds(
    model,
    split,
    *,
    num_seeds: int = 4,
    kept=None,
    num_epochs: float | None = None,
    num_steps: int | None = None,
    workdir: str | None = None,
    train_arg: str | None = None,
    prune: dict | None = None,
    **options,
) -> Trained:
    """Trains K seeds of `model` on `split` (or its `kept` examples) with the pipeline's loop.

    Args:
      model: a Flax Linen module, an NNX module class or factory taking `rngs`, a
        plain-function model, or a `ModelForm` (`scores/model_form/`).
      split: a `data.Split` (`load_split`, `split_from_arrays`) or `(inputs, labels)` arrays,
        the training examples.
      num_seeds: K, each with its own init and data order.
      kept: `[M]` dataset indices to train on (`kept_indices`); None trains on all of `split`.
      num_epochs: epochs of the kept examples (default 1), or
      num_steps: steps (e.g. a pruned run trained as long as a full one); not both.
      workdir: where checkpoints and `metrics.jsonl` go, so that a rerun resumes; None keeps
        them in a temporary folder removed at the end.
      train_arg: a Linen model's mode flag when no convention names it: 'name' (train mode
        when true) or 'not name' (train mode when false).
      prune: a pruning schedule inside the training, the fields of `config.train.prune`, e.g.
        `{'schedule': 'infobatch', 'ratio': 0.5}`, `{'schedule': 'rs2', 'fraction': 0.3}`,
        `{'schedule': 'seta', 'ratio': 0.3}` or `{'schedule': 'prune_continue', 'at_epoch': 2,
        'ratio': 0.5}`; each seed prunes by its own state (`stats['prune']`). With
        `num_epochs` (a whole number) the training runs that many rounds of the schedule, so
        it ends early (the learning rate follows the rounds); with `num_steps`, that many
        steps. None trains on every example.
      **options: the run's `seed` (default 0: inits and data orders derive from (seed,
        purpose, seed index)); `purpose` (`keys.Purpose`, separating independent trainings of
        one seed; default SCORE without `kept`, RETRAIN with it, as the pipeline does);
        `augment` (random crop and flip of 32x32 images; default False); `dynamics_window`
        (> 1 also tracks the dynamics scores over windows of this many epochs:
        `stats['dynamics']`, `scores.trajectory`); and fields of `config.train` (batch_size,
        learning_rate, momentum, weight_decay, warmup_epochs, lr_drop_fractions, seed_axis,
        ...); the schedule spans the steps trained.

    Returns:
      `Trained`, with the stacked state after `num_steps`.
    Raises:
      ValueError: kept indices that are not [M] integers in [0, N), an unknown option, both or
        neither length given badly, a seed whose loss became non-finite, or a model trained
        in eval mode (one line each).
    """
    notebook_logs.show_progress()  # outside app.run: progress lines, no library INFO lines
    split = as_split(split)
    run, cfg = _options("train_seeds", options, base_config().train)
    kept = (
        np.arange(split.num_examples, dtype=np.int64) if kept is None else checked_kept(kept, split)
    )
    schedule = _prune_schedule(prune, run["seed"])
    steps, rounds = _budget(len(kept), cfg, (num_epochs, num_steps), schedule is not None)
    purpose = run["purpose"]
    if purpose is None:
        purpose = keys.Purpose.SCORE if len(kept) == split.num_examples else keys.Purpose.RETRAIN
    model = model_form(model, train_arg=train_arg)
    with tempfile.TemporaryDirectory() as scratch:
        spec = loop.TrainSpec(
            train_cfg=cfg,
            num_seeds=num_seeds,
            seed=run["seed"],
            purpose=int(purpose),
            num_steps=steps,
            schedule_steps=steps,
            ckpt_dir=os.path.join(workdir or scratch, "ckpt"),
            augment=run["augment"],
            name="train_seeds",
            on_diverge="raise",
            dynamics_window=run["dynamics_window"],
            prune=schedule,
            num_rounds=rounds,
        )
        state, stats, step = loop.fit(model, split, kept, spec)
    return Trained(model, state, stats, step)


def _budget(num_kept: int, cfg, lengths, pruned: bool) -> tuple[int, int]:
    """`train_seeds`' (steps, rounds) from its (num_epochs, num_steps); sets cfg.num_epochs
    (the warm-up's share of the schedule). Rounds are 0 unless a pruning schedule trains by
    epochs."""
    num_epochs, num_steps = lengths
    if num_steps is not None and num_epochs is not None:
        raise ValueError("give train_seeds num_epochs or num_steps, not both.")
    spe = input_pipeline.steps_per_epoch(num_kept, cfg.batch_size)
    steps = num_steps if num_steps is not None else math.ceil((num_epochs or 1) * spe)
    if steps < 1:
        raise ValueError(f"train_seeds would train {steps} steps; give at least one.")
    cfg.num_epochs = max(1, math.ceil(steps / spe))
    if not pruned or num_steps is not None:
        return steps, 0
    rounds = num_epochs or 1  # a budget in rounds of the schedule
    if rounds != int(rounds):
        raise ValueError(
            f"train_seeds num_epochs={num_epochs} with a pruning schedule: give a whole "
            "number of rounds, or num_steps."
        )
    return steps, int(rounds)


def _prune_schedule(prune, seed: int):
    """The checked schedule of `train_seeds(prune=...)`; None when off."""
    if prune is None:
        return None
    fields = base_config().train.prune.to_dict()
    unknown = sorted(set(prune) - set(fields))
    if unknown:
        raise ValueError(f"train_seeds prune has unknown fields {unknown}; use {sorted(fields)}.")
    cfg = {**fields, **dict(prune)}
    prune_schedules.check(cfg, where="train_seeds prune")
    return prune_schedules.from_config(cfg, seed=seed)


def _options(caller: str, options: dict, train_cfg=None) -> tuple[dict, object]:
    """(run options with their defaults, `config.train` updated with the other options).

    Without `train_cfg` (`pruned_dataset`, which trains nothing) `dynamics_window` is no option.

    Raises:
      ValueError: an option that is neither a run option nor a field of `train_cfg`.
    """
    fields = set(train_cfg) if train_cfg is not None else set()
    allowed = set(RUN_OPTIONS) - (set() if train_cfg is not None else {"dynamics_window"})
    unknown = sorted(set(options) - allowed - fields)
    if unknown:
        raise ValueError(
            f"{caller} got {unknown[0]!r}, which is no option of it; use one of "
            f"{sorted(allowed) + sorted(fields)}."
        )
    run = {k: options.get(k, v) for k, v in RUN_OPTIONS.items()}
    if train_cfg is not None:
        train_cfg.update({k: v for k, v in options.items() if k in fields})
    return run, train_cfg


def pruned_dataset(
    split,
    kept,
    *,
    batch_size: int,
    num_epochs: float = 1,
    num_steps: int | None = None,
    num_seeds: int | None = None,
    **options,
) -> Iterator[dict]:
    """The retraining input pipeline of the command line (tf.data) over `split[kept]`.

    Args:
      split: a `data.Split` (`load_split`).
      kept: `[M]` int dataset indices (`kept_indices`), in any order; each epoch reshuffles.
      batch_size: B; the last batch of an epoch is padded, with mask 0.
      num_epochs: epochs of the kept examples, or `num_steps` batches.
      num_seeds: K independently shuffled (and augmented) streams stacked on a leading axis;
        None: one stream, without that axis.
      **options: `seed` (default 0) and `purpose` (default `keys.Purpose.RETRAIN`), where the
        shuffles derive from (as in `train_seeds`); `augment` (random crop and flip of 32x32
        images; default False).

    Yields:
      Dicts with `image [(K,) B, ...] float32` (normalized), `label [(K,) B] int32`, `index
      [(K,) B] int64` (positions in the dataset) and `mask [(K,) B] float32`.
    Raises:
      ValueError: kept indices outside the split, or an unknown option.
    """
    split = as_split(split)
    kept = checked_kept(kept, split)
    run, _ = _options("pruned_dataset", options)
    purpose = keys.Purpose.RETRAIN if run["purpose"] is None else run["purpose"]
    spe = input_pipeline.steps_per_epoch(len(kept), batch_size)
    stream = input_pipeline.BatchStream(
        num_seeds=num_seeds or 1,
        batch_size=batch_size,
        seed=keys.data_seed(run["seed"], int(purpose)),
        num_steps=num_steps if num_steps is not None else math.ceil(num_epochs * spe),
        augment=run["augment"],
    )
    batches = input_pipeline.train_batches(split, kept, stream)
    if num_seeds is None:
        batches = ({k: v[0] for k, v in batch.items()} for batch in batches)
    progress = Progress(
        "pruned_dataset", stream.num_steps, examples_per_unit=stream.num_seeds * batch_size
    )
    return _counted(batches, progress)


def _counted(batches: Iterator[dict], progress: Progress) -> Iterator[dict]:
    """`batches`, with a progress line (batches taken, rate, ETA) as the caller's loop goes."""
    done = 0
    for batch in batches:
        yield batch
        done += 1
        progress.update(done, "batches")
    progress.finish(done, "batches")


def checked_kept(kept, split: data.Split) -> np.ndarray:
    """`kept` as `[M] int64` after checking that they are integer indices of `split`.

    Raises:
      ValueError: not 1-D integers (a boolean mask among them), or indices outside [0, N);
        one line naming the first ones.
    """
    kept = np.asarray(kept)
    n = split.num_examples
    if kept.ndim != 1 or not (np.issubdtype(kept.dtype, np.integer) or kept.size == 0):
        raise ValueError(
            f"kept must be [M] integer indices in [0, {n}) of this split; got {kept.dtype} "
            f"{kept.shape} (a boolean mask m: np.flatnonzero(m)); pass kept_indices(...)."
        )
    bad = kept[(kept < 0) | (kept >= n)]
    if bad.size:
        raise ValueError(
            f"kept must be [M] indices in [0, {n}) of this split; {bad.size} are not, e.g. "
            f"{bad[:5].tolist()}; pass kept_indices(...) of scores of this split."
        )
    return kept.astype(np.int64)


def as_split(split) -> data.Split:
    """`split` itself, or the `Split` of `(inputs, labels)` arrays (`data.split_from_arrays`)."""
    if isinstance(split, tuple) and len(split) == 2:
        return data.split_from_arrays(*split)
    if not isinstance(split, data.Split):
        raise ValueError(
            f"expected a Split (load_split, split_from_arrays) or (inputs, labels) arrays, got "
            f"{type(split).__name__}."
        )
    return split
