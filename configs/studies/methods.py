"""The cross-method benchmark at each scale; see experiments/methods.py.

A method is a pruning strategy applied to a score (or to the features, for the selectors). Every
method prunes with the files of one score run, which computes every score at once: the logit
scores and the features at the score epoch, the training-dynamics scores over the whole score
training. The figures' score run is not reused: it does not track the dynamics scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from configs.studies import scales


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method: its name in tables, its family (a panel of the figure), its
    strategy, and the score it takes ('' for a score-free strategy); `{epoch}` in `score` is
    the scale's score epoch."""

    name: str
    family: str
    strategy: str
    score: str = ""

    def score_name(self, epoch: int) -> str:
        return self.score.format(epoch=epoch)


# Each method with the strategy and score its paper uses; 'random' is the random baseline.
METHODS: tuple[Method, ...] = (
    Method("random", "baseline", "random"),
    Method("el2n", "error and gradient", "hardest", "el2n@{epoch}"),
    Method("grand", "error and gradient", "hardest", "grand@{epoch}"),
    Method("loss", "error and gradient", "hardest", "loss@{epoch}"),
    # DeepCore's uncertainty family: the least certain examples are kept.
    Method("entropy", "uncertainty", "hardest", "entropy@{epoch}"),
    Method("least_confidence", "uncertainty", "hardest", "least_confidence@{epoch}"),
    Method("margin", "uncertainty", "hardest", "margin@{epoch}"),
    Method("forgetting", "training dynamics", "hardest", "forgetting"),
    Method("aum", "training dynamics", "hardest", "aum"),
    # Coverage-centric coresets over AUM (Zheng et al., ICLR 2023, their CIFAR-10 setting).
    Method("ccs", "training dynamics", "ccs", "aum"),
    Method("dyn_unc", "training dynamics", "hardest", "dyn_unc"),
    Method("tdds", "training dynamics", "hardest", "tdds"),
    Method("dual", "training dynamics", "hardest", "dual"),
    # DUAL's Beta sampling of its score, the paper's choice at high pruning ratios.
    Method("dual_sampling", "training dynamics", "dual_sampling", "dual"),
    Method("moderate", "feature geometry", "moderate", "moderate@{epoch}"),
    Method("prototype", "feature geometry", "hardest", "prototype@{epoch}"),
    Method("kcenter", "feature geometry", "kcenter", "features@{epoch}"),
    Method("herding", "feature geometry", "herding", "features@{epoch}"),
    # D2 pruning's message passing of AUM over the features' nearest-neighbour graph.
    Method("d2", "feature geometry", "d2", "aum"),
)


@dataclasses.dataclass(frozen=True)
class MethodsScale:
    """Settings of the benchmark at one scale.

    Attributes:
      score_epoch: the epoch the logit scores, EL2N, GraNd and the features are taken at.
      prune_fractions: fractions of the training set removed.
      num_examples: N (0: the scale's).
      num_retrain_seeds: R retraining seeds per point.
      dynamics_window: epochs of the windows of the dynamics scores (DUAL and Dyn-Unc use 10
        of 200 epochs at paper scale).
    """

    score_epoch: int
    prune_fractions: tuple[float, ...]
    num_examples: int = 0
    num_retrain_seeds: int = 3
    dynamics_window: int = 10
    overrides: Mapping = dataclasses.field(default_factory=dict)

    def base_config(self, scale: scales.Scale) -> ml_collections.ConfigDict:
        """The scale's base config with this benchmark's N, score epochs and retraining seeds."""
        c = scale.base_config()
        if self.num_examples:
            c.data.num_train_examples = self.num_examples
        c.score.el2n_epochs = (self.score_epoch,)
        c.score.grand_epochs = (self.score_epoch,)
        c.score.logit_epochs = (self.score_epoch,)
        c.score.feature_epochs = (self.score_epoch,)
        c.score.forgetting = True
        c.score.aum = True
        c.score.dynamics = True
        c.score.dynamics_window = self.dynamics_window
        c.score.train_epochs = c.train.num_epochs  # the dynamics scores see the whole training
        c.retrain.num_seeds = self.num_retrain_seeds
        c.update_from_flattened_dict(dict(self.overrides))
        return c


METHODS_SCALES = {
    # CIFAR-10, ResNet18, 200 epochs, 10 score seeds, 4 retraining seeds (GPU).
    "paper": MethodsScale(score_epoch=20, prune_fractions=(0.3, 0.5, 0.7), num_retrain_seeds=4),
    # Fashion-MNIST, small CNN, 6 epochs, 4 score seeds, on the first 5,000 training images: each
    # retraining (3 seeds, as many steps as the full data) takes about 55 s on 2 cores and gives
    # a mean ± std over 3 runs per point.
    # Windows of 3 epochs: 4 of them in the 6 epochs of score training (3 for Dyn-Unc, which
    # needs an epoch after each window).
    "cpu": MethodsScale(
        score_epoch=1, prune_fractions=(0.3, 0.5, 0.7), num_examples=5_000, dynamics_window=3
    ),
    # 256 examples, one fraction, for tests; 3 epochs: one window of 2 and the epoch after it.
    "smoke": MethodsScale(
        score_epoch=1,
        prune_fractions=(0.5,),
        num_retrain_seeds=1,
        dynamics_window=2,
        overrides={"train.num_epochs": 3, "score.train_epochs": 3},
    ),
}
