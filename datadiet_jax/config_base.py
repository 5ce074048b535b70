"""The base config every `configs/*.py` file starts from: the paper's CIFAR-10 protocol.

Fields (one name per concept across configs, code and metric keys):
  seed: run seed; every PRNG key and shuffle derives from it.
  data.name / data_dir / download: TFDS dataset, its data directory, and whether TFDS may download.
  data.num_train_examples / num_test_examples: keep the first N examples (0 keeps all).
  data.augment: 'auto' (crop + flip for 32x32 inputs), 'on' or 'off'.
  data.label_noise: fraction, mode ('replace' a uniformly random label, or 'permute' labels among
    the chosen examples) and seed.
  model.name / width: registered model and its base width (0 keeps the model's default).
  train: batch size, epochs of full-data training, SGD with Nesterov momentum, weight decay, the
    piecewise-constant schedule (x lr_drop_factor at lr_drop_fractions of training), an optional
    linear warm-up (warmup_epochs: the rate rises from 0 over that many epochs' share of the
    schedule; 0 = none, the paper's protocol), seed_axis
    ('auto', 'vmap', 'unroll', 'map'; auto = vmap on accelerators, unroll on CPU) and the
    checkpoint period.
  score: K score seeds; epochs at which EL2N and GraNd are computed (0 = at initialization);
    whether forgetting is tracked; whether AUM (area under the margin, Pleiss et al. 2020: the
    assigned-label logit minus the largest other logit, averaged over the training presentations)
    is tracked, written as the NEGATED AUM so that higher = harder like every score (needs at
    least one training epoch); how long the score stage trains (-1 = up to the last score
    epoch). Scores use BatchNorm in eval mode (running statistics), as the paper's code does.
  score.workdir / allow_transfer: prune with the score files of another run (its work
    directory) instead of computing them; its score files must be of the same dataset, split,
    N and label noise, and of the same model, seed and number of score seeds unless
    score.allow_transfer is True (scores of another model or seed, e.g. score transfer across
    architectures, are then used on purpose, with a warning naming what differs).
  prune: which scores prune ('el2n@20', 'grand@0', 'forgetting', 'aum', ...), the strategy, the
    pruned fractions, the offsets (for 'offset': numbers of hardest examples skipped before the kept
    window), CCS beta, and the baselines to train.
  prune.num_score_seeds: prune with the mean of the first k seeds of each score file (0, the
    default, uses all K); for the seed-count study (experiments/seedcount.py).
  retrain: R fresh seeds per kept subset; budget 'steps' (same steps as full-data training, the
    paper's protocol) or 'epochs' (same epochs).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
    """Returns the paper-scale CIFAR-10 ResNet18 config (a GPU job)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(
        dict(
            name="cifar10",
            data_dir=config_dict.placeholder(str),
            download=False,
            num_train_examples=0,
            num_test_examples=0,
            augment="auto",
            label_noise=dict(fraction=0.0, mode="replace", seed=0),
        )
    )
    c.model = ml_collections.ConfigDict(dict(name="resnet18", width=0))
    c.train = ml_collections.ConfigDict(
        dict(
            batch_size=128,
            num_epochs=200,
            learning_rate=0.1,
            warmup_epochs=0.0,
            lr_drop_fractions=(0.3, 0.6, 0.8),
            lr_drop_factor=0.2,
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
            seed_axis="auto",
            checkpoint_every_epochs=10,
            eval_batch_size=500,
        )
    )
    c.score = ml_collections.ConfigDict(
        dict(
            num_seeds=10,
            el2n_epochs=(20,),
            grand_epochs=(0, 20),
            forgetting=True,
            aum=True,
            train_epochs=-1,
            batch_size=256,
            workdir=config_dict.placeholder(str),
            allow_transfer=False,
        )
    )
    c.prune = ml_collections.ConfigDict(
        dict(
            scores=("el2n@20", "grand@20"),
            strategy="hardest",
            fractions=(0.3, 0.5, 0.7),
            offsets=(0,),
            ccs_beta=0.1,
            random_baseline=True,
            full_baseline=True,
            num_score_seeds=0,
        )
    )
    c.retrain = ml_collections.ConfigDict(dict(num_seeds=4, budget="steps"))
    return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to a seconds-long CPU run with the same stages (tests use it)."""
    c.data.num_train_examples = 128
    c.data.num_test_examples = 100
    c.model.width = 8
    c.train.batch_size = 32
    c.train.num_epochs = 2
    c.train.checkpoint_every_epochs = 1
    c.train.eval_batch_size = 100
    c.score.num_seeds = 2
    c.score.el2n_epochs = (1,)
    c.score.grand_epochs = (0, 1)
    c.score.batch_size = 64
    c.prune.scores = ("el2n@1",)
    c.prune.fractions = (0.5,)
    c.retrain.num_seeds = 1
    return c
