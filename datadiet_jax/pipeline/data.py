"""Datasets: TFDS loading in the dataset's own order, availability checks, label noise.

Decision: the example index is the position in the TFDS split as TFDS serves it (no re-sorting), so
every score file maps back to the right image. A `num_train_examples` limit keeps the first N
examples of that order, so indices stay the dataset's own.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from absl import logging

from datadiet_jax.pipeline import keys, workdir

# Per-channel mean and std of the training split, in [0, 1] pixel units.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
}
NOISE_MODES = ("replace", "permute")


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory, in the dataset's own order.

    Attributes:
      images: [N, H, W, C] uint8.
      labels: [N] int32 (possibly noisy; see `clean_labels`).
      index: [N] int64, the position of each example in the TFDS split.
      num_classes: number of classes.
      mean, std: per-channel normalization constants, [C] each.
      clean_labels: [N] int32, the labels before any label noise.
      noisy_index: int64 indices of the examples chosen for label noise (empty when clean).
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    clean_labels: np.ndarray
    noisy_index: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    def normalized_images(self) -> np.ndarray:
        """Returns `[N, H, W, C] float32` images, normalized per channel."""
        return normalize(self.images, self.mean, self.std)


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """Maps uint8 `[..., C]` images to float32 `(x / 255 - mean) / std`."""
    x = np.asarray(images, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _how_to_get(name: str) -> str:
    hint = (
        f"set --config.data.data_dir to a TFDS data directory that holds {name!r}, or run once "
        f"with --config.data.download=True on a machine with internet"
    )
    if name == "fashion_mnist":
        hint += (
            ", or build it offline: `apt-get install dataset-fashion-mnist && "
            "python -m datadiet_jax.pipeline.prepare_data`"
        )
    return hint


def get_builder(name: str, data_dir: str | None, download: bool = False):
    """Returns the TFDS builder of `name`, failing fast when it is unknown or not on disk.

    Raises:
      ValueError: the name is not a TFDS dataset.
      FileNotFoundError: the dataset is not prepared in `data_dir` and `download` is False. The
        message says how to get it; this check avoids TFDS's minutes of network retries.
      ValueError: `download` is True and the data directory cannot be written.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}; set config.data.name to a TFDS image-classification "
            f"dataset such as {sorted(NORMALIZATION)}."
        ) from None
    if builder.is_prepared():
        return builder
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    if not download:
        raise FileNotFoundError(f"Dataset {name!r} is not in {where}: {_how_to_get(name)}.")
    workdir.check_writable(
        os.path.expanduser(where), "Data directory",
        f"TFDS cannot download {name!r} into it; set --config.data.data_dir to a writable folder",
    )  # fmt: skip
    return builder


def _load_raw(name: str, split: str, data_dir: str | None, download: bool, num_examples: int):
    import tensorflow_datasets as tfds

    builder = get_builder(name, data_dir, download)
    if download:
        builder.download_and_prepare()
    if builder.info.supervised_keys is None:
        raise ValueError(f"Dataset {name!r} has no (image, label) supervised keys; pick another.")
    image_key, label_key = builder.info.supervised_keys
    if num_examples:  # Read only the first examples (TFDS slicing keeps the split's order).
        available = builder.info.splits[split].num_examples if split in builder.info.splits else 0
        if available and num_examples > available:
            raise ValueError(
                f"num_examples={num_examples} exceeds the {available} examples of {name}:{split}."
            )
    try:
        ds = builder.as_dataset(
            split=f"{split}[:{num_examples}]" if num_examples else split, shuffle_files=False
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"Dataset {name!r} has no split {split!r} ({e}); pick another.") from None
    images, labels = [], []
    for batch in tfds.as_numpy(ds.batch(4096)):
        images.append(batch[image_key])
        labels.append(batch[label_key])
    num_classes = builder.info.features[label_key].num_classes
    return np.concatenate(images), np.concatenate(labels).astype(np.int32), num_classes


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
      name: TFDS dataset name, e.g. 'fashion_mnist', 'cifar10'.
      split: 'train' or 'test' (any split the dataset has).
      data_dir: TFDS data directory; None means TFDS's default.
      download: let TFDS download the dataset when it is missing.
      num_examples: keep only the first `num_examples` examples (None or 0 keeps all).
      normalization: (mean [C], std [C]) to normalize with, for a dataset without constants in
        `NORMALIZATION`: the test split takes the training split's (`load_splits`). None: the
        dataset's constants, else the statistics of this split itself.

    Returns:
      A `Split` with `images [N, H, W, C] uint8` and `labels [N] int32`.
    """
    images, labels, num_classes = _load_raw(name, split, data_dir, download, num_examples)
    if images.ndim == 3:
        images = images[..., None]
    if num_examples:
        if len(labels) < num_examples:
            raise ValueError(
                f"num_examples={num_examples} exceeds the {len(labels)} examples of {name}:{split}."
            )
        images, labels = images[:num_examples], labels[:num_examples]
    if name in NORMALIZATION:
        mean, std = (np.asarray(v, np.float32) for v in NORMALIZATION[name])
    elif normalization is not None:
        mean, std = (np.asarray(v, np.float32) for v in normalization)
    else:  # Any other TFDS dataset: statistics of the loaded split itself.
        x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        mean, std = x.mean(0).astype(np.float32), x.std(0).astype(np.float32)
        logging.info(
            "Normalization of %s from its %s split: mean=%s std=%s", name, split, mean, std
        )
    return Split(
        name=name,
        split=split,
        images=images,
        labels=labels,
        index=np.arange(len(labels), dtype=np.int64),
        num_classes=int(num_classes),
        mean=mean,
        std=std,
        clean_labels=labels,
        noisy_index=np.zeros((0,), np.int64),
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
    """The train split (with the config's label noise) and the test split of `config.data`; both
    are normalized alike: with the dataset's constants, else with the training split's
    statistics."""
    kw = dict(data_dir=data_cfg.data_dir, download=data_cfg.download)
    train = load_split(data_cfg.name, "train", num_examples=data_cfg.num_train_examples, **kw)
    test = load_split(data_cfg.name, "test", num_examples=data_cfg.num_test_examples,
                      normalization=(train.mean, train.std), **kw)  # fmt: skip
    noise = data_cfg.label_noise
    return with_label_noise(train, noise.fraction, noise.mode, noise.seed), test
