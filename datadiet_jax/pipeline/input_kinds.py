"""Input kinds: how a source's arrays are read (images, features, token ids) and normalized.

A loaded split's inputs have one of three kinds, told by their shape and dtype (`kind_of`):
  'images'    [N, H, W, C]: uint8 pixels (0-255), or float32 values of any scale (float or
              integer arrays other than uint8, e.g. images already normalized).
  'features'  [N, D] float32 feature vectors.
  'tokens'    [N, T] int32 token ids, passed to the model as they are.
How the inputs are normalized (`normalization`, recorded in every score file's provenance):
  - uint8 images: `(x / 255 - mean) / std` per channel, with the dataset's constants (a known
    TFDS name) else the training split's statistics, in [0, 1] pixel units;
  - float images: `(x - mean) / std` per channel with the training split's statistics, in the
    images' own units. Standardizing is idempotent: images already standardized per channel
    (training mean 0, std 1) come out as they went in, so nothing is normalized twice. Images
    standardized with other constants are re-standardized to the training split's; a given
    `(mean, std)` of `(0, 1)` keeps any float images exactly as they are;
  - features: per feature, with the training split's statistics;
  - a given `(mean, std)` replaces the statistics (`config.data.mean`/`std` the constants
    too); the test split always takes the training split's.
A constant channel or feature (std 0) is only centered.

Usage:

    from datadiet_jax.pipeline import input_kinds
    x = input_kinds.as_inputs(raw_inputs, "auto", "mine:train")     # checked, kind's dtype
    mean, std = input_kinds.normalization(x, "mine", "train")       # [C] or [D] float32
    model_x = input_kinds.prepare(x, mean, std)                     # float32 (int32 tokens)
"""

from __future__ import annotations

import numpy as np
from absl import logging

# Per-channel mean and std of the training split of uint8 TFDS datasets, in [0, 1] pixel units.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
}
# `config.data.inputs`: 'auto' tells the kind by dtype and shape (`as_inputs`).
INPUT_KINDS = ("images", "features", "tokens")
# Where the messages of the command line send a user; the notebook path names its argument.
CLI_SETTING = "config.data.inputs"


def kind_of(inputs: np.ndarray) -> str:
    """The kind of a loaded split's inputs (`as_inputs` output): 'images' ([N, H, W, C], uint8
    or float32), 'features' ([N, D] float32) or 'tokens' ([N, T] int32)."""
    if inputs.ndim == 4:
        return "images"
    return "features" if np.issubdtype(inputs.dtype, np.floating) else "tokens"


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """Maps uint8 `[..., C]` images to float32 `(x / 255 - mean) / std`."""
    x = np.asarray(images, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def prepare(inputs: np.ndarray, mean, std) -> np.ndarray:
    """Model inputs of a loaded split, by dtype: uint8 images `normalize`d, float images and
    features `(x - mean) / std` (float32), integer token ids as int32."""
    if inputs.dtype == np.uint8:
        return normalize(inputs, mean, std)
    if not np.issubdtype(inputs.dtype, np.floating):
        return np.asarray(inputs, np.int32)
    x = np.asarray(inputs, np.float32)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _auto_kind(inputs: np.ndarray, where: str, setting: str) -> str:
    """The kind 'auto' reads: [N, H, W(, C)] images, float [N, D] features, integer tokens."""
    real = np.issubdtype(inputs.dtype, np.integer) or np.issubdtype(inputs.dtype, np.floating)
    if real and inputs.ndim == 4 and inputs.shape[1] in (1, 3) and inputs.shape[3] > 4:
        raise ValueError(
            f"{where} has inputs {inputs.dtype} {inputs.shape}, which look channels-first [N, C, "
            f"H, W]; give [N, H, W, C] (np.moveaxis(x, 1, -1)), or set {setting}='images' to "
            "read them as they are."
        )
    if real and inputs.ndim in (3, 4):
        return "images"
    if inputs.ndim == 2 and real:
        return "tokens" if np.issubdtype(inputs.dtype, np.integer) else "features"
    return "auto"


def as_inputs(inputs: np.ndarray, kind: str, where: str, setting: str = CLI_SETTING) -> np.ndarray:
    """Checks a source's inputs and returns them as their kind holds them (`kind_of`).

    Args:
      inputs: [N, ...] as the source gives them.
      kind: 'auto' (images [N, H, W] or [N, H, W, C] of any real dtype; float [N, D]: features;
        integer [N, T]: tokens) or one of `INPUT_KINDS`.
      where: the source, for the messages.
      setting: what the messages tell the user to set (`config.data.inputs`, or the argument
        of a notebook function).
    Returns:
      uint8 images `[N, H, W, C]` (a channel axis added to `[N, H, W]`), other images as
      float32, features float32 `[N, D]`, token ids int32 `[N, T]`.
    Raises:
      ValueError: one line naming the shape and dtype and what is accepted.
    """
    inputs = np.asarray(inputs)
    dtype, ndim = inputs.dtype, inputs.ndim
    integer = np.issubdtype(dtype, np.integer)
    real = integer or np.issubdtype(dtype, np.floating)
    if kind == "auto":
        kind = _auto_kind(inputs, where, setting)
    ok = {
        "images": real and ndim in (3, 4),
        "features": real and ndim == 2,
        "tokens": integer and ndim == 2,
    }
    if not ok.get(kind, False):
        raise ValueError(
            f"{where} has inputs {dtype} {inputs.shape}, which are not "
            f"{'any input kind' if kind == 'auto' else kind}; give images [N, H, W, C] (uint8 "
            "0-255 or float), float feature vectors [N, D] or integer token ids [N, T] (and "
            f"set {setting} to match, or 'auto')."
        )
    if kind == "images" and ndim == 3:
        inputs = inputs[..., None]
    if kind == "tokens":
        if inputs.size and (inputs.min() < 0 or inputs.max() > 2**31 - 1):
            raise ValueError(f"{where} has token ids outside [0, 2**31); token ids index a table.")
        return inputs.astype(np.int32, copy=False)
    if dtype == np.uint8 and kind == "images":
        return inputs
    inputs = inputs.astype(np.float32, copy=False)
    finite = np.isfinite(inputs).reshape(len(inputs), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)[:10].tolist()
        raise ValueError(f"{where} has NaN or inf {kind} at rows {bad}; clean those rows.")
    return inputs


def statistics(inputs: np.ndarray, name: str, split: str):
    """Mean and std `[C]` / `[D]` float32 of a split's own inputs: per channel (images; uint8
    in [0, 1] pixel units), per feature (features); empty for tokens. A constant channel or
    feature (std 0) gets std 1: it is only centered."""
    kind = kind_of(inputs)
    if kind == "tokens":
        return np.zeros((0,), np.float32), np.zeros((0,), np.float32)
    x = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
    if inputs.dtype == np.uint8:
        x = x / 255.0
    mean, std = x.mean(0), x.std(0)
    constant = std == 0
    if constant.any():
        logging.info(
            "%s:%s has %d constant %s: centered only",
            name,
            split,
            int(constant.sum()),
            "channels" if kind == "images" else "features",
        )
        std = np.where(constant, 1.0, std)
    logging.info("Normalization of %s from its %s split: mean=%s std=%s", name, split, mean, std)
    return mean.astype(np.float32), std.astype(np.float32)


def checked_normalization(normalization, inputs: np.ndarray, setting: str):
    """The given `(mean, std)` as `[C]` / `[D]` float32 arrays (a scalar applies to every
    channel or feature).

    Raises:
      ValueError: not two values, a length that is not the inputs' channels or features, a
        std that is not positive, or a normalization of token ids; the line names `setting`.
    """
    width = inputs.shape[-1]
    try:
        mean, std = (np.asarray(v, np.float32).reshape(-1) for v in normalization)
    except (TypeError, ValueError):
        raise ValueError(f"{setting} must be (mean, std), got {normalization!r}.") from None
    if kind_of(inputs) == "tokens":
        if mean.size or std.size:
            raise ValueError(f"{setting} is set, but token ids are not normalized; unset it.")
        return mean, std
    for v, what in ((mean, "mean"), (std, "std")):
        if v.size not in (1, width):
            raise ValueError(
                f"{setting} has a {what} of {v.size} values, but the inputs have {width} "
                f"{'channels' if kind_of(inputs) == 'images' else 'features'}; give 1 or {width}."
            )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"{setting} needs finite means and stds > 0, got {normalization!r}.")
    return np.broadcast_to(mean, (width,)).copy(), np.broadcast_to(std, (width,)).copy()


def normalization(
    inputs: np.ndarray, name: str, split: str, given=None, setting: str = "", own: bool = False
):
    """The `(mean, std)` a split of `inputs` is normalized with (see the module docstring).

    Args:
      inputs: a loaded split's inputs (`as_inputs`).
      name, split: the dataset's name (uint8 images of a name in `NORMALIZATION` take its
        constants) and the split's, for the log.
      given: (mean, std) to use, e.g. the training split's for a test split; None: the
        dataset's constants or the statistics of `inputs`.
      setting: what a message about `given` names.
      own: `given` is the user's own normalization (`config.data.mean`/`std`), which replaces
        a dataset's constants too; otherwise the constants come first.
    """
    known = inputs.dtype == np.uint8 and kind_of(inputs) == "images" and name in NORMALIZATION
    if known and not own:
        return tuple(np.asarray(v, np.float32) for v in NORMALIZATION[name])
    if given is not None:
        return checked_normalization(given, inputs, setting or "normalization")
    return statistics(inputs, name, split)
