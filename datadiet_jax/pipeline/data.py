"""Datasets in memory: the split's own order, input kinds, normalization, label noise.

The example index is the position in the split as its source serves it (TFDS's order, an
array's rows; no re-sorting), so every score file maps back to the right example; a
`num_train_examples` limit keeps the first N examples of that order. Where the examples come
from is `sources.py`. Inputs are of one of three kinds, told apart by dtype (`Split.kind`):
  'images'    [N, H, W, C] uint8, normalized per channel: `(x / 255 - mean) / std` with the
              dataset's constants (`NORMALIZATION`), else the training split's statistics.
  'features'  [N, D] float32, standardized per feature with the training split's mean and std
              (a constant feature, std 0, is only centered).
  'tokens'    [N, T] int32 token ids, passed to the model as they are.
The constants are recorded in every score file's provenance.

Usage:

    from datadiet_jax.pipeline import data
    split = data.load_split("fashion_mnist", "train", num_examples=2000)
    images = split.model_inputs()                  # [N, 28, 28, 1] float32, normalized
    noisy = data.with_label_noise(split, 0.1, "permute", seed=0)
    own = data.split_from_arrays(features, labels)     # [N, D] float32, [N] int
    train_split, test_split = data.load_splits(config.data)
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from datadiet_jax.pipeline import sources
from datadiet_jax.training import input_pipeline, keys

# Per-channel mean and std of the training split, in [0, 1] pixel units.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
}
NOISE_MODES = ("replace", "permute")
# `config.data.inputs`: 'auto' tells the kind by dtype and shape (`as_inputs`).
INPUT_KINDS = ("images", "features", "tokens")
_DTYPES = {"images": np.uint8, "features": np.float32, "tokens": np.int32}


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory, in the dataset's own order.

    Attributes:
      inputs: [N, H, W, C] uint8 images, [N, D] float32 features or [N, T] int32
        token ids (`kind`).
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
        """'images' (uint8), 'features' (float) or 'tokens' (integer ids)."""
        return kind_of(self.inputs.dtype)

    def model_inputs(self) -> np.ndarray:
        """The model's inputs `[N, ...]`: normalized float32 images or features, int32 tokens."""
        return prepare(self.inputs, self.mean, self.std)


def kind_of(dtype) -> str:
    """The input kind of a loaded split's dtype: uint8 images, float features, integer tokens."""
    if dtype == np.uint8:
        return "images"
    return "features" if np.issubdtype(dtype, np.floating) else "tokens"


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """Maps uint8 `[..., C]` images to float32 `(x / 255 - mean) / std`."""
    x = np.asarray(images, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def prepare(inputs: np.ndarray, mean, std) -> np.ndarray:
    """Model inputs of any kind (by dtype): uint8 images `normalize`d, float features
    `(x - mean) / std`, integer token ids as int32."""
    kind = kind_of(inputs.dtype)
    if kind == "images":
        return normalize(inputs, mean, std)
    if kind == "tokens":
        return np.asarray(inputs, np.int32)
    x = np.asarray(inputs, np.float32)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def get_builder(name: str, data_dir: str | None, download: bool = False):
    """The TFDS builder of a name or dataset directory, failing fast (`sources.get_builder`)."""
    return sources.get_builder(name, data_dir, download)


def as_inputs(inputs: np.ndarray, kind: str, where: str) -> np.ndarray:
    """Checks a source's inputs and returns them in their kind's dtype (`_DTYPES`).

    Args:
      inputs: [N, ...] as the source gives them.
      kind: 'auto' (uint8 [N, H, W] or [N, H, W, C]: images; float [N, D]: features; integer
        [N, T]: tokens) or one of `INPUT_KINDS` (`config.data.inputs`).
      where: the source, for the messages.
    Raises:
      ValueError: one line naming the shape and dtype and what is accepted.
    """
    inputs = np.asarray(inputs)
    dtype, ndim = inputs.dtype, inputs.ndim
    integer = np.issubdtype(dtype, np.integer)
    if kind == "auto":
        if dtype == np.uint8 and ndim in (3, 4):
            kind = "images"
        elif ndim == 2 and (integer or np.issubdtype(dtype, np.floating)):
            kind = "tokens" if integer else "features"
    ok = {
        "images": dtype == np.uint8 and ndim in (3, 4),
        "features": ndim == 2 and (integer or np.issubdtype(dtype, np.floating)),
        "tokens": ndim == 2 and integer,
    }
    if not ok.get(kind, False):
        raise ValueError(
            f"{where} has inputs {dtype} {inputs.shape}, which are not "
            f"{'any input kind' if kind == 'auto' else kind}; give uint8 images [N, H, W, C] "
            "(0-255), float feature vectors [N, D] or integer token ids [N, T] (and set "
            "config.data.inputs to match, or 'auto')."
        )
    if kind == "images" and ndim == 3:
        inputs = inputs[..., None]
    if kind == "features" and not np.isfinite(inputs).all():
        bad = np.flatnonzero(~np.isfinite(inputs).all(axis=1))[:10].tolist()
        raise ValueError(f"{where} has NaN or inf features at rows {bad}; clean those rows.")
    if kind == "tokens" and inputs.size and (inputs.min() < 0 or inputs.max() > 2**31 - 1):
        raise ValueError(f"{where} has token ids outside [0, 2**31); token ids index a table.")
    return inputs.astype(_DTYPES[kind], copy=False)


def _statistics(inputs: np.ndarray, name: str, split: str):
    """Mean and std of a split's own inputs: per channel (images), per feature (features)."""
    kind = kind_of(inputs.dtype)
    if kind == "tokens":
        return np.zeros((0,), np.float32), np.zeros((0,), np.float32)
    if kind == "images":
        x = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64) / 255.0
        mean, std = x.mean(0), x.std(0)
    else:
        x = inputs.astype(np.float64)
        mean, std = x.mean(0), x.std(0)
        constant = std == 0
        if constant.any():
            logging.info(
                "%s:%s has %d constant features: centered only", name, split, int(constant.sum())
            )
            std = np.where(constant, 1.0, std)
    logging.info("Normalization of %s from its %s split: mean=%s std=%s", name, split, mean, std)
    return mean.astype(np.float32), std.astype(np.float32)


def to_split(
    raw: sources.Raw,
    name: str,
    split: str,
    *,
    kind: str = "auto",
    normalization: tuple | None = None,
    num_classes: int = 0,
) -> Split:
    """A `Split` of a source's `Raw` split: inputs in their kind's dtype, normalization constants.

    Args:
      raw: what the source read; name: the dataset's name (provenance); split: e.g. 'train'.
      kind: `config.data.inputs` ('auto' or one of `INPUT_KINDS`).
      normalization: (mean, std) to normalize with (the test split takes the training split's);
        None: the dataset's constants (`NORMALIZATION`), else the statistics of this split.
      num_classes: the number of classes; 0: the source's.
    """
    inputs = as_inputs(raw.inputs, kind, f"{name}:{split}")
    if kind_of(inputs.dtype) == "images" and name in NORMALIZATION:
        mean, std = (np.asarray(v, np.float32) for v in NORMALIZATION[name])
    elif normalization is not None:
        mean, std = (np.asarray(v, np.float32) for v in normalization)
    else:
        mean, std = _statistics(inputs, name, split)
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
) -> Split:
    """A `Split` of in-memory arrays, in their own row order, as the pipeline builds one.

    Args:
      inputs: `[N, H, W, C]` uint8 images, `[N, D]` float features or `[N, T]` integer token
        ids (the dtype says which, as for `config.data.inputs='auto'`).
      labels: `[N]` integer class labels >= 0.
      name, split: what provenance calls them.
      num_classes: 0 takes the largest label + 1.
      normalization: (mean, std) to use (a test split takes its training split's); None: the
        statistics of these inputs (images per channel, features per feature; none for tokens).
    """
    where = f"{name}:{split}"
    labels = sources.checked_labels(np.asarray(inputs), labels, where)
    num_classes = num_classes or (int(labels.max()) + 1 if labels.size else 0)
    raw = sources.Raw(np.asarray(inputs), labels, num_classes, None, None)
    return to_split(raw, name, split, normalization=normalization)


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

    Both are normalized alike: with the dataset's constants, else with the training split's
    statistics. The number of classes is `config.data.num_classes`, else the source's, else the
    largest label of both splits + 1.

    Raises:
      ValueError: one line for inputs of no kind, splits of different shapes, labels out of
        range, or augmentation asked of inputs that are not images.
    """
    kind = data_cfg.get("inputs", "auto")
    raw_train, raw_test = sources.read_splits(data_cfg)
    num_classes = data_cfg.get("num_classes", 0) or raw_train.num_classes
    if not num_classes:
        num_classes = int(max(raw_train.labels.max(initial=0), raw_test.labels.max(initial=0))) + 1
        logging.info("%s: %d classes (the largest label + 1)", data_cfg.name, num_classes)
    train = to_split(raw_train, data_cfg.name, "train", kind=kind, num_classes=num_classes)
    test = to_split(
        raw_test,
        data_cfg.name,
        "test",
        kind=kind,
        num_classes=num_classes,
        normalization=(train.mean, train.std),
    )
    if (test.inputs.dtype, test.inputs.shape[1:]) != (train.inputs.dtype, train.inputs.shape[1:]):
        raise ValueError(
            f"{data_cfg.name}: the test inputs are {test.inputs.dtype} {test.inputs.shape[1:]} per "
            f"example, the training inputs {train.inputs.dtype} {train.inputs.shape[1:]}; give "
            "both splits the same shape and dtype."
        )
    for s in (train, test):
        bad = np.flatnonzero(s.labels >= num_classes)[:10]
        if bad.size:
            raise ValueError(
                f"{data_cfg.name}:{s.split} has labels >= {num_classes} (the number of classes) "
                f"at rows {bad.tolist()}; set config.data.num_classes to more classes or fix "
                "the labels."
            )
    input_pipeline.augments(data_cfg, train.inputs.shape)
    noise = data_cfg.label_noise
    return with_label_noise(train, noise.fraction, noise.mode, noise.seed), test
