"""Hugging Face and Arrow data as the pipeline's input: `save_to_disk` folders, parquet, arrow.

With `config.data.name='hf'`, `config.data.hf.train` is a `DatasetDict` saved with
`save_to_disk` (its splits `hf.train_split` and `hf.test_split` are the train and test splits),
a `Dataset` saved with `save_to_disk`, or `.parquet` / `.arrow` files (a path or a glob, read in
sorted order); `hf.test` gives the test split's own folder or files. The input column is
`config.data.image_key` ('image' unless set) and the label column `config.data.label_key`
('label'). Rows keep the dataset's own order: the example index is the row. Columns become:
  an `Image` feature      uint8 [N, H, W, C] (decoded; grayscale gets a channel axis)
  numbers per row         [N, ...] as stored (float [N, D] features, integer [N, T] token ids)
  labels                  [N] int32 (a `ClassLabel` also gives the number of classes)
`datasets` and `pyarrow` are imported only here, only when this source is used.

Usage:

    from datadiet_jax.pipeline import hf_source
    raw_train, raw_test = hf_source.read_splits(config.data)   # `sources.Raw`s, in row order
"""

from __future__ import annotations

import glob
import os

import numpy as np

from datadiet_jax.pipeline import fingerprint, sources

# What hf.train and hf.test may be, for the messages.
_FORMS = "a save_to_disk folder or .parquet / .arrow files (a path or a glob)"


def check_fields(data_cfg) -> None:
    """Checks that `config.data.hf` is set exactly when `config.data.name` is 'hf'.

    Raises:
      ValueError: one line naming the field to set (or to clear).
    """
    hf = data_cfg.get("hf") or {}
    if data_cfg.name == "hf" and not hf.get("train"):
        raise ValueError(
            "config.data.name is 'hf' but config.data.hf.train is not set; set "
            f"--config.data.hf.train to {_FORMS}."
        )
    if data_cfg.name != "hf" and (hf.get("train") or hf.get("test")):
        raise ValueError(
            f"config.data.hf is set but config.data.name is {data_cfg.name!r}; set "
            "--config.data.name=hf to read it, or clear config.data.hf.train and hf.test."
        )


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def _files(path: str, field: str):
    """A `datasets.Dataset` of the .parquet or .arrow files of `path` (a path or a glob)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.expanduser(path)))
    if not files:
        raise FileNotFoundError(
            f"config.data.hf.{field}={path!r} does not exist; set --config.data.hf.{field} to "
            f"{_FORMS}."
        )
    suffixes = sorted({os.path.splitext(f)[1] for f in files})
    if suffixes not in ([".parquet"], [".arrow"]):
        raise ValueError(
            f"config.data.hf.{field}={path!r} matches files {suffixes}; set it to {_FORMS} "
            "(one format)."
        )
    try:
        if suffixes == [".parquet"]:  # the features of datasets' parquet files are kept
            return datasets.Dataset(pa.concat_tables([pq.read_table(f) for f in files]))
        return datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ValueError(
            f"config.data.hf.{field}={path!r}: the files cannot be read as {suffixes[0]} "
            f"({_one_line(e)})."
        ) from None


def _is_dict(path: str) -> bool:
    """Whether `path` is a DatasetDict folder written by save_to_disk."""
    return os.path.isfile(os.path.join(os.path.expanduser(path), "dataset_dict.json"))


def load(path: str, field: str, split: str | None = None, split_field: str = "train_split"):
    """The `datasets.Dataset` at `path`: a Dataset folder, files, or a DatasetDict's `split`.

    Args:
      path: a save_to_disk folder, or .parquet / .arrow files (a path or a glob).
      field: the setting that holds `path` ('train' or 'test' of `config.data.hf`).
      split: the split of a DatasetDict, the value of `config.data.hf.<split_field>`.
    Raises:
      FileNotFoundError, ValueError: one line naming the setting.
    """
    import datasets

    folder = os.path.expanduser(path)
    if not os.path.isdir(folder):
        return _files(path, field)
    try:
        loaded = datasets.load_from_disk(folder)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config.data.hf.{field}={path!r} is a folder that save_to_disk did not write (no "
            f"dataset_dict.json or state.json); set --config.data.hf.{field} to {_FORMS}."
        ) from None
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split not in loaded:
        also = ", or --config.data.hf.test to the test split's files" if field == "train" else ""
        raise ValueError(
            f"config.data.hf.{field}={path!r} has no split {split!r} (it has {sorted(loaded)}); "
            f"set --config.data.hf.{split_field} to one of them{also}."
        )
    return loaded[split]


def _column(ds, key: str, field: str, where: str) -> np.ndarray:
    """The column `key` of `ds` as one array `[N, ...]` (images decoded: uint8 [N, H, W, C])."""
    import datasets

    if key not in ds.column_names:
        raise ValueError(
            f"config.data.{field}={key!r} is not a column of {where}; set "
            f"--config.data.{field} to one of {sorted(ds.column_names)}."
        )
    values = ds.with_format("numpy", columns=[key])[:][key]
    image = isinstance(ds.features[key], datasets.Image)
    if values.dtype == object:
        raise ValueError(
            f"config.data.{field}={key!r} of {where} holds rows of different shapes; "
            + ("resize the images to one size" if image else "pad its rows to one length")
            + " first (e.g. with Dataset.map)."
        )
    if values.dtype.kind not in "uif":
        raise ValueError(
            f"config.data.{field}={key!r} of {where} is {values.dtype} "
            f"({ds.features[key]}), not images, numbers or token ids; tokenize or encode it first, "
            f"or set --config.data.{field} to another of {sorted(ds.column_names)}."
        )
    return values[..., None] if image and values.ndim == 3 else values


def _labels(ds, key: str, where: str) -> tuple[np.ndarray, int]:
    """(labels [N], the number of classes of a ClassLabel column, else 0)."""
    import datasets

    feature = ds.features.get(key)
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        raise ValueError(
            f"config.data.label_key={key!r} of {where} holds strings; encode them as class "
            f"indices first: dataset.class_encode_column({key!r})."
        )
    labels = _column(ds, key, "label_key", where)
    if labels.ndim != 1:
        raise ValueError(
            f"config.data.label_key={key!r} of {where} holds {labels.dtype} {labels.shape[1:]} "
            "per row, not one class index; set --config.data.label_key to the label column."
        )
    classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else 0
    return labels, int(classes)


def read_split(data_cfg, role: str, num_examples: int) -> sources.Raw:
    """One split as a `sources.Raw`, in row order (the first `num_examples` rows; 0: all).

    Args:
      data_cfg: `config.data` (`hf`, the column keys).
      role: 'train' or 'test': read `hf.<role>`, else the `hf.<role>_split` of `hf.train`.
      num_examples: read only the first rows (0 reads all).
    Returns:
      A `Raw` with `inputs [N, ...]` (images uint8 [N, H, W, C]), `labels [N] int32`, the
      ClassLabel's number of classes (0 without one) and the record of what was read.
    """
    hf = data_cfg.hf
    field = role if hf.get(role) else "train"
    path, split = hf[field], hf[f"{role}_split"]
    ds = load(path, field, split, f"{role}_split")
    split = split if _is_dict(path) else None
    where = f"config.data.hf.{field}={path!r}" + (f" (split {split!r})" if split else "")
    if 0 < num_examples <= ds.num_rows:  # decode only the rows used
        ds = ds.select(range(num_examples))
    image_key = data_cfg.get("image_key") or sources.DEFAULT_KEYS["image_key"]
    label_key = data_cfg.get("label_key") or sources.DEFAULT_KEYS["label_key"]
    inputs = _column(ds, image_key, "image_key", where)
    labels, num_classes = _labels(ds, label_key, where)
    labels = sources.checked_labels(inputs, labels, where)
    inputs, labels = sources._first(inputs, labels, num_examples, where)
    sha = {"inputs": fingerprint.array_sha256(inputs), "labels": fingerprint.array_sha256(labels)}
    record = {
        "kind": "huggingface",
        "path": os.path.abspath(os.path.expanduser(path)),
        "split": split,
        "sha256": sha,
    }
    return sources.Raw(inputs, labels, num_classes, None, record)


def read_splits(data_cfg) -> list[sources.Raw]:
    """The train and test splits of `config.data.hf` (`sources.read_splits` for name 'hf')."""
    import datasets

    datasets.disable_progress_bars()
    hf = data_cfg.hf
    if not hf.get("test") and not _is_dict(hf.train):
        load(hf.train, "train")  # a path that does not exist is named as such
        raise ValueError(
            f"config.data.hf.train={hf.train!r} holds one split (not a DatasetDict folder); set "
            "--config.data.hf.test to the test split's folder or files."
        )
    return [
        read_split(data_cfg, "train", data_cfg.num_train_examples),
        read_split(data_cfg, "test", data_cfg.num_test_examples),
    ]
