"""The time-to-accuracy study of pruning during training at each scale; see
experiments/speedup.py.

Every arm trains R seeds from the same initializations (the retraining's keys depend only on the
config seed and the seed index) on the same data, for `train.num_epochs` epochs or rounds
(`retrain.budget='epochs'`), logging each seed's test accuracy after every epoch
(`retrain.curve=True`): the full data, the schedules that prune while they train
(`config.train.prune`) and static prune-then-retrain on the EL2N scores of one short score run.
The score run trains as many seeds as each arm (K = R) at the same batch size, so its recorded
seconds and steps add to a static arm's on the footing of its R-seed retraining.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from configs.studies import scales

# Arm kinds besides the schedules of `config.train.prune.schedule`.
FULL = "full"
STATIC = "static"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One compared training.

    Attributes:
      name: its name in tables and item folders ('infobatch_r0.5').
      kind: 'full', 'static' or a schedule ('infobatch', 'rs2', 'seta', 'prune_continue').
      level: the pruning level shown in tables: the schedule's `ratio` (InfoBatch, SeTa,
        prune and continue), RS2's `fraction` (the share kept per round) or the static
        arm's pruned fraction; 0 for the full data.
      settings: the `config.train.prune` fields of a schedule ({'ratio': 0.5}).
    """

    name: str
    kind: str
    level: float = 0.0
    settings: Mapping = dataclasses.field(default_factory=dict)


def _schedule(kind: str, key: str, level: float, **extra) -> Arm:
    short = {"prune_continue": "continue"}.get(kind, kind)
    tag = "f" if key == "fraction" else "r"
    return Arm(f"{short}_{tag}{level:g}", kind, level, {key: level, **extra})


def _static(fraction: float) -> Arm:
    return Arm(f"static_f{fraction:g}", STATIC, fraction)


def arms(levels: Mapping[str, tuple[float, ...]], score_epoch: int) -> tuple[Arm, ...]:
    """The full data, then each kind at its levels.

    Args:
      levels: {'infobatch': ratios, 'rs2': fractions kept per round, 'seta': ratios,
        'prune_continue': ratios, 'static': fractions pruned}.
      score_epoch: prune and continue scores and prunes after this many full-data rounds (the
        static arm's score epoch).
    """
    out = [Arm(FULL, FULL)]
    out += [_schedule("infobatch", "ratio", r) for r in levels.get("infobatch", ())]
    out += [_schedule("rs2", "fraction", f) for f in levels.get("rs2", ())]
    out += [_schedule("seta", "ratio", r) for r in levels.get("seta", ())]
    out += [
        _schedule("prune_continue", "ratio", r, at_epoch=score_epoch, score="el2n")
        for r in levels.get("prune_continue", ())
    ]
    out += [_static(f) for f in levels.get(STATIC, ())]
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class SpeedupScale:
    """Settings of the study at one scale.

    Attributes:
      arms: the compared trainings (`arms`).
      score_epoch: the epoch of the static arms' EL2N scores (the score run trains this long).
      num_seeds: R, the seeds of every arm, and K, the seeds of the score run.
      delta: InfoBatch's and SeTa's annealing point: rounds starting at or after this share of
        `train.num_epochs` use the full data (InfoBatch: the ratio of its last, full-data epochs).
      num_examples: N (0: the scale's).
      overrides: further flattened config overrides.
    """

    arms: tuple[Arm, ...]
    score_epoch: int
    num_seeds: int = 3
    delta: float = 0.875
    num_examples: int = 0
    overrides: Mapping = dataclasses.field(default_factory=dict)

    def base_config(self, scale: scales.Scale) -> ml_collections.ConfigDict:
        """The scale's base config with this study's N, seeds, score run and retraining budget."""
        c = scale.base_config()
        if self.num_examples:
            c.data.num_train_examples = self.num_examples
        c.score.num_seeds = self.num_seeds
        c.score.el2n_epochs = (self.score_epoch,)
        c.score.grand_epochs = ()
        c.score.logit_epochs = ()
        c.score.feature_epochs = ()
        c.score.forgetting = False
        c.score.aum = False
        c.score.dynamics = False
        c.score.train_epochs = -1  # up to the score epoch: the score run's whole cost
        c.retrain.num_seeds = self.num_seeds
        c.retrain.budget = "epochs"
        c.retrain.curve = True
        c.train.prune.delta = self.delta
        c.update_from_flattened_dict(dict(self.overrides))
        return c


# Pruning levels: InfoBatch at 0.3 and 0.5 (its paper's 0.5 saves about 40% on CIFAR-10), RS2
# keeping 0.5 and 0.25 of the data per round (50% and 75% of the steps saved), SeTa at its
# paper's 0.3 and 0.5, prune and continue and static pruning removing 0.3 and 0.5 of the
# examples. RS2's fractions are of the form 1/k: a round takes what is left of its permutation,
# so 0.7 would alternate rounds of 70% and 30% and save over an even number of rounds as much
# as 0.5.
LEVELS = {
    "infobatch": (0.3, 0.5),
    "rs2": (0.5, 0.25),
    "seta": (0.3, 0.5),
    "prune_continue": (0.3, 0.5),
    STATIC: (0.3, 0.5),
}

SPEEDUP_SCALES = {
    # CIFAR-10, ResNet18, 200 epochs (InfoBatch's setting), 3 seeds; EL2N at epoch 20 (the
    # paper's 10% of training) for the static arms and prune and continue (GPU).
    "paper": SpeedupScale(arms=arms(LEVELS, 20), score_epoch=20),
    # Fashion-MNIST, small CNN, the first 10,000 training images, 6 epochs, 3 seeds; EL2N after
    # epoch 1. delta 0.8: the last of the 6 rounds uses every example, as InfoBatch's last 25
    # of 200 epochs do (0.875 of 6 rounds would anneal none).
    "cpu": SpeedupScale(arms=arms(LEVELS, 1), score_epoch=1, delta=0.8),
    # 256 examples, 2 epochs, 2 seeds, one level per kind, for tests.
    "smoke": SpeedupScale(
        arms=arms({k: (0.5,) for k in LEVELS}, 1),
        score_epoch=1,
        num_seeds=2,
        delta=0.8,
    ),
}
