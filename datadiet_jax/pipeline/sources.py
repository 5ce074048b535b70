"""Where the data come from: TFDS, array files (`.npz`, `.npy`) or a function, in row order.

`config.data.name` chooses the source: 'arrays' reads the files of `config.data.arrays`,
'function' calls `config.data.function`, 'hf' reads Hugging Face / Arrow data
(`config.data.hf`, `hf_source.py`), anything else is a TFDS dataset name (e.g. 'cifar10')
or the path of a prepared TFDS dataset directory (the folder holding `dataset_info.json`). Arrays
and function outputs hold the inputs under `config.data.image_key` ('image' unless set) and the
labels under `config.data.label_key` ('label'); for TFDS these fields choose the features
(default: the dataset's supervised_keys). Every source keeps its own order and reports what it
read for the provenance of score files (`Raw.record`): the directory of a TFDS directory, the
SHA-256 of array files, the import path and content hash of a function's arrays. TFDS examples
also carry their TFDS id (`tfds_id`, e.g. 'mnist-train.tfrecord-00000-of-00001__7').

Usage:

    from datadiet_jax.pipeline import sources
    raw = sources.read_tfds("mnist", "train", num_examples=1000)   # inputs [N, 28, 28, 1] uint8
    raw_train, raw_test = sources.read_splits(config.data)         # `Raw`s, in their own order
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import os
import zipfile

import numpy as np

from datadiet_jax.pipeline import fingerprint, workdir

SPLITS = ("train", "test")
# The arrays and function sources: inputs and labels under these keys unless data.*_key is set.
DEFAULT_KEYS = {"image_key": "image", "label_key": "label"}
# TFDS datasets named in the message about an unknown name.
EXAMPLE_DATASETS = ("cifar10", "cifar100", "fashion_mnist", "mnist")


@dataclasses.dataclass(frozen=True)
class Raw:
    """One split as its source gives it.

    Attributes:
      inputs: [N, ...] as read (TFDS images [N, H, W, C] uint8; arrays of any dtype).
      labels: [N] int32 (checked: 1-D integers >= 0, one per input).
      num_classes: from the source (a TFDS ClassLabel, a function's 'num_classes'); 0: unknown.
      tfds_id: [N] str TFDS ids, or None (arrays and functions have none).
      record: what was read, for provenance (None for a TFDS dataset by name).
    """

    inputs: np.ndarray
    labels: np.ndarray
    num_classes: int
    tfds_id: np.ndarray | None
    record: dict | None


def _key(data_cfg, field: str):
    return data_cfg.get(field) or None


def _sizes(data_cfg):
    """(split, num_examples) of the train and test splits."""
    return zip(SPLITS, (data_cfg.num_train_examples, data_cfg.num_test_examples), strict=True)


def _setting(split: str) -> str:
    """The config field that limits a split's examples."""
    return f"config.data.num_{split}_examples"


def _too_many(setting: str, num_examples: int, available: int, where: str) -> ValueError:
    return ValueError(
        f"{setting}={num_examples} exceeds the {available} examples of {where}; set it to at "
        f"most {available}, or 0 to keep them all."
    )


def _first(inputs, labels, num_examples: int, where: str, setting: str = "num_examples"):
    """The first `num_examples` rows (0 keeps all); refuses more than there are."""
    if num_examples and num_examples > len(labels):
        raise _too_many(setting, num_examples, len(labels), where)
    return (inputs[:num_examples], labels[:num_examples]) if num_examples else (inputs, labels)


def checked_labels(inputs: np.ndarray, labels: np.ndarray, where: str) -> np.ndarray:
    """Returns `labels [N] int32` after checking that they are 1-D integers >= 0, one per input.

    Raises:
      ValueError: one line naming `where`, the problem and the fix.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where} has labels {labels.dtype} {labels.shape}; labels must be a 1-D integer "
            "array of class indices [N] (not one-hot vectors)."
        )
    if len(labels) != len(inputs):
        raise ValueError(
            f"{where} has {len(inputs)} inputs but {len(labels)} labels; give one label per "
            "example (the same number of rows)."
        )
    if labels.size and labels.min() < 0:
        bad = np.flatnonzero(labels < 0)[:10].tolist()
        raise ValueError(f"{where} has negative labels at rows {bad}; labels must be >= 0.")
    return labels.astype(np.int32)


# --- TFDS ------------------------------------------------------------------------------------


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


def _directory_builder(path: str):
    """The builder of a prepared TFDS dataset directory (the folder with dataset_info.json)."""
    import tensorflow_datasets as tfds

    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        found = sorted(
            os.path.dirname(p)
            for pattern in ("*/dataset_info.json", "*/*/dataset_info.json")
            for p in glob.glob(os.path.join(path, pattern))
        )
        raise FileNotFoundError(
            f"config.data.name={path!r} is a folder without dataset_info.json; set it to a "
            f"prepared TFDS dataset directory (a version folder), e.g. one of {found}."
        )
    return tfds.builder_from_directory(path)


def get_builder(name: str, data_dir: str | None, download: bool = False):
    """Returns the TFDS builder of `name` (a name or a dataset directory), failing fast when it
    is unknown or not on disk.

    Raises:
      ValueError: the name is not a TFDS dataset.
      FileNotFoundError: the dataset is not prepared in `data_dir` and `download` is False (the
        message says how to get it; this check avoids TFDS's minutes of network retries), or a
        path that is not a prepared dataset directory.
      ValueError: `download` is True and the data directory cannot be written.
    """
    import tensorflow_datasets as tfds

    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return _directory_builder(path)
    if name.startswith(("/", ".", "~")):
        raise FileNotFoundError(
            f"config.data.name={name!r} names no folder; set it to a prepared TFDS dataset "
            "directory (the folder holding dataset_info.json) or to a TFDS dataset name."
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}; set config.data.name to a TFDS dataset such as "
            f"{list(EXAMPLE_DATASETS)}, a prepared TFDS dataset directory, 'arrays' "
            "(config.data.arrays) or 'function' (config.data.function)."
        ) from None
    if builder.is_prepared():
        return builder
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    if not download:
        raise FileNotFoundError(f"Dataset {name!r} is not in {where}: {_how_to_get(name)}.")
    workdir.check_writable(
        os.path.expanduser(where),
        "Data directory",
        f"TFDS cannot download {name!r} into it; set --config.data.data_dir to a writable folder",
    )
    return builder


def feature_keys(builder, name: str, image_key: str | None, label_key: str | None):
    """(image key, label key): the ones given, else the dataset's supervised_keys.

    Raises:
      ValueError: no supervised_keys and no keys given, or a key that is not a feature; the
        line names the config fields and the dataset's features.
    """
    features = sorted(builder.info.features.keys())
    if image_key is None or label_key is None:
        supervised = builder.info.supervised_keys
        if not (
            isinstance(supervised, tuple)
            and len(supervised) == 2
            and all(isinstance(k, str) for k in supervised)
        ):
            raise ValueError(
                f"Dataset {name!r} has no (input, label) supervised_keys; set "
                f"--config.data.image_key and --config.data.label_key to two of its features "
                f"{features}."
            )
        image_key, label_key = image_key or supervised[0], label_key or supervised[1]
    for field, key in (("image_key", image_key), ("label_key", label_key)):
        if key not in features:
            raise ValueError(
                f"config.data.{field}={key!r} is not a feature of dataset {name!r}; set it to "
                f"one of {features}."
            )
    return image_key, label_key


def read_tfds(
    name: str,
    split: str,
    *,
    data_dir=None,
    download=False,
    num_examples=0,
    image_key=None,
    label_key=None,
    setting="num_examples",
) -> Raw:
    """Reads one TFDS split in TFDS's order, with each example's TFDS id.

    Args:
      name: a TFDS dataset name, or the path of a prepared TFDS dataset directory.
      split: e.g. 'train'; data_dir, download: as `get_builder`.
      num_examples: read only the first N examples (0 reads all).
      image_key, label_key: the features to read (None: the dataset's supervised_keys).
      setting: what a message about `num_examples` names.
    Returns:
      A `Raw` with `inputs [N, ...]` as TFDS decodes them, `labels [N] int32`, `tfds_id [N]`.
    """
    import tensorflow_datasets as tfds

    builder = get_builder(name, data_dir, download)
    directory = os.path.isdir(os.path.expanduser(name))
    if download and not directory:
        builder.download_and_prepare()
    image_key, label_key = feature_keys(builder, name, image_key, label_key)
    if num_examples:  # Read only the first examples (TFDS slicing keeps the split's order).
        available = builder.info.splits[split].num_examples if split in builder.info.splits else 0
        if available and num_examples > available:
            raise _too_many(setting, num_examples, available, f"{name}:{split}")
    try:
        ds = builder.as_dataset(
            split=f"{split}[:{num_examples}]" if num_examples else split,
            shuffle_files=False,
            read_config=tfds.ReadConfig(add_tfds_id=True),
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"Dataset {name!r} has no split {split!r} ({e}); pick another.") from None
    inputs, labels, ids = [], [], []
    for batch in tfds.as_numpy(ds.batch(4096)):
        inputs.append(batch[image_key])
        labels.append(batch[label_key])
        ids.append(batch["tfds_id"])
    inputs, labels, ids = np.concatenate(inputs), np.concatenate(labels), np.concatenate(ids)
    inputs, labels = _first(inputs, labels, num_examples, f"{name}:{split}", setting)
    feature = builder.info.features[label_key]
    record = None
    if directory:
        record = {
            "kind": "tfds_directory",
            "path": os.path.abspath(os.path.expanduser(name)),
            "name": builder.name,
            "version": str(builder.info.version),
        }
    return Raw(
        inputs=inputs,
        labels=checked_labels(inputs, labels, f"{name}:{split}"),
        num_classes=int(getattr(feature, "num_classes", 0) or 0),
        tfds_id=ids[: len(labels)].astype(str),
        record=record,
    )


def _tfds_splits(data_cfg) -> list[Raw]:
    keys = {field: _key(data_cfg, field) for field in DEFAULT_KEYS}
    kw = dict(data_dir=data_cfg.data_dir, download=data_cfg.download, **keys)
    return [
        read_tfds(data_cfg.name, s, num_examples=n, setting=_setting(s), **kw)
        for s, n in _sizes(data_cfg)
    ]


# --- Arrays ----------------------------------------------------------------------------------


def _load_array(path: str, key: str, field: str, key_field: str) -> np.ndarray:
    """The array of an `.npy` file, or the one under `key` in an `.npz` file."""
    if not path:
        raise ValueError(f"config.data.{field} is not set; set it to an .npz or .npy file.")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config.data.{field}={path!r} does not exist; set --config.data.{field} to an "
            ".npz or .npy file."
        )
    if not path.endswith((".npz", ".npy")):
        raise ValueError(f"config.data.{field}={path!r} is not an .npz or .npy file.")
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as f:
            if key in f.files:
                return f[key]
            files = list(f.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz/.npy file ({e}).") from None
    raise ValueError(
        f"{path} holds no array {key!r} (it holds {files}); set --config.data.{key_field} to one "
        "of them."
    )


def _array_splits(data_cfg) -> list[Raw]:
    arrays = data_cfg.arrays
    image_key = _key(data_cfg, "image_key") or DEFAULT_KEYS["image_key"]
    label_key = _key(data_cfg, "label_key") or DEFAULT_KEYS["label_key"]
    out = []
    for split, n in _sizes(data_cfg):
        path, labels_path = arrays[split], arrays.get(f"{split}_labels")
        if path and path.endswith(".npy") and not labels_path:
            raise ValueError(
                f"config.data.arrays.{split}={path!r} is an .npy file (inputs only); set "
                f"--config.data.arrays.{split}_labels to the .npy file of its labels."
            )
        inputs = _load_array(path, image_key, f"arrays.{split}", "image_key")
        labels_field = f"arrays.{split}_labels" if labels_path else f"arrays.{split}"
        labels = _load_array(labels_path or path, label_key, labels_field, "label_key")
        files = sorted({os.path.abspath(p) for p in (path, labels_path) if p})
        labels = checked_labels(
            inputs, labels, f"config.data.{labels_field} ({labels_path or path})"
        )
        where = f"config.data.arrays.{split}"
        inputs, labels = _first(inputs, labels, n, where, _setting(split))
        record = {"kind": "arrays", "files": {p: fingerprint.file_sha256(p) for p in files}}
        out.append(Raw(inputs, labels, 0, None, record))
    return out


# --- A function ------------------------------------------------------------------------------


def _import(path: str):
    module_name, _, attr = (path or "").partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(
            f"config.data.function={path!r} cannot be imported ({type(e).__name__}: {e}); set it "
            "to 'package.module:function'."
        ) from None


def _function_splits(data_cfg) -> list[Raw]:
    """Calls `config.data.function()`; it returns {'train': {image_key: [N, ...], label_key: [N]},
    'test': {...}} and optionally 'num_classes' (an int)."""
    path = data_cfg.function
    out = _import(path)()
    image_key = _key(data_cfg, "image_key") or DEFAULT_KEYS["image_key"]
    label_key = _key(data_cfg, "label_key") or DEFAULT_KEYS["label_key"]
    contract = (
        f"return {{'train': {{{image_key!r}: inputs, {label_key!r}: labels}}, 'test': "
        "{...}, 'num_classes': C (optional)}"
    )
    num_classes = out.get("num_classes", 0) if isinstance(out, dict) else 0
    raws = []
    for split, n in _sizes(data_cfg):
        part = out.get(split) if isinstance(out, dict) else None
        if not isinstance(part, dict) or image_key not in part or label_key not in part:
            have = sorted(part) if isinstance(part, dict) else type(part).__name__
            raise ValueError(
                f"config.data.function {path} gave {split}={have}; it must {contract}."
            )
        inputs = np.asarray(part[image_key])
        labels = checked_labels(inputs, part[label_key], f"{path} ({split})")
        sha = {
            "inputs": fingerprint.array_sha256(inputs),
            "labels": fingerprint.array_sha256(labels),
        }
        inputs, labels = _first(inputs, labels, n, f"{path} ({split})", _setting(split))
        record = {"kind": "function", "function": path, "sha256": sha}
        raws.append(Raw(inputs, labels, int(num_classes), None, record))
    return raws


def _hf_splits(data_cfg) -> list[Raw]:
    from datadiet_jax.pipeline import hf_source  # imports datasets and pyarrow: only when used

    return hf_source.read_splits(data_cfg)


# name -> reader of the train and test splits; any other name is TFDS.
SOURCES = {"arrays": _array_splits, "function": _function_splits, "hf": _hf_splits}


def read_splits(data_cfg) -> list[Raw]:
    """The train and test splits of `config.data`, as `Raw`s in their own order."""
    return SOURCES.get(data_cfg.name, _tfds_splits)(data_cfg)
