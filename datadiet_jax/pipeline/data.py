"""Datasets in memory: the split's own order, input kinds, normalization, label checks, noise.

The example index is the position in the split as its source serves it (TFDS's order, an
array's rows; no re-sorting), so every score file maps back to the right example; a
`num_train_examples` limit keeps the first N examples of that order. Where the examples come
from is `sources.py`; how inputs are read and normalized (uint8 or float images [N, H, W, C],
float features [N, D], token ids [N, T]) is `input_kinds.py`; the label rules (no empty class
in an inferred range, no test label unseen in training) are `labels.py`. The normalization
constants are recorded in every score file's provenance.

Usage:

    from datadiet_jax.pipeline import data
    split = data.load_split("fashion_mnist", "train", num_examples=2000)
    images = split.model_inputs()                  # [N, 28, 28, 1] float32, normalized
    noisy = data.with_label_noise(split, 0.1, "permute", seed=0)
    own = data.split_from_arrays(images, labels)       # [N, H, W, C] uint8 or float, [N] int
    own_test = data.split_from_arrays(test_images, test_labels, split="test", train=own)
    train_split, test_split = data.load_splits(config.data)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from datadiet_jax.pipeline import input_kinds, sources
from datadiet_jax.pipeline import labels as label_rules
from datadiet_jax.pipeline.input_kinds import (  # noqa: F401  (also this module's names)
    INPUT_KINDS,
    NORMALIZATION,
    as_inputs,
    kind_of,
    normalize,
    prepare,
)
from datadiet_jax.training import input_pipeline, keys

NOISE_MODES = ("replace", "permute")
# The settings that messages name: on the command line, and in a notebook (`split_from_arrays`).
CLI_SETTINGS = {
    "inputs": "config.data.inputs",
    "normalization": "config.data.mean and config.data.std",
    "num_classes": "config.data.num_classes",
}
NOTEBOOK_SETTINGS = {
    "inputs": "split_from_arrays(kind=...)",
    "normalization": "split_from_arrays(normalization=...)",
    "num_classes": "split_from_arrays(num_classes=...)",
}


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory, in the dataset's own order.

    Attributes:
      inputs: [N, H, W, C] uint8 or float32 images, [N, D] float32 features or [N, T] int32
        token ids (`kind`, `input_kinds.kind_of`).
      labels: [N] int32 (possibly noisy; see `clean_labels`).
      index: [N] int64, the position of each example in the split.
      num_classes: number of classes.
      mean, std: normalization constants: [C] per channel (images), [D] per feature (features),
        [0] (tokens: none).
      clean_labels: [N] int32, the labels before any label noise.
      noisy_index: int64 indices of the examples chosen for label noise (empty when clean).
      tfds_id: [N] str, each example's TFDS id (None for arrays and functions).
      source: what the examples were read from, for provenance (`sources.Raw.record`; None for a
        TFDS dataset by name).
    """

    name: str
    split: str
    inputs: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    clean_labels: np.ndarray
    noisy_index: np.ndarray
    tfds_id: np.ndarray | None = None
    source: dict | None = None

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def kind(self) -> str:
        """'images' ([N, H, W, C]), 'features' ([N, D] float) or 'tokens' ([N, T] int)."""
        return kind_of(self.inputs)

    def model_inputs(self) -> np.ndarray:
        """The model's inputs `[N, ...]`: normalized float32 images or features, int32 tokens."""
        return prepare(self.inputs, self.mean, self.std)


def get_builder(name: str, data_dir: str | None, download: bool = False):
    """The TFDS builder of a name or dataset directory, failing fast (`sources.get_builder`)."""
    return sources.get_builder(name, data_dir, download)


def to_split(
    raw: sources.Raw,
    name: str,
    split: str,
    *,
    kind: str = "auto",
    normalization: tuple | None = None,
    num_classes: int = 0,
    settings: dict | None = None,
    own: bool = False,
) -> Split:
    """A `Split` of a source's `Raw` split: inputs as their kind holds them, their normalization.

    Args:
      raw: what the source read; name: the dataset's name (provenance); split: e.g. 'train'.
      kind: `config.data.inputs` ('auto' or one of `INPUT_KINDS`).
      normalization: (mean, std) to normalize with (the test split takes the training split's);
        None: the dataset's constants (uint8 images), else the statistics of this split
        (`input_kinds.normalization`).
      num_classes: the number of classes; 0: the source's.
      settings: the names messages give (`CLI_SETTINGS`, the default, or `NOTEBOOK_SETTINGS`).
      own: `normalization` is the user's own (`config.data.mean`/`std`): it replaces a
        dataset's constants too.
    """
    settings = settings or CLI_SETTINGS
    inputs = as_inputs(raw.inputs, kind, f"{name}:{split}", settings["inputs"])
    mean, std = input_kinds.normalization(
        inputs, name, split, normalization, settings["normalization"], own
    )
    return Split(
        name=name,
        split=split,
        inputs=inputs,
        labels=raw.labels,
        index=np.arange(len(raw.labels), dtype=np.int64),
        num_classes=int(num_classes or raw.num_classes),
        mean=mean,
        std=std,
        clean_labels=raw.labels,
        noisy_index=np.zeros((0,), np.int64),
        tfds_id=raw.tfds_id,
        source=raw.record,
    )


def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    num_examples: int | None = None,
    normalization: tuple | None = None,
) -> Split:
    """Loads a TFDS split into memory in the dataset's own order.

    Args:
      name: TFDS dataset name, e.g. 'fashion_mnist', 'cifar10', or a prepared dataset directory.
      split: 'train' or 'test' (any split the dataset has).
      data_dir: TFDS data directory; None means TFDS's default.
      download: let TFDS download the dataset when it is missing.
      num_examples: keep only the first `num_examples` examples (None or 0 keeps all).
      normalization: (mean [C], std [C]) to normalize with, for a dataset without constants in
        `NORMALIZATION`: the test split takes the training split's (`load_splits`). None: the
        dataset's constants, else the statistics of this split itself.

    Returns:
      A `Split` with `images [N, H, W, C] uint8`, `labels [N] int32` and `tfds_id [N]`.
    """
    raw = sources.read_tfds(
        name, split, data_dir=data_dir, download=download, num_examples=num_examples or 0
    )
    return to_split(raw, name, split, normalization=normalization)


def split_from_arrays(
    inputs,
    labels,
    *,
    name: str = "arrays",
    split: str = "train",
    num_classes: int = 0,
    normalization: tuple | None = None,
    kind: str = "auto",
    train: Split | None = None,
) -> Split:
    """A `Split` of in-memory arrays, in their own row order, as the pipeline builds one.

    Args:
      inputs: `[N, H, W, C]` (or `[N, H, W]`) images, uint8 pixels or float values of any scale
        (already normalized ones included), `[N, D]` float features or `[N, T]` integer token
        ids (`input_kinds`).
      labels: `[N]` integer class labels >= 0.
      name, split: what provenance calls them.
      num_classes: 0 takes the largest label + 1, refusing classes below it without an
        example (`labels.py`); given, it allows empty classes.
      normalization: (mean, std) per channel or feature (or scalars) to use; None: the
        statistics of these inputs (images per channel, features per feature; none for tokens).
      kind: 'auto' (by shape and dtype), 'images', 'features' or 'tokens'.
      train: the training split of a test split: its normalization, number of classes and kind
        are taken, and a test label that never occurs in it is refused (below a given number
        of classes, logged with its rows).
    Raises:
      ValueError: one line for inputs of no kind, labels that break the rules of `labels.py`,
        or test inputs shaped unlike `train`'s.
    """
    where, setting = f"{name}:{split}", NOTEBOOK_SETTINGS["num_classes"]
    labels = sources.checked_labels(np.asarray(inputs), labels, where)
    if train is not None:
        normalization = (train.mean, train.std) if normalization is None else normalization
        num_classes = num_classes or train.num_classes
        kind = train.kind if kind == "auto" else kind
    else:
        num_classes = label_rules.num_classes_of(labels, num_classes, where, setting)
    raw = sources.Raw(np.asarray(inputs), labels, num_classes, None, None)
    out = to_split(
        raw, name, split, kind=kind, normalization=normalization, settings=NOTEBOOK_SETTINGS
    )
    if train is None:
        label_rules.check_labels(labels, num_classes, where, setting)
    else:
        _same_inputs(train, out, name)
        label_rules.check_test_labels(labels, train.labels, num_classes, where, setting)
    return out


def _same_inputs(train: Split, test: Split, name: str) -> None:
    """Refuses test inputs of another dtype or shape per example than the training inputs."""
    if (test.inputs.dtype, test.inputs.shape[1:]) != (train.inputs.dtype, train.inputs.shape[1:]):
        raise ValueError(
            f"{name}: the test inputs are {test.inputs.dtype} {test.inputs.shape[1:]} per "
            f"example, the training inputs {train.inputs.dtype} {train.inputs.shape[1:]}; give "
            "both splits the same shape and dtype."
        )


def label_noise(
    labels: np.ndarray, num_classes: int, fraction: float, mode: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupts the labels of a random `fraction` of the examples.

    Decision: two modes. 'replace' draws a uniformly random label for each chosen example (the
    paper's text; it may coincide with the true label). 'permute' shuffles the labels among the
    chosen examples (the authors' code).

    Args:
      labels: [N] int labels.
      num_classes: number of classes.
      fraction: share of examples to corrupt, in [0, 1].
      mode: 'replace' or 'permute'.
      seed: integer seed; the same seed gives the same corruption.

    Returns:
      (noisy_labels [N] int32, chosen [M] int64 sorted indices of the corrupted examples).
    """
    if mode not in NOISE_MODES:
        raise ValueError(f"Unknown label-noise mode {mode!r}; use one of {NOISE_MODES}.")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"Label-noise fraction {fraction} is outside [0, 1].")
    labels = np.asarray(labels, np.int32)
    rng = np.random.default_rng(np.random.SeedSequence([seed, keys.LABEL_NOISE]))
    n = len(labels)
    chosen = np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False)).astype(np.int64)
    noisy = labels.copy()
    if mode == "replace":
        noisy[chosen] = rng.integers(0, num_classes, size=len(chosen), dtype=np.int32)
    else:
        noisy[chosen] = labels[rng.permutation(chosen)]
    return noisy, chosen


def with_label_noise(split: Split, fraction: float, mode: str, seed: int) -> Split:
    """Returns `split` with noisy labels; `clean_labels` and `noisy_index` record what changed."""
    if fraction == 0:
        return split
    noisy, chosen = label_noise(split.clean_labels, split.num_classes, fraction, mode, seed)
    return dataclasses.replace(split, labels=noisy, noisy_index=chosen)


def load_splits(data_cfg) -> tuple[Split, Split]:
    """The train split (with the config's label noise) and the test split of `config.data`.

    Both are normalized alike: with `config.data.mean` and `std` when set, else the dataset's
    constants, else the training split's statistics (`input_kinds`). The number of classes is
    `config.data.num_classes`, else the source's, else the largest training label + 1, with
    the label rules of `labels.py`.

    Raises:
      ValueError: one line for inputs of no kind, splits of different shapes, labels out of
        range or unseen in training, empty classes of an inferred number of classes, or
        augmentation asked of inputs that are not images.
    """
    kind = data_cfg.get("inputs", "auto")
    raw_train, raw_test = sources.read_splits(data_cfg)
    declared = data_cfg.get("num_classes", 0) or raw_train.num_classes
    setting = CLI_SETTINGS["num_classes"]
    where = f"{data_cfg.name}:train"
    num_classes = label_rules.num_classes_of(raw_train.labels, declared, where, setting)
    given = tuple(data_cfg.get(k, ()) or () for k in ("mean", "std"))
    own = any(given)
    kw = dict(kind=kind, num_classes=num_classes, own=own)
    train = to_split(raw_train, data_cfg.name, "train", normalization=given if own else None, **kw)
    test = to_split(raw_test, data_cfg.name, "test", normalization=(train.mean, train.std), **kw)
    _same_inputs(train, test, data_cfg.name)
    label_rules.check_labels(train.labels, num_classes, where, setting)
    label_rules.check_test_labels(
        test.labels, train.labels, num_classes, f"{data_cfg.name}:test", setting
    )
    input_pipeline.augments(data_cfg, train.inputs.shape)
    noise = data_cfg.label_noise
    return with_label_noise(train, noise.fraction, noise.mode, noise.seed), test
