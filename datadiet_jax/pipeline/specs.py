"""What each stage of a run is, built once from the config by `config_check.validate`.

Only the orchestrator (`run`) and validation (`config_check`) see the whole config; the stages
take these frozen specs instead, beside `loop.TrainSpec` (one K-seed training):

  ScoreSpec    the score stage: which scores at which epochs, the score training, provenance
  PruneSpec    the retraining plan: its runs and how each kept set is selected
  RetrainSpec  the retrainings: R seeds per run, their budget, stacking, training settings

Config subtrees (`config.train`, `config.data`) are kept where they are genuinely the input
(`loop.TrainSpec.train_cfg`, `input_pipeline.augments`). Every field is documented once, here.

Usage:

    from datadiet_jax.pipeline import config_check
    specs = config_check.validate(config)      # a specs.Specs
    specs.score.names                          # e.g. ('el2n@20', 'grand@0', 'forgetting')
    specs.prune.runs, specs.retrain.num_seeds  # the planned runs; R seeds per run
"""

from __future__ import annotations

import dataclasses
from typing import Any

from datadiet_jax.pipeline.plan import PlannedRun


@dataclasses.dataclass(frozen=True)
class ScoreSpec:
    """The score stage of a run.

    Attributes:
      seed: the run seed (`config.seed`).
      num_seeds: K, the seeds trained and scored (`config.score.num_seeds`).
      batch_size: examples per scoring pass (`config.score.batch_size`).
      epochs: the sorted epochs at which a score file is computed (`config.score.*_epochs`).
      train_epochs: how long the score training lasts (`config.score.train_epochs`, -1 resolved
        to the last score epoch).
      names: every score the stage writes, e.g. ('el2n@20', 'grand@0', 'forgetting').
      forgetting, aum, dynamics: the training-statistics scores it writes (`config.score.*`).
      dynamics_window: epochs per Dyn-Unc window, 0 when `dynamics` is off.
      prototypes_per_class: k-means prototypes per class of the 'prototype' score.
      source_workdir: `config.score.workdir`, the run whose score files this run prunes with;
        '' computes its own.
      allow_transfer: accept score files of other data (`config.score.allow_transfer`).
      model: the model name (`config.model.name`), recorded with every score file.
      label_noise: `config.data.label_noise` as a dict when it flips labels, else None.
      train_cfg: `config.train`, the score training's optimizer, batches and schedule.
      data_cfg: `config.data` (whether the training augments, `input_pipeline.augments`).
      record: the whole config as a plain dict, recorded in each score file's provenance.
    """

    seed: int
    num_seeds: int
    batch_size: int
    epochs: tuple[int, ...]
    train_epochs: int
    names: tuple[str, ...]
    forgetting: bool
    aum: bool
    dynamics: bool
    dynamics_window: int
    prototypes_per_class: int
    source_workdir: str
    allow_transfer: bool
    model: str
    label_noise: dict | None
    train_cfg: Any
    data_cfg: Any
    record: dict


@dataclasses.dataclass(frozen=True)
class PruneSpec:
    """The retraining plan and the selection of each kept set.

    Attributes:
      seed: the run seed (random and sampling strategies).
      strategy: the `pruning.STRATEGIES` name of the pruned runs (`config.prune.strategy`).
      runs: every planned run, in plan order (`plan.planned_runs`; names checked unique).
      scores: the score names that prune (`config.prune.scores`).
      fractions, offsets: `config.prune.fractions` and `config.prune.offsets`.
      features: the features file the feature strategies select on ('features@E'); '' when the
        strategy does not select on features.
      num_score_seeds: seeds averaged from each score file (0: all).
      ccs_beta: the hardest share CCS cuts first.
    """

    seed: int
    strategy: str
    runs: tuple[PlannedRun, ...]
    scores: tuple[str, ...]
    fractions: tuple[float, ...]
    offsets: tuple[int, ...]
    features: str
    num_score_seeds: int
    ccs_beta: float


@dataclasses.dataclass(frozen=True)
class RetrainSpec:
    """The retrainings of a run, one per planned run.

    Attributes:
      seed: the run seed.
      num_seeds: R, fresh seeds per run (`config.retrain.num_seeds`).
      budget: 'steps' (the full data's steps, the paper's protocol) or 'epochs' (the kept set's).
      stack: 'auto', 'on' or 'off': runs of equal-size kept sets train as one (`stacked`).
      train_cfg: `config.train` (epochs, batch sizes, optimizer, seed axis, mesh).
      data_cfg: `config.data` (whether the training augments).
      label_noise: the share of flipped labels, recorded in each result.
      settings: the config sections that decide a retraining besides its kept set, as plain dicts
        without the fields that change no result (`fingerprint.TRAINING_SECTIONS` less
        `workdir.NEUTRAL_FIELDS`).
      curve: record each seed's test accuracy after every epoch (`config.retrain.curve`).
      target_accuracy: > 0 ends a retraining once every seed reaches this test accuracy
        (`config.retrain.target_accuracy`).
    """

    seed: int
    num_seeds: int
    budget: str
    stack: str
    train_cfg: Any
    data_cfg: Any
    label_noise: float
    settings: dict
    curve: bool = False
    target_accuracy: float = 0.0


@dataclasses.dataclass(frozen=True)
class Specs:
    """The specs of one run, as `config_check.validate` returns them."""

    score: ScoreSpec
    prune: PruneSpec
    retrain: RetrainSpec
