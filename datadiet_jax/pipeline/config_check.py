"""Every check of a config before anything runs: one `ValueError` naming the field and the fix.

Types are checked by `ml_collections` when a flag is parsed (a locked config refuses a string
for an int); `validate` checks the rest, before any data is read or anything is written, so a bad
override such as `--config.train.batch_size=0` fails at once with one line: ranges
(`check_values`), names (model, strategy, scores), the score epochs against the training
(`score_epochs`) and the retraining plan (`plan.check_windows` checks the offset windows once N
is known). It returns the stages' specs (`specs.Specs`), built once here: validation and the
orchestrator are the only code that sees the whole config.

Usage:

    from datadiet_jax.pipeline import config_check
    specs = config_check.validate(config)       # ValueError: one line naming the field
    specs.score, specs.prune, specs.retrain     # what each stage is
"""

from __future__ import annotations

import math

from datadiet_jax import models
from datadiet_jax.pipeline import data, fingerprint, hf_source, plan, specs, workdir
from datadiet_jax.pipeline.config_base import config_to_dict
from datadiet_jax.scores import pruning, seed_axis
from datadiet_jax.training import prune_schedules, tracking, train, train_mesh

_MISSING = object()

# name -> (predicate, what the value must be). Integers and finite floats only.
_NONNEG_INT = (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
_POS_INT = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
_WINDOW = (lambda v: _is_int(v) and v >= 2, "an integer >= 2 (a window std needs 2 epochs)")
_POS_FLOAT = (lambda v: _is_real(v) and v > 0, "a finite number > 0")
_NONNEG_FLOAT = (lambda v: _is_real(v) and v >= 0, "a finite number >= 0")
_UNIT_CLOSED = (lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]")
_UNIT_HALF_OPEN = (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)")
_UNIT_OPEN = (lambda v: _is_real(v) and 0 < v < 1, "a number in (0, 1)")

_SCALARS = {
    "seed": _NONNEG_INT,
    "data.num_train_examples": _NONNEG_INT,
    "data.num_test_examples": _NONNEG_INT,
    "data.num_classes": _NONNEG_INT,
    "data.label_noise.fraction": _UNIT_CLOSED,
    "data.label_noise.seed": _NONNEG_INT,
    "model.width": _NONNEG_INT,
    "model.smoke_width": _NONNEG_INT,
    "train.batch_size": _POS_INT,
    "train.num_epochs": _POS_INT,
    "train.learning_rate": _POS_FLOAT,
    "train.lr_drop_factor": _POS_FLOAT,
    "train.momentum": _UNIT_HALF_OPEN,
    "train.weight_decay": _NONNEG_FLOAT,
    "train.checkpoint_every_epochs": _NONNEG_INT,
    "train.eval_batch_size": _POS_INT,
    "train.warmup_epochs": _NONNEG_FLOAT,
    "score.num_seeds": _POS_INT,
    "score.batch_size": _POS_INT,
    "score.prototypes_per_class": _POS_INT,
    "score.dynamics_window": _WINDOW,
    "prune.ccs_beta": _UNIT_HALF_OPEN,
    "retrain.num_seeds": _POS_INT,
}

_SEQUENCES = {
    "train.lr_drop_fractions": _UNIT_OPEN,
    "score.el2n_epochs": _NONNEG_INT,
    "score.grand_epochs": _NONNEG_INT,
    "score.logit_epochs": _NONNEG_INT,
    "score.feature_epochs": _NONNEG_INT,
    "prune.fractions": _UNIT_HALF_OPEN,
    "prune.offsets": _NONNEG_INT,
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _get(config, name: str):
    value = config
    for part in name.split("."):
        if part not in value:
            return _MISSING
        value = value[part]
    return value


def _fail(name: str, value, requirement: str) -> ValueError:
    return ValueError(f"config.{name} is {value!r}; set --config.{name} to {requirement}.")


def check_values(config) -> None:
    """Checks the range of every numeric config field (and a few enumerations).

    Fields that a config does not have are skipped (e.g. `train.warmup_epochs` in older configs).

    Raises:
      ValueError: one line naming the first bad field, its value and what it must be.
    """
    for name, (ok, requirement) in _SCALARS.items():
        value = _get(config, name)
        if value is not _MISSING and not ok(value):
            raise _fail(name, value, requirement)
    for name, (ok, requirement) in _SEQUENCES.items():
        values = _get(config, name)
        if values is _MISSING:
            continue
        for value in values:
            if not ok(value):
                raise ValueError(
                    f"config.{name} holds {value!r}; set --config.{name} to a tuple of values, "
                    f"each {requirement}."
                )
    num_epochs = config.train.num_epochs
    for name in EPOCH_FIELDS:
        late = [e for e in config.score.get(name.split(".")[1], ()) if e > num_epochs]
        if late:
            raise ValueError(
                f"config.{name} holds epoch {late[0]}, after the {num_epochs} epochs of training; "
                f"use epochs <= config.train.num_epochs ({num_epochs})."
            )
    train_epochs = config.score.train_epochs
    if not (_is_int(train_epochs) and -1 <= train_epochs <= num_epochs):
        raise _fail(
            "score.train_epochs",
            train_epochs,
            f"-1 (up to the last score epoch) or an integer in [0, {num_epochs}] "
            "(config.train.num_epochs)",
        )
    mode = config.data.label_noise.mode
    if mode not in data.NOISE_MODES:
        raise _fail("data.label_noise.mode", mode, f"one of {data.NOISE_MODES}")
    if config.train.seed_axis not in ("auto", *seed_axis.MODES):
        raise _fail("train.seed_axis", config.train.seed_axis, "'auto', 'vmap', 'unroll' or 'map'")
    fast = config.train.get("fast_backward", "auto")
    if fast not in train.FAST_BACKWARD_MODES:
        raise _fail("train.fast_backward", fast, "'auto', 'on' or 'off'")
    train_mesh.check_mode(config.train.get("mesh", "auto"))


def check_source(data_cfg) -> None:
    """Checks that `config.data` names its source's files or function, and nothing unused.

    Raises:
      ValueError: one line naming the field to set (or to clear).
    """
    inputs = data_cfg.get("inputs", "auto")
    if inputs not in ("auto", *data.INPUT_KINDS):
        raise _fail("data.inputs", inputs, f"'auto' or one of {data.INPUT_KINDS}")
    if bool(data_cfg.get("mean", ())) != bool(data_cfg.get("std", ())):
        raise ValueError(
            "config.data.mean and config.data.std are set together (your own normalization) or "
            "not at all; set both, e.g. --config.data.mean='(0.5,)' --config.data.std='(0.25,)'."
        )
    arrays = data_cfg.get("arrays") or {}
    if data_cfg.name == "arrays":
        for split in ("train", "test"):
            if not arrays.get(split):
                raise ValueError(
                    f"config.data.name is 'arrays' but config.data.arrays.{split} is not set; set "
                    f"--config.data.arrays.{split} to an .npz (or .npy) file."
                )
    elif any(arrays.get(k) for k in arrays):
        raise ValueError(
            f"config.data.arrays is set but config.data.name is {data_cfg.name!r}; set "
            "--config.data.name=arrays to read those files, or clear config.data.arrays."
        )
    function = data_cfg.get("function")
    if data_cfg.name == "function" and not function:
        raise ValueError(
            "config.data.name is 'function' but config.data.function is not set; set it to "
            "'package.module:function'."
        )
    if function and data_cfg.name != "function":
        raise ValueError(
            f"config.data.function is set but config.data.name is {data_cfg.name!r}; set "
            "--config.data.name=function to call it, or clear config.data.function."
        )
    hf_source.check_fields(data_cfg)


# The score config fields that name epochs of the score training.
EPOCH_FIELDS = (
    "score.el2n_epochs",
    "score.grand_epochs",
    "score.logit_epochs",
    "score.feature_epochs",
)


def score_epochs(config) -> tuple[list[int], int]:
    """Epochs at which scores are computed, and how long the score stage trains."""
    needed = sorted({e for name in EPOCH_FIELDS for e in config.score.get(name[6:], ())})
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
    window = config.score.get("dynamics_window", 0)
    if config.score.get("dynamics", False) and train_epochs < window + 1:
        raise ValueError(
            f"config.score.dynamics needs {window + 1} epochs of score training (Dyn-Unc: a "
            f"window of config.score.dynamics_window={window} epochs and one after it), but the "
            f"score stage trains {train_epochs}; raise config.score.train_epochs or lower "
            "config.score.dynamics_window."
        )
    return needed, train_epochs


def available_scores(config) -> list[str]:
    """Names of the scores the config computes, e.g. ['el2n@20', 'grand@0', 'forgetting', 'aum']."""
    names = [f"el2n@{e}" for e in config.score.el2n_epochs]
    names += [f"grand@{e}" for e in config.score.grand_epochs]
    names += [f"{k}@{e}" for e in config.score.get("logit_epochs", ()) for k in LOGIT_KINDS]
    names += [f"{k}@{e}" for e in config.score.get("feature_epochs", ()) for k in FEATURE_KINDS]
    names += ["forgetting"] if config.score.forgetting else []
    names += ["aum"] if config.score.aum else []
    return names + (list(DYNAMICS_KINDS) if config.score.get("dynamics", False) else [])


# The files `score.logit_epochs`, `score.feature_epochs` and `score.dynamics` add.
LOGIT_KINDS = ("entropy", "least_confidence", "margin", "loss")
FEATURE_KINDS = ("features", "moderate", "prototype")
# 'mean_prob' is not a score: the mean assigned-label probability (higher = easier), which
# DUAL's sampling ('dual_sampling') weighs examples by.
DYNAMICS_KINDS = ("dyn_unc", "tdds", "dual", "mean_prob")


def features_name(config) -> str:
    """The features file of the feature strategies: `config.prune.features`, else the only
    feature epoch's ('features@E'); raises ValueError naming the fix when there is none."""
    name = config.prune.get("features", "")
    if name:
        return name
    epochs = tuple(config.score.get("feature_epochs", ()))
    if len(epochs) != 1:
        raise ValueError(
            f"prune.strategy {config.prune.strategy!r} selects on features, but "
            f"config.score.feature_epochs is {epochs}; set --config.prune.features=features@E "
            "with E one of the feature epochs (or set one feature epoch)."
        )
    return f"features@{epochs[0]}"


def validate(config) -> specs.Specs:
    """Checks a config before anything is written; raises ValueError naming the field to fix.

    Returns:
      The stages' specs (`score_spec`, `prune_spec`, `retrain_spec`).
    """
    models.check(config.model)
    for f in config.prune.fractions:
        pruning.num_to_keep(100, f)
    check_values(config)
    if config.prune.strategy not in pruning.STRATEGIES:
        raise ValueError(
            f"Unknown prune strategy {config.prune.strategy!r}; set config.prune.strategy to one "
            f"of {sorted(pruning.STRATEGIES)}."
        )
    valid = available_scores(config)
    strategy = config.prune.strategy
    if strategy in pruning.FEATURE_STRATEGIES and features_name(config) not in valid:
        raise ValueError(
            f"config.prune.features is {features_name(config)!r}, which this config does "
            "not compute; add its epoch to config.score.feature_epochs."
        )
    if strategy == "dual_sampling" and "mean_prob" not in valid:
        raise ValueError(
            "prune.strategy 'dual_sampling' weighs examples by their mean prediction over the "
            "score training; set --config.score.dynamics=True."
        )
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
    target = config.retrain.get("target_accuracy", 0.0)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 <= target <= 1:
        raise ValueError(
            f"config.retrain.target_accuracy is {target!r}; use a test accuracy in (0, 1], or "
            "0 to train the whole budget."
        )
    if config.retrain.get("stack", "auto") not in ("auto", "on", "off"):
        raise ValueError(
            f"config.retrain.stack is {config.retrain.stack!r}; set --config.retrain.stack to "
            "'auto', 'on' or 'off'."
        )
    if config.data.augment not in ("auto", "on", "off"):
        raise ValueError("config.data.augment must be 'auto', 'on' or 'off'.")
    check_train_prune(config.train)
    check_source(config.data)
    tracking.check_writers(track_writers(config))
    return specs.Specs(score_spec(config), prune_spec(config), retrain_spec(config))


def check_train_prune(train_cfg) -> None:
    """Checks `config.train.prune` (absent in older configs: off); one line naming the field."""
    prune = train_cfg.get("prune")
    if prune is None:
        return
    prune_schedules.check(prune)
    if prune.get("schedule") == "prune_continue" and prune.at_epoch >= train_cfg.num_epochs:
        raise ValueError(
            f"config.train.prune.at_epoch is {prune.at_epoch}, but training lasts "
            f"config.train.num_epochs = {train_cfg.num_epochs} epochs; prune before the end."
        )


def track_writers(config) -> tuple[str, ...]:
    """`config.track.writers` (a config without `track`: the default writers)."""
    return tuple(config.get("track", {}).get("writers", ("tensorboard", "jsonl")))


def score_spec(config) -> specs.ScoreSpec:
    """The score stage of `config` (raises ValueError when its epochs do not fit the training)."""
    epochs, train_epochs = score_epochs(config)
    noise = config.data.label_noise
    dynamics = bool(config.score.get("dynamics", False))
    return specs.ScoreSpec(
        seed=config.seed,
        num_seeds=config.score.num_seeds,
        batch_size=config.score.batch_size,
        epochs=tuple(epochs),
        train_epochs=train_epochs,
        names=tuple(available_scores(config)),
        forgetting=bool(config.score.forgetting),
        aum=bool(config.score.aum),
        dynamics=dynamics,
        dynamics_window=config.score.dynamics_window if dynamics else 0,
        prototypes_per_class=config.score.prototypes_per_class,
        source_workdir=config.score.workdir,
        allow_transfer=config.score.allow_transfer,
        model=config.model.name,
        label_noise=config_to_dict(noise) if noise.fraction else None,
        train_cfg=config.train,
        data_cfg=config.data,
        # Without config.track, which changes no score: a score file is the same either way.
        record={k: v for k, v in config_to_dict(config).items() if k != "track"},
    )


def prune_spec(config) -> specs.PruneSpec:
    """The retraining plan of `config` (raises ValueError when two runs would share a name)."""
    runs = plan.planned_runs(config.prune)
    plan.check_unique(runs)
    strategy = config.prune.strategy
    return specs.PruneSpec(
        seed=config.seed,
        strategy=strategy,
        runs=tuple(runs),
        scores=tuple(config.prune.scores),
        fractions=tuple(config.prune.fractions),
        offsets=tuple(config.prune.offsets),
        features=features_name(config) if strategy in pruning.FEATURE_STRATEGIES else "",
        num_score_seeds=config.prune.num_score_seeds,
        ccs_beta=config.prune.ccs_beta,
    )


def retrain_spec(config) -> specs.RetrainSpec:
    """The retrainings of `config`."""
    return specs.RetrainSpec(
        seed=config.seed,
        num_seeds=config.retrain.num_seeds,
        budget=config.retrain.budget,
        stack=config.retrain.get("stack", "auto"),
        train_cfg=config.train,
        data_cfg=config.data,
        label_noise=config.data.label_noise.fraction,
        settings=training_settings(config),
        curve=bool(config.retrain.get("curve", False)),
        target_accuracy=float(config.retrain.get("target_accuracy", 0.0)),
    )


def training_settings(config) -> dict:
    """The config sections that decide a retraining besides its kept set
    (`fingerprint.TRAINING_SECTIONS`), as plain dicts without `workdir.NEUTRAL_FIELDS`."""
    sections = {k: config_to_dict(config[k]) for k in fingerprint.TRAINING_SECTIONS}
    for field in workdir.NEUTRAL_FIELDS:  # fields that change no result
        section, name = field.split(".")
        if section in sections:
            sections[section].pop(name, None)
    return sections
