"""The base config every `configs/*.py` file starts from: the paper's CIFAR-10 protocol.

Every field is documented once, here, on the line above it. One name per concept across configs,
code and metric keys. `config_check.validate` checks the values before anything runs; `smoke`
shrinks a config to a seconds-long CPU run with the same stages.

Usage:

    from datadiet_jax.pipeline.config_base import base_config, config_to_dict, smoke
    config = base_config()                  # CIFAR-10, ResNet18, 200 epochs
    config.data.name = "fashion_mnist"
    config = smoke(config)
    record = config_to_dict(config)         # what WORKDIR/config.json holds
"""

from __future__ import annotations

import json

import ml_collections
from ml_collections import config_dict

# Fields added after work directories were first written, with their defaults: a config.json or
# training record without one reads as its default (`artifacts.diff_keys`), so an earlier run
# resumes as the same run.
ADDED_FIELDS = {
    "data.image_key": None,
    "data.label_key": None,
    "data.inputs": "auto",
    "data.mean": [],
    "data.std": [],
    "data.num_classes": 0,
    "data.arrays": {"train": None, "train_labels": None, "test": None, "test_labels": None},
    "data.function": None,
    "data.hf": {"train": None, "test": None, "train_split": "train", "test_split": "test"},
    "model.kwargs": {},
    "model.smoke_width": 0,
    "model.train_arg": "",
    "score.logit_epochs": [],
    "score.feature_epochs": [],
    "score.prototypes_per_class": 1,
    "score.dynamics": False,
    "score.dynamics_window": 10,
    "prune.features": "",
    "retrain.stack": "auto",
    "retrain.curve": False,
    "retrain.target_accuracy": 0.0,
    "train.prune": {
        "schedule": "",
        "ratio": 0.5,
        "delta": 0.875,
        "fraction": 0.5,
        "at_epoch": 1,
        "score": "el2n",
        "strategy": "hardest",
        "num_groups": 10,
        "window_scale": 0.5,
    },
    "track": {"writers": ["tensorboard", "jsonl"]},
}

# What a rerun in the same work directory may change, decided field by field over this config
# (`workdir.check_config`; the table in docs/pipeline.md). Sections that a rerun may change
# because the stages after the scores follow their fingerprints: the kept sets (`prune`) and
# the retrainings (`retrain`); a retraining redoes itself when its own settings changed.
PLAN_SECTIONS = ("prune", "retrain")
# Fields that change no result, only where the data lies or how and in which pieces the same
# values are computed. A rerun may change them, and no record (config check, fingerprints, run
# identity) holds them, so changing one redoes nothing:
NEUTRAL_FIELDS = (
    # Where the dataset lies, and whether TFDS may download it (the data's content is the
    # source's, recorded in score files as `data_source`).
    "data.data_dir",
    "data.download",
    # Which program computes the same gradients (a max-pool's fast backward pass).
    "train.fast_backward",
    # On which devices, and how the K seeds share one program (vmap, unroll, map): the same
    # per-seed maths; results equal up to float rounding.
    "train.mesh",
    "train.seed_axis",
    # How many examples one evaluation or scoring pass holds: evaluation sums masked batches
    # (accuracy counts are exact, losses equal up to float rounding), and every score is per
    # example. These are the fix for an out-of-memory error in those passes.
    "train.eval_batch_size",
    "score.batch_size",
    # How often checkpoints are saved: a resumed training ends as an uninterrupted one does.
    "train.checkpoint_every_epochs",
    # Whether runs of equal-size kept sets train as one stacked training (each as on its own).
    "retrain.stack",
    # Whether each retraining's test accuracy is logged after every epoch (nothing it trains).
    "retrain.curve",
    # Where the run's scalars and histograms are written besides its own files.
    "track.writers",
)
# Every other field decides what a run computes (data, model, training, scores, seed), and a
# rerun that changes one is refused: it is a new run, in a new work directory. That includes
# score.workdir and score.allow_transfer (which scores prune), data.num_test_examples (the test
# set), and train.num_epochs and score.train_epochs (the schedule, the score training).


def base_config() -> ml_collections.ConfigDict:
    """Returns the paper-scale CIFAR-10 ResNet18 config (a GPU job)."""
    c = ml_collections.ConfigDict()
    # Run seed: every PRNG key and shuffle derives from it (`training/keys.py`).
    c.seed = 0
    c.data = _data()
    c.model = _model()
    c.train = _train()
    c.score = _score()
    c.prune = _prune()
    c.retrain = _retrain()
    c.track = _track()
    return c


def _data() -> ml_collections.ConfigDict:
    """The dataset, its size, augmentation and label noise."""
    d = ml_collections.ConfigDict()
    # Where the examples come from (`pipeline/sources.py`): a TFDS dataset name ('cifar10',
    # 'mnist:3.0.1'), the path of a prepared TFDS dataset directory (the folder holding
    # dataset_info.json, e.g. '~/tensorflow_datasets/my_data/1.0.0'), 'arrays' (the files of
    # data.arrays), 'function' (the arrays data.function returns) or 'hf' (Hugging Face / Arrow
    # data: data.hf).
    d.name = "cifar10"
    # TFDS data directory; None is TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
    d.data_dir = config_dict.placeholder(str)
    # Whether TFDS may download the dataset when it is not on disk.
    d.download = False
    # The inputs' TFDS feature, or their key in an .npz file or a function's split dict; None:
    # the TFDS dataset's supervised_keys, 'image' for arrays and functions.
    d.image_key = config_dict.placeholder(str)
    # The labels' TFDS feature (or .npz / split-dict key); None: supervised_keys, 'label'.
    d.label_key = config_dict.placeholder(str)
    # What the inputs are: 'auto' (by dtype and shape: [N, H, W(, C)] images, uint8 or float,
    # float [N, D] feature vectors, integer [N, T] token ids), 'images', 'features' or 'tokens'
    # (`pipeline/input_kinds.py`). uint8 images are normalized per channel (the dataset's
    # constants, else the training split's statistics), float images and features standardized
    # with the training split's mean and std (already standardized images come out unchanged),
    # token ids passed as int32 (the score functions get integer_inputs=True); all recorded in
    # the score files' provenance.
    d.inputs = "auto"
    # Your own normalization instead: the mean and std per channel (images; [0, 1] units for
    # uint8) or per feature, or one value for all, e.g. --config.data.mean='(0.5,)'
    # --config.data.std='(0.25,)'; mean 0 and std 1 keep float inputs as given. (): the
    # dataset's constants or the training split's statistics.
    d.mean = ()
    d.std = ()
    # Number of classes; 0: the source's (a TFDS ClassLabel, a function's 'num_classes'), else
    # the largest training label + 1, refusing classes below it that have no training example
    # and test labels beyond it (`pipeline/labels.py`); set it when empty classes are meant.
    d.num_classes = 0
    d.arrays = ml_collections.ConfigDict()
    # With name='arrays': the training split, an .npz file holding the inputs under image_key
    # and the labels under label_key, or an .npy file of the inputs alone. Rows are examples, in
    # the order the scores index them.
    d.arrays.train = config_dict.placeholder(str)
    # The .npy file of the training labels [N] (an .npy arrays.train only; None for an .npz).
    d.arrays.train_labels = config_dict.placeholder(str)
    # The test split and its labels, as arrays.train and arrays.train_labels.
    d.arrays.test = config_dict.placeholder(str)
    d.arrays.test_labels = config_dict.placeholder(str)
    # With name='function': 'package.module:function', called with no arguments; it returns
    # {'train': {'image': inputs [N, ...], 'label': labels [N] int}, 'test': {...}} and
    # optionally 'num_classes': int (the keys are image_key and label_key when set).
    d.function = config_dict.placeholder(str)
    d.hf = ml_collections.ConfigDict()
    # With name='hf' (`pipeline/hf_source.py`): a Hugging Face DatasetDict saved with
    # save_to_disk (its splits hf.train_split and hf.test_split), a Dataset saved with
    # save_to_disk, or .parquet / .arrow files (a path or a glob, read in sorted order). The
    # input column is image_key ('image': an Image feature, numbers or token ids per row), the
    # label column label_key ('label'); rows are examples, in the dataset's own order.
    d.hf.train = config_dict.placeholder(str)
    # The test split's own Dataset folder or files; None: hf.test_split of the hf.train folder.
    d.hf.test = config_dict.placeholder(str)
    # The splits of a DatasetDict folder used for training and testing.
    d.hf.train_split = "train"
    d.hf.test_split = "test"
    # Keep the first N training / test examples of the split's own order (0 keeps all).
    d.num_train_examples = 0
    d.num_test_examples = 0
    # Random crop and flip in training: 'auto' (for 32x32 images), 'on' (images only) or 'off'.
    d.augment = "auto"
    d.label_noise = ml_collections.ConfigDict()
    # Share of the training labels corrupted, in [0, 1].
    d.label_noise.fraction = 0.0
    # 'replace' (a uniformly random label, the paper's text) or 'permute' (labels shuffled among
    # the chosen examples, the authors' code).
    d.label_noise.mode = "replace"
    # Seed of the choice of the corrupted examples and of their new labels.
    d.label_noise.seed = 0
    return d


def _model() -> ml_collections.ConfigDict:
    """The model."""
    d = ml_collections.ConfigDict()
    # A registered model (`models.MODELS`, `models.register`) or an import path
    # `package.module:attribute`: a Flax Linen module class or factory, an NNX module class or
    # factory taking `rngs`, or a plain-function model (`scores/model_form/`).
    d.name = "resnet18"
    # Keyword arguments of the model's factory (`num_classes` is passed when it takes it). Set
    # them in a config file or as a dict, --config.model.kwargs='{"hidden": 32}' (replacing the
    # file's); a key the model does not take is refused before anything runs.
    d.kwargs = ml_collections.ConfigDict()
    # The model's base width, for models that take `width`; 0 keeps the model's default.
    d.width = 0
    # The width `:smoke` runs use where the model takes `width` and `width` is 0 (0: none);
    # models without a `width` argument ignore it.
    d.smoke_width = 0
    # A Linen model's mode flag when no convention names it: 'name' (train mode when true) or
    # 'not name' (train mode when false). '' finds it by convention: train, training,
    # is_training; not deterministic, use_running_average, eval, is_eval.
    d.train_arg = ""
    return d


def _train() -> ml_collections.ConfigDict:
    """Training: SGD with Nesterov momentum, its schedule, the seed axis, checkpoints."""
    d = ml_collections.ConfigDict()
    # Examples per step (per seed).
    d.batch_size = 128
    # Epochs of full-data training; pruned runs train for as many steps (see retrain.budget).
    d.num_epochs = 200
    # SGD with Nesterov momentum and L2 weight decay on all parameters.
    d.learning_rate = 0.1
    # Linear warm-up: the rate rises from 0 over this many epochs' share of the schedule (0 =
    # none, the paper's protocol).
    d.warmup_epochs = 0.0
    # Piecewise-constant schedule: x lr_drop_factor at each of these fractions of training.
    d.lr_drop_fractions = (0.3, 0.6, 0.8)
    d.lr_drop_factor = 0.2
    d.momentum = 0.9
    d.nesterov = True
    d.weight_decay = 5e-4
    # How the K seeds share one jitted step: 'auto' (vmap on accelerators, unroll on CPU),
    # 'vmap', 'unroll' or 'map' (`scores/seed_axis.py`). A rerun may change it.
    d.seed_axis = "auto"
    # The backward pass: 'auto' (on CPU, max-pools get a fast gradient, the same values;
    # `train.fast_backward`), 'on' or 'off'. Not part of a run's identity.
    d.fast_backward = "auto"
    # Devices: 'auto' (the K seeds over a ('seed', 'data') mesh: seeds = gcd(K, devices), data =
    # the largest divisor of the rest that divides batch_size; on 8 devices K=10 -> 2x4, K=4 ->
    # 4x2, K=1 -> 1x8), 'off' (one device) or 'SEEDSxDATA', e.g. '2x4' (`train_mesh`). Results
    # equal one device's up to float rounding; not part of a run's identity.
    d.mesh = "auto"
    # Epochs between checkpoints (the score epochs and the end are always saved). A rerun may
    # change it.
    d.checkpoint_every_epochs = 10
    # Examples per evaluation batch (test accuracy, the fit check of every retraining). A rerun
    # may change it (`NEUTRAL_FIELDS`), e.g. to fit memory.
    d.eval_batch_size = 500
    d.prune = _train_prune()
    return d


def _train_prune() -> ml_collections.ConfigDict:
    """A pruning schedule inside each retraining (`training/prune_schedules.py`,
    docs/pipeline.md#pruning-during-training); the score training always sees every example."""
    d = ml_collections.ConfigDict()
    # '' (off), 'infobatch', 'rs2', 'seta' or 'prune_continue'. Each seed prunes by its own
    # state. retrain.budget 'steps' keeps the step budget (more, shorter rounds); 'epochs'
    # trains num_epochs rounds, so the training ends early: the wall-clock saving.
    d.schedule = ""
    # InfoBatch: the share r of the below-mean-loss examples dropped each round (their kept
    # ones weigh 1 / (1 - r)), in [0, 0.9]; SeTa: 1 - r is the share drawn each round (at most
    # 0.9); prune_continue: the share of the examples pruned,
    # in [0, 1) (as prune.fractions).
    d.ratio = 0.5
    # InfoBatch: rounds starting at or after this share of the step budget use all examples
    # (SeTa: a random share 1 - ratio of all examples).
    d.delta = 0.875
    # RS2: the share of the examples in each round, in (0, 1].
    d.fraction = 0.5
    # prune_continue: full-data epochs before the seed scores its examples and prunes.
    d.at_epoch = 1
    # prune_continue: the seed's own score, 'el2n', 'loss' or 'grand' (eval mode).
    d.score = "el2n"
    # prune_continue: the selection strategy (prune.strategy's names, not the feature ones).
    d.strategy = "hardest"
    # SeTa: the loss groups of each round, and the share of them in its sliding window.
    d.num_groups = 10
    d.window_scale = 0.5
    return d


def _score() -> ml_collections.ConfigDict:
    """The K-seed score training and the scores it computes."""
    d = ml_collections.ConfigDict()
    # K: independently initialized and ordered seeds the scores are averaged over.
    d.num_seeds = 10
    # Epochs at which EL2N and GraNd are computed (0 = at initialization). Scores use BatchNorm
    # in eval mode (running statistics), as the paper's code does.
    d.el2n_epochs = (20,)
    d.grand_epochs = (0, 20)
    # Count forgetting events during the score training (Toneva et al., 2019).
    d.forgetting = True
    # Track the area under the margin (Pleiss et al., 2020: the assigned-label logit minus the
    # largest other logit, averaged over the training presentations), written NEGATED so that
    # higher = harder like every score; needs at least one training epoch.
    d.aum = True
    # Epochs at which the scores of one eval-mode forward pass are computed besides EL2N: entropy,
    # least_confidence and margin (DeepCore's uncertainty family) and loss; names 'entropy@E', ...
    d.logit_epochs = ()
    # Epochs at which the penultimate features (the input of the last linear layer) are taken, in
    # eval mode: 'features@E' for the selectors (prune.strategy 'kcenter', 'herding', 'd2'), and
    # the feature scores 'moderate@E' (Moderate-DS) and 'prototype@E' (prototypicality).
    d.feature_epochs = ()
    # k-means prototypes per class of the 'prototype' score (1: the class mean direction).
    d.prototypes_per_class = 1
    # Track the training-dynamics scores 'dyn_unc' (Dyn-Unc), 'tdds' (TDDS) and 'dual' (DUAL)
    # over the score training, from the true-label probability in windows of
    # `dynamics_window` epochs; the score training must last at least that many epochs.
    d.dynamics = False
    d.dynamics_window = 10
    # Epochs the score stage trains; -1 trains up to the last score epoch.
    d.train_epochs = -1
    # Examples per scoring batch. A rerun may change it (`NEUTRAL_FIELDS`), e.g. to fit memory.
    d.batch_size = 256
    # Prune with the score files of another run (its work directory) instead of computing them.
    # They must be of the same dataset, split, N and label noise, and of the same model, seed
    # and number of score seeds unless allow_transfer is True (scores of another model or seed,
    # e.g. score transfer across architectures, are then used on purpose, with a warning naming
    # what differs).
    d.workdir = config_dict.placeholder(str)
    d.allow_transfer = False
    return d


def _prune() -> ml_collections.ConfigDict:
    """Which scores prune, how, how much, and the baselines."""
    d = ml_collections.ConfigDict()
    # The scores that prune: 'el2n@20', 'grand@0', 'forgetting', 'aum', ...
    d.scores = ("el2n@20", "grand@20")
    # A strategy of `scores.pruning.STRATEGIES` ('hardest', 'offset', 'ccs', ...).
    d.strategy = "hardest"
    # Fractions of the training set REMOVED, each in [0, 1).
    d.fractions = (0.3, 0.5, 0.7)
    # For 'offset': numbers of hardest examples skipped before the kept window.
    d.offsets = (0,)
    # For 'ccs': the hardest fraction dropped before the strata are sampled.
    d.ccs_beta = 0.1
    # For the strategies that select on features ('kcenter', 'herding', 'd2'): the features file,
    # 'features@E' (one of config.score.feature_epochs); '' takes the only feature epoch. As a
    # name of config.prune.scores, 'features@E' prunes with the features alone.
    d.features = ""
    # Baselines trained beside the pruned runs: a random subset at each fraction, the full data.
    d.random_baseline = True
    d.full_baseline = True
    # Prune with the mean of the first k seeds of each score file; 0 (the default) uses all K
    # (the seed-count study, experiments/seedcount.py).
    d.num_score_seeds = 0
    return d


def _retrain() -> ml_collections.ConfigDict:
    """The retraining of each kept subset."""
    d = ml_collections.ConfigDict()
    # R fresh seeds trained on each kept subset.
    d.num_seeds = 4
    # 'steps' (as many steps as full-data training, the paper's protocol) or 'epochs' (as many
    # epochs of the kept subset; with train.prune.schedule, as many rounds of the schedule, so
    # a pruned training ends early and its learning rate follows the rounds).
    d.budget = "steps"
    # Test accuracy of every seed after every epoch, in each run's metrics.jsonl (a learning
    # curve; evaluation time is not counted in the epoch's seconds).
    d.curve = False
    # > 0: a retraining ends at the first epoch end where every seed's test accuracy reaches
    # this (a time-to-accuracy budget; the budget above stays its limit). 0: train the budget.
    d.target_accuracy = 0.0
    # Train the runs whose kept sets have one size as one stacked training on the seed axis
    # (each member with its own kept set, init and data order, as in its own run): 'on', 'off',
    # or 'auto' (on with an accelerator; off on CPU, where it measured no faster).
    d.stack = "auto"
    return d


def _track() -> ml_collections.ConfigDict:
    """Where a run's training and score records go besides its own files (`training.tracking`)."""
    d = ml_collections.ConfigDict()
    # Writers of every training's per-epoch scalars (each seed's loss and accuracy, the learning
    # rate, examples/s) and each score's histograms, under WORKDIR/tracking/: 'tensorboard'
    # (event files, `tensorboard --logdir WORKDIR/tracking/tensorboard`) and 'jsonl'
    # (records.jsonl, one JSON line per record); () tracks nothing. Changes no other output, so
    # a resumed run may change it.
    d.writers = ("tensorboard", "jsonl")
    return d


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to a seconds-long CPU run with the same stages (tests use it)."""
    c.data.num_train_examples = 128
    c.data.num_test_examples = 100
    c.model.smoke_width = 8
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


def config_to_dict(config) -> dict:
    """A JSON-normal dict of the config (tuples become lists): what `config.json` holds."""
    return json.loads(json.dumps(config.to_dict(), default=list))
