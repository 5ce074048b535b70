"""The data-diet pipeline as resumable stages: data -> scores -> pruning -> retraining -> results.

Each stage writes its output into the work directory and skips work that is already there, so a
stopped run resumes where it stopped. Layout:

  WORKDIR/config.json                 the full config (a different config is refused)
  WORKDIR/label_noise.npz             noisy_index, labels, clean_labels
  WORKDIR/scores/<score>_epochNNN.npz per-seed [K, N] scores, mean, index, provenance
  WORKDIR/scores/train/               the K-seed score training: ckpt/, metrics.jsonl
  WORKDIR/retrain/<run>/              kept.npz, ckpt/, metrics.jsonl, result.json
  WORKDIR/results.json, results.csv   every retraining run (CSV: one row per seed)
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
from absl import logging

from datadiet_jax import (
    artifacts,
    config_check,
    data,
    health,
    loop,
    models,
    pipelines,
    pruning,
    retrain,
    run_names,
)
from datadiet_jax import scores as scores_lib

_SCORE_PURPOSE = 1


def config_to_dict(config) -> dict:
    """A JSON-normal dict of the config (tuples become lists)."""
    return json.loads(json.dumps(config.to_dict(), default=list))


def score_epochs(config) -> tuple[list[int], int]:
    """Epochs at which scores are computed, and how long the score stage trains."""
    needed = sorted(set(config.score.el2n_epochs) | set(config.score.grand_epochs))
    last = max(needed, default=0)
    train_epochs = last if config.score.train_epochs < 0 else config.score.train_epochs
    if train_epochs < last:
        raise ValueError(
            f"config.score.train_epochs={train_epochs} is before the last score epoch {last}; "
            "raise it or set it to -1."
        )
    if config.score.forgetting and train_epochs < 1:
        raise ValueError(
            "config.score.forgetting counts events during score training, which lasts 0 epochs "
            "here; set config.score.train_epochs >= 1 or config.score.forgetting=False."
        )
    if config.score.aum and train_epochs < 1:
        raise ValueError(
            "config.score.aum averages margins over training, but the score stage trains 0 "
            "epochs; set config.score.train_epochs >= 1 or config.score.aum=False."
        )
    return needed, train_epochs


def available_scores(config) -> list[str]:
    """Names of the scores the config computes, e.g. ['el2n@20', 'grand@0', 'forgetting', 'aum']."""
    names = [f"el2n@{e}" for e in config.score.el2n_epochs]
    names += [f"grand@{e}" for e in config.score.grand_epochs]
    names += ["forgetting"] if config.score.forgetting else []
    return names + (["aum"] if config.score.aum else [])


def validate(config) -> None:
    """Checks a config before anything is written; raises ValueError naming the field to fix."""
    if config.model.name not in models.MODELS:
        models.get_model(config.model.name, 10)  # Raises with the valid names.
    for f in config.prune.fractions:
        pruning.num_to_keep(100, f)
    config_check.check_values(config)
    if config.prune.strategy not in pruning.STRATEGIES:
        raise ValueError(
            f"Unknown prune strategy {config.prune.strategy!r}; set config.prune.strategy to one "
            f"of {sorted(pruning.STRATEGIES)}."
        )
    valid = available_scores(config)
    for name in config.prune.scores:
        if name not in valid:
            raise ValueError(
                f"config.prune.scores names {name!r}, which this config does not compute; "
                f"use one of {valid} or add its epoch to config.score."
            )
    if config.prune.num_score_seeds < 0:
        raise ValueError("config.prune.num_score_seeds must be >= 0 (0 averages all seeds).")
    if config.retrain.budget not in ("steps", "epochs"):
        raise ValueError("config.retrain.budget must be 'steps' or 'epochs'.")
    if config.data.augment not in ("auto", "on", "off"):
        raise ValueError("config.data.augment must be 'auto', 'on' or 'off'.")
    score_epochs(config)
    run_names.check_unique(run_names.plan_names(config))


def load_data(config):
    """Train split (with label noise) and test split, as `data.Split`s."""
    d = config.data
    kw = dict(data_dir=d.data_dir, download=d.download)
    train_split = data.load_split(d.name, "train", num_examples=d.num_train_examples, **kw)
    test_split = data.load_split(d.name, "test", num_examples=d.num_test_examples, **kw)
    noise = d.label_noise
    train_split = data.with_label_noise(train_split, noise.fraction, noise.mode, noise.seed)
    return train_split, test_split


def _augment(config, split) -> bool:
    if config.data.augment == "auto":
        return split.images.shape[1:3] == (32, 32)
    return config.data.augment == "on"


def _model(config, split):
    kwargs = {"width": config.model.width} if config.model.width else {}
    return models.get_model(config.model.name, split.num_classes, **kwargs)


def score_path(workdir: str, kind: str, epoch: int) -> str:
    return os.path.join(workdir, "scores", f"{kind}_epoch{epoch:03d}.npz")


def provenance(config, split, kind: str, epoch: int) -> dict:
    return {
        "dataset": split.name,
        "split": split.split,
        "num_examples": split.num_examples,
        "label_noise": config_to_dict(config.data.label_noise)
        if config.data.label_noise.fraction
        else None,
        "seed": config.seed,
        "num_seeds": config.score.num_seeds,
        "epoch": epoch,
        "model": config.model.name,
        "score": kind,
        "config": config_to_dict(config),
    }


def score_stage(config, workdir: str, model, split) -> dict[str, str]:
    """Trains K seeds up to the last score epoch, writing score files on the way.

    Returns:
      {score name: score file path}, e.g. {'el2n@20': '.../el2n_epoch020.npz'}.
    """
    needed, train_epochs = score_epochs(config)
    wanted = {}
    for e in config.score.el2n_epochs:
        wanted[f"el2n@{e}"] = ("el2n", e)
    for e in config.score.grand_epochs:
        wanted[f"grand@{e}"] = ("grand", e)
    if config.score.forgetting:
        wanted["forgetting"] = ("forgetting", train_epochs)
    if config.score.aum:
        wanted["aum"] = ("aum", train_epochs)
    paths = {name: score_path(workdir, *ke) for name, ke in wanted.items()}
    if all(os.path.exists(p) for p in paths.values()):
        logging.info("Scores already in %s", os.path.join(workdir, "scores"))
        return paths
    images = split.normalized_images()

    def write(kind, epoch, per_seed):
        artifacts.save_scores(
            score_path(workdir, kind, epoch),
            per_seed,
            split.index,
            provenance(config, split, kind, epoch),
        )
        per_seed = np.asarray(per_seed)
        finite = np.isfinite(per_seed)  # forgetting: +inf for never-learned examples
        mean = float(per_seed[finite].mean()) if finite.any() else np.nan
        logging.info("Wrote %s scores at epoch %d: mean %.4f, %d infinite", kind, epoch, mean,
                     int((~finite).sum()))  # fmt: skip

    def hook_for(epoch):
        def hook(state, stats):
            health.check_score_training(stats["forgetting"], split.labels, epoch)
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            for kind, fn, bs in (
                ("el2n", scores_lib.el2n_scores, config.score.batch_size),
                ("grand", scores_lib.grand_scores, config.score.batch_size),
            ):
                if (kind, epoch) in wanted.values() and not os.path.exists(
                    score_path(workdir, kind, epoch)
                ):
                    write(kind, epoch, fn(model, variables, images, split.labels, batch_size=bs))

        return hook

    spe = pipelines.steps_per_epoch(split.num_examples, config.train.batch_size)
    state, stats, _ = loop.train_seeds(
        model,
        split,
        split.index,
        train_cfg=config.train,
        num_seeds=config.score.num_seeds,
        seed=config.seed,
        purpose=_SCORE_PURPOSE,
        num_steps=train_epochs * spe,
        schedule_steps=config.train.num_epochs * spe,
        ckpt_dir=os.path.join(workdir, "scores", "train", "ckpt"),
        augment=_augment(config, split),
        hooks={e: hook_for(e) for e in needed},
        keep_epochs=needed,
        name="score training",
        on_diverge="raise",
    )
    if config.score.forgetting:
        from datadiet_jax import forgetting

        write("forgetting", train_epochs, forgetting.forgetting_scores(stats["forgetting"]))
    if config.score.aum:
        from datadiet_jax import aum

        # Stored negated (higher = lower margin = harder), like every other score.
        write("aum", train_epochs, aum.aum_scores(stats["aum"]))
    return paths


def external_scores(config, split) -> dict[str, str]:
    """The score files of the run in `config.score.workdir`, checked against this run's data."""
    files = {}
    for name in config.prune.scores:
        kind, _, epoch = name.partition("@")
        if epoch:
            files[name] = score_path(config.score.workdir, kind, int(epoch))
        else:  # Forgetting: the end of that run's score training.
            files[name] = _latest_score_file(config.score.workdir, kind)
        load_checked_scores(config, split, files[name])
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


def load_checked_scores(config, split, path: str) -> dict:
    """`artifacts.load_scores` of `path`, checked against this run's data, model and seed."""
    return artifacts.load_scores(
        path, score_expectation(config, split), allow_transfer=config.score.allow_transfer
    )


def retrain_plan(config, score_files: dict[str, str], split) -> list[dict]:
    """The retraining runs: each a dict with name, score, strategy, prune_fraction, offset and
    kept [M] (sorted dataset indices)."""
    plan = []
    if config.prune.full_baseline:
        plan.append(
            dict(name="full", score=None, strategy="full", prune_fraction=0.0, offset=0,
                 kept=split.index.copy())
        )  # fmt: skip
    strategy = config.prune.strategy
    offsets = config.prune.offsets if strategy == "offset" else (0,)
    for f in config.prune.fractions:
        for name in config.prune.scores:
            s = seed_mean(load_checked_scores(config, split, score_files[name]),
                          config.prune.num_score_seeds, score_files[name])  # fmt: skip
            for offset in offsets:
                kept = pruning.select(
                    strategy, s, prune_fraction=f, labels=split.labels, seed=config.seed,
                    offset=offset, beta=config.prune.ccs_beta,
                )  # fmt: skip
                run_name = run_names.run_name(name, strategy, f)
                if strategy == "offset":
                    run_name += f"_o{offset}"
                plan.append(dict(name=run_name, score=name, strategy=strategy, prune_fraction=f,
                                 offset=offset, kept=kept))  # fmt: skip
        if config.prune.random_baseline:
            kept = pruning.select(
                "random", None, prune_fraction=f, seed=config.seed, num_examples=split.num_examples
            )
            plan.append(dict(name=run_names.run_name("random", "subset", f), score="random",
                             strategy="random", prune_fraction=f, offset=0, kept=kept))  # fmt: skip
    run_names.check_unique([run["name"] for run in plan])
    return plan


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


def score_expectation(config, split) -> dict:
    """Provenance fields a score file must match to prune this run's data (`MATCH_FIELDS`), and
    those it may differ in only with `config.score.allow_transfer` (`TRANSFER_FIELDS`)."""
    fields = artifacts.MATCH_FIELDS + artifacts.TRANSFER_FIELDS
    return {k: v for k, v in provenance(config, split, "", 0).items() if k in fields}


def check_plan_inputs(config, split) -> None:
    """Refuses offsets and fractions that leave an empty or out-of-range window, before training."""
    if config.prune.strategy == "offset":
        for f in config.prune.fractions:
            num_keep = pruning.num_to_keep(split.num_examples, f)
            for offset in config.prune.offsets:
                pruning.check_window(split.num_examples, offset, num_keep)


def run(config, workdir: str) -> dict:
    """Runs (or resumes) every stage; returns the results dict also written to results.json."""
    validate(config)
    data.get_builder(config.data.name, config.data.data_dir, config.data.download)
    split, test_split = load_data(config)
    check_plan_inputs(config, split)
    artifacts.check_workdir(workdir, config_to_dict(config))
    noise_path = os.path.join(workdir, "label_noise.npz")
    if not os.path.exists(noise_path):
        artifacts.save_npz(
            noise_path,
            noisy_index=split.noisy_index,
            labels=split.labels,
            clean_labels=split.clean_labels,
        )
    model = _model(config, split)
    if config.score.workdir:
        score_files = external_scores(config, split)
    else:
        score_files = score_stage(config, workdir, model, split)
    plan = retrain_plan(config, score_files, split)
    results = retrain.retrain_stage(
        config, workdir, model, split, test_split, plan, augment=_augment(config, split)
    )
    out = {"workdir": os.path.abspath(workdir), "scores": score_files, "runs": results}
    artifacts.write_json(os.path.join(workdir, "results.json"), out)
    artifacts.write_csv(os.path.join(workdir, "results.csv"), retrain.result_rows(results))
    return out
