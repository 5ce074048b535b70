"""The score stage: K seeds trained to the last score epoch, score files written on the way.

Writes `WORKDIR/scores/<score>_epochNNN.npz` (per-seed [K, N] scores, mean, index, provenance;
`features_epochNNN.npz` holds [K, N, D] penultimate features instead) and trains in
`WORKDIR/scores/train/` (checkpoints, metrics.jsonl). EL2N, GraNd, the logit scores and the
features are computed by epoch hooks of the K-seed loop; forgetting, AUM and the dynamics scores
are the loop's statistics at the end. A finished stage is skipped; an interrupted one resumes,
and a deleted score file of an earlier epoch is recomputed from that epoch's kept checkpoint.
Scores of another run (`config.score.workdir`) are checked against this run's data instead
(`external_scores`).

Usage:

    from datadiet_jax.pipeline import score_stage
    files = score_stage.score_stage(specs.score, workdir, model, split)  # {'el2n@1': path, ...}
    scores = score_stage.pruning_scores(specs.score, specs.prune, split, files)  # {name: [N]}
"""

from __future__ import annotations

import functools
import json
import os
import re
import time

import numpy as np
from absl import logging

from datadiet_jax.pipeline import artifacts, config_check, interrupts, machine, plan
from datadiet_jax.pipeline.specs import PruneSpec, ScoreSpec
from datadiet_jax.scores import (
    api,
    aum,
    decisions,
    forgetting,
    geometry,
    penultimate,
    trajectory,
)
from datadiet_jax.scores.model_form import model_form
from datadiet_jax.training import files, health, input_pipeline, keys, loop, tracking


def score_path(workdir: str, kind: str, epoch: int) -> str:
    """`WORKDIR/scores/<kind>_epochNNN.npz`."""
    return os.path.join(workdir, "scores", f"{kind}_epoch{epoch:03d}.npz")


def run_fields(spec: ScoreSpec, split) -> dict:
    """What identifies the scores of a run: data, label noise, seeds, model."""
    return {
        "dataset": split.name,
        "split": split.split,
        "num_examples": split.num_examples,
        "label_noise": spec.label_noise,
        # What was read (array files' hashes, a TFDS directory; None: TFDS by name) and the
        # input kind; a split described by its shape alone has the defaults (`MATCH_DEFAULTS`).
        "data_source": getattr(split, "source", None),
        "inputs": getattr(split, "kind", "images"),
        "seed": spec.seed,
        "num_seeds": spec.num_seeds,
        "model": spec.model,
    }


def provenance(spec: ScoreSpec, split, kind: str, epoch: int) -> dict:
    """What a score file was made from: `run_fields`, the normalization, the score and epoch,
    the config (`spec.record`)."""
    normalization = {"mean": np.asarray(split.mean).tolist(), "std": np.asarray(split.std).tolist()}
    if getattr(split, "kind", "images") == "tokens":
        normalization = None  # token ids are passed as they are
    return run_fields(spec, split) | {
        "epoch": epoch,
        "normalization": normalization,
        "score": kind,
        "config": spec.record,
    }


def timings_path(workdir: str) -> str:
    """`WORKDIR/scores/timings.jsonl`: one line per score computation."""
    return os.path.join(workdir, "scores", "timings.jsonl")


def record_seconds(
    workdir: str, kind: str, epoch: int, seconds: float, per_seed, setup_seconds=None
) -> None:
    """Appends `{'score', 'epoch', 'seconds', 'num_seeds', 'num_examples'}` of one score
    computation (all K seeds, wall time, compilation included) to `timings_path`, and
    `'setup_seconds'` when given: the part of `seconds` spent on fixed costs (the batch check,
    GraNd's guard and method race; `scores.decisions`), paid by the first computation of a
    process that needs them; `seconds - setup_seconds` is the scoring work. Readers of older
    files find no `setup_seconds`."""
    shape = np.shape(per_seed)
    line = {
        "score": kind,
        "epoch": int(epoch),
        "seconds": round(float(seconds), 3),
        "num_seeds": int(shape[0]),
        "num_examples": int(shape[-1]),
    }
    if setup_seconds is not None:
        line["setup_seconds"] = round(float(setup_seconds), 3)
    files.append_line(timings_path(workdir), json.dumps(line))


def wanted_files(spec: ScoreSpec, workdir: str) -> dict[str, tuple[str, int, str]]:
    """{score name: (kind, epoch, path)} of every score file the stage computes."""
    wanted = {}
    for name in spec.names:
        kind, _, epoch = name.partition("@")
        wanted[name] = (kind, int(epoch) if epoch else spec.train_epochs)
    return {name: (k, e, score_path(workdir, k, e)) for name, (k, e) in wanted.items()}


def training_spec(spec: ScoreSpec, workdir: str, split) -> loop.TrainSpec:
    """The K-seed score training of `spec` in `workdir` (`scores/train/ckpt`)."""
    spe = input_pipeline.steps_per_epoch(split.num_examples, spec.train_cfg.batch_size)
    return loop.TrainSpec(
        train_cfg=spec.train_cfg,
        num_seeds=spec.num_seeds,
        seed=spec.seed,
        purpose=keys.Purpose.SCORE,
        num_steps=spec.train_epochs * spe,
        schedule_steps=spec.train_cfg.num_epochs * spe,
        ckpt_dir=os.path.join(workdir, "scores", "train", "ckpt"),
        augment=input_pipeline.augments(spec.data_cfg, split.inputs.shape),
        name="score training",
        keep_epochs=spec.epochs,
        on_diverge="raise",
        dynamics_window=spec.dynamics_window,
    )


def score_stage(spec: ScoreSpec, workdir: str, model, split) -> dict[str, str]:
    """Trains K seeds up to the last score epoch, writing score files on the way.

    Returns:
      {score name: score file path}, e.g. {'el2n@20': '.../el2n_epoch020.npz'}.
    """
    train_epochs = spec.train_epochs
    model = model_form(model)
    wanted = wanted_files(spec, workdir)
    paths = {name: path for name, (_, _, path) in wanted.items()}
    if all(os.path.exists(p) for p in paths.values()):
        logging.info("Scores already in %s", os.path.join(workdir, "scores"))
        return paths
    health.warn_if_small("The score training", split.num_examples, spec.train_cfg.batch_size)
    files = _ScoreFiles(spec, workdir, split, {(k, e) for k, e, _ in wanted.values()})
    images = split.model_inputs()
    missing = {
        e for name, (_, e, path) in wanted.items() if "@" in name and not os.path.exists(path)
    }
    _, stats, _ = loop.fit(
        model,
        split,
        split.index,
        training_spec(spec, workdir, split),
        past_hooks=True,
        hooks={e: _epoch_hook(files, model, images, e) for e in sorted(missing)},
    )
    if spec.forgetting:
        files.write("forgetting", train_epochs, forgetting.forgetting_scores(stats["forgetting"]))
    if spec.aum:
        # Stored negated (higher = lower margin = harder), like every other score.
        files.write("aum", train_epochs, aum.aum_scores(stats["aum"]))
    if spec.dynamics:
        for kind, fn in DYNAMICS_SCORES.items():
            per_seed = files.timed(kind, train_epochs, fn, stats["dynamics"])
            files.write(kind, train_epochs, per_seed)
    return paths


class _ScoreFiles:
    """The score files of one score stage: which are due, computing one (timed), writing it."""

    def __init__(self, spec: ScoreSpec, workdir: str, split, at_epochs: set):
        self.spec, self.workdir, self.split, self.at_epochs = spec, workdir, split, at_epochs

    def write(self, kind: str, epoch: int, per_seed) -> None:
        path = score_path(self.workdir, kind, epoch)
        artifacts.save_scores(
            path,
            per_seed,
            self.split.index,
            # The processor and XLA_FLAGS the scores were computed with (`machine`).
            provenance(self.spec, self.split, kind, epoch) | {"environment": machine.environment()},
            tfds_id=self.split.tfds_id,
        )
        logging.info("Wrote %s scores at epoch %d: %s", kind, epoch, health.score_summary(per_seed))
        track_scores(self.workdir, kind, epoch, per_seed)

    def todo(self, kind: str, epoch: int) -> bool:
        path = score_path(self.workdir, kind, epoch)
        return (kind, epoch) in self.at_epochs and not os.path.exists(path)

    def timed(self, kind: str, epoch: int, fn, *args, **kwargs):
        start, setup = time.perf_counter(), decisions.stats()["setup_seconds"]
        with interrupts.stage(f"scoring ({kind} at epoch {epoch})"):
            per_seed = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        setup = max(0.0, decisions.stats()["setup_seconds"] - setup)  # the calls' fixed costs
        record_seconds(self.workdir, kind, epoch, seconds, per_seed, setup)
        examples = np.prod(np.shape(per_seed)[:2])  # K * N
        tracker = tracking.current()
        run = tracker.run_name(os.path.join(self.workdir, "scores"))
        tracker.scalars(run, epoch, {f"examples_per_second/{kind}": examples / max(seconds, 1e-9)})
        return per_seed


def track_scores(workdir: str, kind: str, epoch: int, per_seed) -> None:
    """The histograms of a score file's `per_seed` [K, N] scores, each seed's and their mean's,
    to the open tracker at step `epoch` (features, [K, N, D], are not histogrammed)."""
    tracker = tracking.current()
    if np.ndim(per_seed) != 2 or not tracker.active:
        return
    run = tracker.run_name(os.path.join(workdir, "scores"))
    per_seed = np.asarray(per_seed)
    for k, row in enumerate(per_seed):
        tracker.histogram(run, epoch, f"{kind}/seed{k}", row)
    tracker.histogram(run, epoch, f"{kind}/mean", per_seed.mean(0))


def _epoch_hook(out: _ScoreFiles, model, images, epoch: int):
    """The loop's hook at `epoch`: the logit scores, GraNd and the features with their scores
    that are due then, each computed in passes over `images`, the un-augmented training set."""
    split = out.split
    tokens = split.kind == "tokens"  # an embedding first layer takes the integer ids

    def hook(state, stats):
        health.check_score_training(stats["forgetting"], split.labels, epoch)
        variables = {"params": state.params, "state": state.model_state}
        batch = {"batch_size": out.spec.batch_size, "integer_inputs": tokens}
        passes = [(k, functools.partial(api.logit_scores, k)) for k in LOGIT_KINDS]
        inputs = (model, variables, images, split.labels)
        for kind, fn in passes + [("grand", api.grand_scores)]:
            if out.todo(kind, epoch):
                out.write(kind, epoch, out.timed(kind, epoch, fn, *inputs, **batch))
        if any(out.todo(kind, epoch) for kind in config_check.FEATURE_KINDS):
            fn = penultimate.penultimate_features
            feats = out.timed("features", epoch, fn, *inputs, **batch)
            out.write("features", epoch, feats)
            for kind, fn in feature_scores(out.spec).items():
                out.write(kind, epoch, out.timed(kind, epoch, fn, feats, split.labels))

    return hook


# Scores of one eval-mode forward pass, EL2N's included (`scores.uncertainty`).
LOGIT_KINDS = ("el2n", *config_check.LOGIT_KINDS)
# The dynamics scores of the score training's statistics (`scores.trajectory`).
DYNAMICS_SCORES = {
    "dyn_unc": trajectory.dyn_unc_scores,
    "tdds": trajectory.tdds_scores,
    "dual": trajectory.dual_scores,
    "mean_prob": trajectory.mean_true_probs,
}


def feature_scores(spec: ScoreSpec) -> dict:
    """{kind: fn(features [K, N, D], labels [N]) -> [K, N]} of the feature scores."""
    return {
        "moderate": geometry.moderate_distances,
        "prototype": functools.partial(
            geometry.prototype_distances,
            num_prototypes=spec.prototypes_per_class,
            seed=spec.seed,
        ),
    }


def external_scores(spec: ScoreSpec, prune: PruneSpec, split) -> dict[str, str]:
    """The score files pruning reads (`pruning_names`) from the run in `spec.source_workdir`,
    checked against this run's data."""
    files = {}
    for name in pruning_names(prune):
        kind, _, epoch = name.partition("@")
        if epoch:
            files[name] = score_path(spec.source_workdir, kind, int(epoch))
        else:  # Forgetting and AUM: the end of that run's score training.
            files[name] = _latest_score_file(spec.source_workdir, kind)
        load_checked_scores(spec, split, files[name])
    return files


def _latest_score_file(workdir: str, kind: str) -> str:
    """`WORKDIR/scores/<kind>_epochNNN.npz` with the highest epoch (epoch 0 when none exists)."""
    folder = os.path.dirname(score_path(workdir, kind, 0))
    pattern = re.compile(rf"{re.escape(kind)}_epoch(\d+)\.npz")
    epochs = [
        int(m.group(1))
        for f in (os.listdir(folder) if os.path.isdir(folder) else ())
        if (m := pattern.fullmatch(f))
    ]
    return score_path(workdir, kind, max(epochs, default=0))


def score_expectation(spec: ScoreSpec, split) -> dict:
    """Provenance fields a score file must match to prune this run's data (`MATCH_FIELDS`), and
    those it may differ in only with `config.score.allow_transfer` (`TRANSFER_FIELDS`)."""
    fields = artifacts.MATCH_FIELDS + artifacts.TRANSFER_FIELDS
    return {k: v for k, v in run_fields(spec, split).items() if k in fields}


def refusal_fix(spec: ScoreSpec) -> str:
    """What to do about a refused score file of this run: which file to delete, and which run
    recomputes it (this one, or the one in `config.score.workdir`)."""
    if spec.source_workdir:
        return (
            f"it comes from config.score.workdir={spec.source_workdir}: delete it and rerun "
            "that run to recompute it, or point config.score.workdir at a run of this data"
        )
    return "delete it and rerun the same command: the score stage recomputes it"


def load_checked_scores(spec: ScoreSpec, split, path: str) -> dict:
    """`artifacts.load_scores` of `path`, checked against this run's data, model and seed."""
    return artifacts.load_scores(
        path,
        score_expectation(spec, split),
        allow_transfer=spec.allow_transfer,
        fix=refusal_fix(spec),
    )


def seed_mean(scores: dict, num_seeds: int, path: str):
    """The `[N]` mean of the first `num_seeds` seeds of a loaded score file (0: its saved mean)."""
    if num_seeds == 0:
        return scores["mean"]
    available = scores["per_seed"].shape[0]
    if not 1 <= num_seeds <= available:
        raise ValueError(
            f"config.prune.num_score_seeds={num_seeds} but {path} holds {available} seeds; set it "
            f"to 1..{available}, or 0 for all."
        )
    return scores["per_seed"][:num_seeds].mean(0)


def pruning_names(prune: PruneSpec) -> list[str]:
    """The score files pruning reads: `prune.scores`, the features file for a strategy that
    selects on features (`prune.features`) and, for 'dual_sampling', 'mean_prob'."""
    names = [*prune.scores, *plan.strategy_inputs(prune, prune.strategy)]
    return list(dict.fromkeys(names))


def pruning_scores(
    spec: ScoreSpec, prune: PruneSpec, split, score_files: dict[str, str]
) -> dict[str, np.ndarray]:
    """{score name: what prunes} for every file of `pruning_names`: `[N]`, the mean of the first
    `prune.num_score_seeds` seeds (0: all) of each checked score file; `[k, N, D]`, the first k
    seeds of a features file ('features@E'; their distances add up over seeds)."""
    out = {}
    for name in pruning_names(prune):
        loaded = load_checked_scores(spec, split, score_files[name])
        if loaded["per_seed"].ndim == 3:
            seed_mean(loaded, prune.num_score_seeds, score_files[name])  # checks k
            k = prune.num_score_seeds or loaded["per_seed"].shape[0]
            out[name] = loaded["per_seed"][:k]
        else:
            out[name] = seed_mean(loaded, prune.num_score_seeds, score_files[name])
    return out
