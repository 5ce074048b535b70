"""The crossover study at each scale; see experiments/crossover.py.

Per data size N, one K-seed score run computes every score that ranks the examples (EL2N and
GraNd at an early epoch, Dyn-Unc over the score training); every pruned fraction then keeps the
hardest, the easiest and a random subset, each retrained R times for as many steps as that N's
full-data training. The number of epochs falls as N grows, so that every size trains for a
similar number of steps and the small sizes are not left undertrained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from configs.studies import scales


@dataclasses.dataclass(frozen=True)
class Size:
    """One data size: N, the epochs of its full-data training, and the scores ranked at it
    (empty: every score of the scale)."""

    num_examples: int
    num_epochs: int
    scores: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CrossoverScale:
    """Settings of the study at one scale.

    Attributes:
      sizes: the data sizes, smallest first; each a prefix of the training split in its own
        order (the first N images).
      prune_fractions: fractions of N removed.
      scores: the scores ranked hardest-first and easiest-first (the first one is the study's
        main score: the phase diagram's first panel, the README's number).
      num_score_seeds: K initializations averaged by every score.
      num_retrain_seeds: R retraining seeds per point.
      dynamics_window: epochs of Dyn-Unc's windows (it needs window + 1 epochs of score
        training).
      overrides: flattened config overrides of every run (the model, the test set).
    """

    sizes: tuple[Size, ...]
    prune_fractions: tuple[float, ...]
    scores: tuple[str, ...] = ("el2n@1", "grand@1", "dyn_unc")
    num_score_seeds: int = 4
    num_retrain_seeds: int = 3
    dynamics_window: int = 2
    overrides: Mapping = dataclasses.field(default_factory=dict)

    def size_scores(self, size: Size) -> tuple[str, ...]:
        """The scores ranked at `size`."""
        return size.scores or self.scores

    def base_config(self, scale: scales.Scale) -> ml_collections.ConfigDict:
        """The scale's base config with the study's seeds and overrides (per-size fields are
        each item's, `size_overrides`)."""
        c = scale.base_config()
        c.score.num_seeds = self.num_score_seeds
        c.retrain.num_seeds = self.num_retrain_seeds
        c.score.forgetting = False
        c.score.aum = False
        c.update_from_flattened_dict(dict(self.overrides))
        return c

    def size_overrides(self, size: Size) -> dict:
        """The flattened overrides of every run of `size`: N, its epochs, and the score
        training its scores need."""
        scores = self.size_scores(size)
        epochs = {name.partition("@")[2] for name in scores} - {""}
        dynamics = any("@" not in name for name in scores)
        score_epochs = max([int(e) for e in epochs] + [self.dynamics_window + 1 if dynamics else 0])
        return {
            "data.num_train_examples": size.num_examples,
            "train.num_epochs": size.num_epochs,
            # Each retraining lasts seconds: one checkpoint at its end (a resumed study redoes
            # at most the retraining it was stopped in).
            "train.checkpoint_every_epochs": size.num_epochs,
            "score.el2n_epochs": _epochs_of(scores, "el2n"),
            "score.grand_epochs": _epochs_of(scores, "grand"),
            "score.dynamics": dynamics,
            "score.dynamics_window": self.dynamics_window,
            "score.train_epochs": score_epochs,
        }


def _epochs_of(scores, kind: str) -> tuple[int, ...]:
    return tuple(sorted({int(s.partition("@")[2]) for s in scores if s.startswith(f"{kind}@")}))


# The CPU scale's model: the small CNN at a quarter of its width (8 and 16 channels, 64 hidden
# units). It trains at about 8,000 examples/s on 2 cores (the full width at about 1,500), which
# is what lets 5 data sizes x 4 fractions x 7 strategies x 3 seeds fit in about an hour.
NARROW_CNN = {"model.kwargs": {"width": 8, "hidden": 64}}

CROSSOVER_SCALES = {
    # CIFAR-10, ResNet18, 200 epochs at 50,000 images (GPU): 10 score seeds, scores at epoch 20,
    # the paper's 4 runs per point; smaller sizes train for the same number of steps.
    "paper": CrossoverScale(
        sizes=(
            Size(5_000, 2_000),
            Size(10_000, 1_000),
            Size(25_000, 400),
            Size(50_000, 200),
        ),
        prune_fractions=(0.3, 0.5, 0.7, 0.9),
        scores=("el2n@20", "grand@20", "dyn_unc"),
        num_score_seeds=10,
        num_retrain_seeds=4,
        dynamics_window=10,
    ),
    # Fashion-MNIST, the narrow small CNN, 4 score seeds, 3 runs per point, tested on all
    # 10,000 test images. The epochs give every size 240-940 steps of batch 128 (the smallest
    # sizes would stop short of fitting their examples at a fixed few epochs); the full 60,000
    # ranks EL2N only (its 7-strategy grid alone would take longer than the rest together).
    "cpu": CrossoverScale(
        sizes=(
            Size(2_500, 12),
            Size(5_000, 8),
            Size(10_000, 5),
            Size(20_000, 3),
            Size(60_000, 2, scores=("el2n@1",)),
        ),
        prune_fractions=(0.3, 0.5, 0.7, 0.9),
        overrides=NARROW_CNN,
    ),
    # Two sizes, two fractions, two runs per point, for tests.
    "smoke": CrossoverScale(
        sizes=(Size(128, 3), Size(256, 3, scores=("el2n@1",))),
        prune_fractions=(0.3, 0.7),
        scores=("el2n@1", "dyn_unc"),
        num_score_seeds=2,
        num_retrain_seeds=2,
        overrides={"data.num_test_examples": 200},
    ),
}
