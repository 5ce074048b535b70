"""The sizes of the paper's studies: paper (GPU), cpu (a 2-core CPU in about an hour), smoke.

`SCALES` holds each scale's base config and the settings of Figures 1 and 2; the other studies'
per-scale settings are `fig3.FIG3`, `fig4.FIG4`, `seedcount.SEEDCOUNT`, `transfer.TRANSFER`,
`methods.METHODS_SCALES`, `speedup.SPEEDUP_SCALES` and `crossover.CROSSOVER_SCALES` beside this
file. The figure scripts (`experiments/`) read them; `make reproduce-<fig> SCALE=...` picks one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import ml_collections

from configs import cifar10, fashion_mnist


@dataclasses.dataclass(frozen=True)
class Scale:
    """One size of the reproduction.

    Attributes:
      name: 'paper', 'cpu' or 'smoke'; the runs go to RUNS/<name>/.
      base_config: returns the config every item starts from (data, model, training, score
        seeds and score epochs shared by both figures, retraining seeds, label-noise mode).
      noise_fractions: label-noise levels of Figure 2 (the first must be 0, the clean run that
        Figure 1 shares).
      noisy_overrides: overrides applied to every item of a noisy level (e.g. fewer scores).
      fig2_score: the score that orders the examples in Figure 2.
      fig2_keep_fraction: window length as a fraction of N.
      fig2_offset_fractions: offsets (hardest examples skipped) as fractions of N, floored.
      fig1_methods: scores of the pruning panel of Figure 1 (random and full are added).
      fig1_prune_fractions: pruned fractions of that panel.
      fig1_epoch_kinds: score kinds of the epoch panel (every epoch the base config scores).
      fig1_epoch_prune_fraction: the fixed pruned fraction of the epoch panel.
    """

    name: str
    base_config: Callable[[], ml_collections.ConfigDict]
    noise_fractions: tuple[float, ...]
    fig2_score: str
    fig2_keep_fraction: float
    fig2_offset_fractions: tuple[float, ...]
    fig1_methods: tuple[str, ...]
    fig1_prune_fractions: tuple[float, ...]
    fig1_epoch_kinds: tuple[str, ...]
    fig1_epoch_prune_fraction: float
    noisy_overrides: Mapping = dataclasses.field(default_factory=dict)


def _paper_config() -> ml_collections.ConfigDict:
    c = cifar10.get_config()
    c.data.num_train_examples = 50_000  # all of CIFAR-10's train split; known without the data
    c.data.label_noise.mode = "permute"  # the authors' code
    c.score.num_seeds = 10
    c.score.el2n_epochs = (0, 1, 2, 5, 10, 20, 40)
    c.score.grand_epochs = (0, 1, 2, 5, 10, 20, 40)
    c.score.forgetting = True
    c.score.train_epochs = c.train.num_epochs  # forgetting counts events over the whole training
    c.retrain.num_seeds = 4
    return c


def _cpu_config() -> ml_collections.ConfigDict:
    c = fashion_mnist.get_config()
    c.data.num_train_examples = 10_000
    c.data.num_test_examples = 0  # the full 10,000-image test split
    c.data.label_noise.mode = "permute"
    # 6 epochs bring the small CNN close to convergence; epoch 1 (17% of training) is the
    # nearest whole epoch to the paper's scoring point (10%).
    c.train.num_epochs = 6
    c.score.num_seeds = 4
    c.score.el2n_epochs = (0, 1, 2)
    c.score.grand_epochs = (0, 1, 2)
    c.score.forgetting = True
    c.score.train_epochs = 6  # forgetting counts events over the whole training
    c.retrain.num_seeds = 2
    return c


def _smoke_config() -> ml_collections.ConfigDict:
    c = fashion_mnist.get_config("smoke")
    c.data.num_train_examples = 256
    c.data.num_test_examples = 200
    c.data.label_noise.mode = "permute"
    c.score.el2n_epochs = (0, 1)
    c.score.grand_epochs = (0, 1)
    c.score.train_epochs = 2
    c.retrain.num_seeds = 2
    return c


SCALES: dict[str, Scale] = {
    # CIFAR-10, ResNet18, 200 epochs: a GPU job. Figure 2 as in the paper (EL2N of 10 seeds at
    # epoch 10, 40% kept, offsets up to 60% of N, 4 runs per point, 10% permuted labels);
    # Figure 1 with EL2N at epoch 20, GraNd at init and at epoch 20, and forgetting.
    "paper": Scale(
        name="paper",
        base_config=_paper_config,
        noise_fractions=(0.0, 0.1),
        noisy_overrides={
            "score.el2n_epochs": (10,),
            "score.grand_epochs": (),
            "score.forgetting": False,
            "score.train_epochs": -1,
        },
        fig2_score="el2n@10",
        fig2_keep_fraction=0.4,
        fig2_offset_fractions=(0, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6),
        fig1_methods=("el2n@20", "grand@0", "grand@20", "forgetting"),
        fig1_prune_fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        fig1_epoch_kinds=("el2n", "grand"),
        fig1_epoch_prune_fraction=0.5,
    ),
    # Fashion-MNIST, small CNN, first 10,000 training images, 6 epochs: a 2-core CPU job.
    "cpu": Scale(
        name="cpu",
        base_config=_cpu_config,
        noise_fractions=(0.0, 0.1),
        # Figure 2 needs only EL2N from the noisy run; GraNd of 4 seeds costs ~1 min an epoch.
        noisy_overrides={"score.grand_epochs": ()},
        fig2_score="el2n@1",
        fig2_keep_fraction=0.4,
        fig2_offset_fractions=(0, 0.01, 0.03, 0.1, 0.3, 0.6),
        fig1_methods=("el2n@1", "grand@0", "grand@1", "forgetting"),
        fig1_prune_fractions=(0.3, 0.6, 0.8),
        fig1_epoch_kinds=("el2n", "grand"),
        fig1_epoch_prune_fraction=0.6,
    ),
    # The same stages on 256 examples, for tests.
    "smoke": Scale(
        name="smoke",
        base_config=_smoke_config,
        noise_fractions=(0.0, 0.1),
        fig2_score="el2n@1",
        fig2_keep_fraction=0.4,
        fig2_offset_fractions=(0, 0.1, 0.6),
        fig1_methods=("el2n@1", "grand@0", "grand@1", "forgetting"),
        fig1_prune_fractions=(0.6, 0.8),
        fig1_epoch_kinds=("el2n", "grand"),
        fig1_epoch_prune_fraction=0.6,
    ),
}


def scale_settings(name: str | Scale, table: Mapping, study: str):
    """(Scale, its entry of a study's per-scale `table`); an unknown scale is refused by name."""
    scale = get_scale(name)
    if scale.name not in table:
        raise ValueError(f"{study} has no settings for scale {scale.name!r}; use {sorted(table)}")
    return scale, table[scale.name]


def get_scale(name: str | Scale) -> Scale:
    """Returns the registered scale `name` (a `Scale` is returned as is); raises ValueError
    listing the valid names."""
    if isinstance(name, Scale):
        return name
    if name not in SCALES:
        raise ValueError(f"Unknown scale {name!r}; use one of {sorted(SCALES)}.")
    return SCALES[name]
