"""Validation of the arguments of the score functions: one-line ValueErrors naming the fix.

One set of checks serves the arrays of a call and each item of a stream (`batches`): `check_pairs`
(1-D integer labels, equal lengths, float images: integer images must be converted and normalized
by the caller, never silently cast, unless `integer_inputs` says they are token ids >= 0 for a
model whose first layer is an embedding), `check_finite` and `check_label_range`. `check_args`
checks the batch size and the seed-axis option. `check_model` checks that Linen variables are K
stacked `model.init` outputs (shapes from an abstract `model.init`, cached) and tells variables
that are wrong from images that do not fit the model (`image_fit`). `invalid_scores` says what a
valid score is: finite, or +inf.

Usage:

    images, labels, num_seeds = inputs.check_inputs(
        check_model_fn, images, labels, batch_size=256, seed_axis="unroll"
    )  # check_model_fn: (example_shape, dtype, num_examples=) -> (K, num_classes)
    bad = inputs.invalid_scores(scores)  # bool, same shape: NaN or -inf
"""

from __future__ import annotations

import dataclasses
import functools

import flax
import jax
import numpy as np

from datadiet_jax.scores import image_fit
from datadiet_jax.scores import seed_axis as seed_axis_lib


def invalid_scores(values) -> np.ndarray:
    """Bool mask, same shape as `values`, of the scores that are NaN or -inf.

    A valid score is a finite number, or +inf (the forgetting score of an example never
    learned: it ranks above every finite score, also after averaging over seeds); higher means
    harder. NaN and -inf mean a failed computation. Every consumer of scores (pruning, the
    reports, the score files) checks them with this mask.
    """
    arr = np.asarray(values, dtype=np.float64)
    return ~(np.isfinite(arr) | np.isposinf(arr))


def check_linen_variables(variables) -> None:
    """Refuses Linen variables that are not a dict with a 'params' collection."""
    if not isinstance(variables, dict | flax.core.FrozenDict) or "params" not in variables:
        raise ValueError(
            "variables must be a dict with a 'params' collection stacked over seeds; "
            "build them with init_variables(model, key, num_seeds, images[:1])."
        )


def _abstract_model(model, shape, dtype, mode: tuple):
    """(flat `model.init` shapes, logits shape) for one example of `shape`, by abstract tracing.

    The logits shape is None when `model.apply` fails on the model's own init (see `_fit`).
    """
    kwargs = dict(mode)
    sample = jax.ShapeDtypeStruct(shape, dtype)
    init = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), sample)
    try:
        logits = tuple(jax.eval_shape(lambda v, x: model.apply(v, x, **kwargs), init, sample).shape)
    except Exception:  # noqa: BLE001 (the error is found again and reported by _fit)
        logits = None
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(init))
    return {k: tuple(v.shape) for k, v in flat.items()}, logits


_abstract_cached = functools.lru_cache(maxsize=32)(_abstract_model)


def _abstract(model, shape, dtype, mode: tuple):
    try:
        return _abstract_cached(model, shape, np.dtype(dtype), mode)
    except TypeError:  # an unhashable module
        return _abstract_model(model, shape, np.dtype(dtype), mode)


def _flat(variables) -> dict:
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))


def _leaf_mismatch(have: dict, want: dict) -> str:
    """The first leaf whose per-seed shape differs from `model.init`'s, as a message."""
    for k in want:
        shape = tuple(np.shape(have[k]))
        if shape[1:] != want[k]:
            return (
                f"variables leaf {'/'.join(k)} has shape {shape}, expected [K, *{want[k]}]; "
                "stack K models on a leading seed axis (see init_variables)."
            )
    return ""


def _seed_axis_size(have: dict) -> int:
    """The common leading axis K of every variables leaf."""
    leads = {np.shape(v)[0] if np.ndim(v) else None for v in have.values()}
    if len(leads) != 1 or None in leads:
        raise ValueError(
            f"variables leaves disagree on the seed axis size ({sorted(map(str, leads))}); "
            "every leaf needs the same leading K (see init_variables)."
        )
    return leads.pop()


def _images_message(failure: image_fit.Failure, example_shape, num_examples) -> str:
    images = (num_examples, *example_shape)
    return (
        f"images {image_fit.shape_str(images)} ({image_fit.shape_str(example_shape)} per "
        f"example) do not fit the model: {failure.detail(images)}; pass images of the shape "
        "the variables were initialized on, or initialize them on these images "
        "(init_variables(model, key, K, sample_input=images[:1]))."
    )


def _fit(model, variables, want, sample, mode, num_examples) -> tuple:
    """The logits shape of one seed's model on `sample`; or why the images or variables fail.

    Reached when the variables carry one seed axis but do not match `model.init` on these images
    (`want`, None when `model.init` itself fails on them), or match it and `model.apply` fails:
    they may still run (a model whose init differs), the images may not fit variables
    initialized on another shape, the variables may not belong to the model, or the model may
    fail whatever its variables (e.g. a BatchNorm in training mode updating its statistics).
    """
    one = jax.tree.map(lambda v: jax.ShapeDtypeStruct(np.shape(v)[1:], v.dtype), variables)
    logits_shape, failure = image_fit.first_failure(model, one, sample, mode)
    if failure is None:
        return logits_shape
    images = (num_examples, *sample.shape[1:])
    have = _flat(variables)
    mismatch = _leaf_mismatch(have, want) if want is not None else ""
    if want is not None and not mismatch:
        updates = issubclass(failure.error_type, flax.errors.ModifyScopeVariableError)
        raise ValueError(
            f"the model fails on images {image_fit.shape_str(images)} with variables that match "
            f"model.init: {failure.detail(images)}"
            + (
                "; a layer updates a collection in eval mode (a BatchNorm in training mode?): "
                "apply the model in inference mode (BatchNorm(use_running_average=True), or "
                "train=False)."
                if updates
                else "."
            )
        )
    expected = None
    if want is not None:
        expected = {k[-1]: v for k, v in want.items() if k[:-1] == ("params", *failure.path)}
    if failure.blames_images(expected):
        raise ValueError(_images_message(failure, sample.shape[1:], num_examples))
    raise ValueError(
        mismatch
        or f"variables do not fit the model: {failure.detail(images)}; pass K stacked "
        "variables of this model (see init_variables)."
    )


def check_args(batch_size, seed_axis) -> None:
    """Checks the batch size and the seed-axis option (see `seed_axis.resolve`)."""
    seed_axis_lib.resolve(seed_axis)
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")


def check_model(
    model, variables, example_shape, dtype, mode: tuple, num_examples: int | None = None
) -> tuple[int, int]:
    """Checks Linen variables against the model for one example shape; returns (K, classes).

    Args:
      model: a Linen module; variables: K stacked `model.init` outputs, every leaf [K, ...].
      example_shape: one example's shape (images [N, *example_shape]); dtype: the images';
      mode: the eval-mode keyword arguments as `(name, value)` pairs; num_examples: N, for
        the messages.
    Raises:
      ValueError: one line: variables without a seed axis, not of this model, or images that do
        not fit the model (naming the layer, what it takes and what the images give it).
    """
    check_linen_variables(variables)
    sample = jax.ShapeDtypeStruct((1, *example_shape), np.dtype(dtype))
    try:
        want, logits_shape = _abstract(model, sample.shape, dtype, mode)
    except Exception:  # noqa: BLE001 (init fails on images the model does not take: see _fit)
        want, logits_shape = None, None
    have = _flat(variables)
    if want is not None:
        missing = [k for k in want if k not in have]
        if missing:
            raise ValueError(
                f"variables lack {'/'.join(missing[0])} (and {len(missing) - 1} more) that "
                "model.init creates; pass the variables of this model, e.g. from init_variables."
            )
        if all(tuple(np.shape(have[k])) == want[k] for k in want):
            raise ValueError(
                "variables have no leading seed axis (they match a single model.init); stack "
                "them, e.g. jax.tree.map(lambda x: x[None], variables), or use init_variables."
            )
    num_seeds = _seed_axis_size(have)
    if want is None or logits_shape is None or _leaf_mismatch(have, want):
        logits_shape = _fit(model, variables, want, sample, mode, num_examples)
    if len(logits_shape) != 2:
        raise ValueError(f"model must return logits [B, C], got shape {logits_shape}.")
    return num_seeds, logits_shape[1]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where checked examples come from, as the messages name them.

    name: 'the input' (arrays) or 'stream item 3'; indices: what positions are called
    ('indices', 'stream indices'); offset: the position of the source's first example.
    """

    name: str = "the input"
    indices: str = "indices"
    offset: int = 0


def check_input_dtype(inputs, where: str = "images", integer_inputs: bool = False) -> None:
    """Refuses integer images (they must be converted and normalized by the caller); with
    `integer_inputs`, refuses anything but integer token ids >= 0.

    Args:
      inputs: [n, ...] numpy array; where: its name in the messages; integer_inputs: the model
        takes integer token ids (an embedding lookup) rather than float inputs.
    """
    dtype = inputs.dtype
    if integer_inputs:
        if not np.issubdtype(dtype, np.integer):
            raise ValueError(
                f"{where} have dtype {dtype}, but integer_inputs=True takes integer token ids; "
                "pass int32 ids, or integer_inputs=False for float inputs."
            )
        if inputs.size and inputs.min() < 0:
            bad = np.flatnonzero((inputs.reshape(len(inputs), -1) < 0).any(axis=1))[:10]
            raise ValueError(
                f"{where} hold negative token ids at rows {bad.tolist()}; token ids index an "
                "embedding table and must be >= 0."
            )
        return
    check_float_images(dtype, where)


def check_float_images(dtype, where: str = "images") -> None:
    """Refuses integer images: they must be converted and normalized by the caller."""
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{where} have dtype {dtype}, not a float type; convert them to float and "
            "normalize them first, e.g. (images / 255 - mean) / std as the model was trained "
            "(token ids of a model with an embedding first layer: integer_inputs=True)."
        )


def check_pairs(
    images, labels, source: Source = Source(), integer_inputs: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Checks labels (1-D integer), lengths and the images' dtype (float, or integer token ids
    with `integer_inputs`) of some examples.

    Args:
      images: [n, ...] array-like; labels: [n] array-like.
      source: where they come from, for the messages.
      integer_inputs: the inputs are integer token ids (see `check_input_dtype`).
    Returns:
      (images [n, ...], labels [n]) as host numpy arrays.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{source.name} has labels {labels.dtype} {labels.shape}; labels must be a 1-D "
            "integer array of class indices, not one-hot vectors."
        )
    if images.ndim < 1 or len(images) != len(labels):
        raise ValueError(
            f"{source.name} has {len(images) if images.ndim else 0} images and {len(labels)} "
            "labels (different lengths); pass one label per image."
        )
    check_input_dtype(images, f"{source.name}'s images", integer_inputs)
    return images, labels


def nonfinite_rows(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Indices of examples with a NaN or inf, scanned in chunks to bound host memory."""
    bad = [np.zeros((0,), np.int64)]
    for lo in range(0, len(images), chunk):
        part = images[lo : lo + chunk]
        bad.append(np.flatnonzero(~np.isfinite(part.reshape(len(part), -1)).all(axis=1)) + lo)
    return np.concatenate(bad)


def check_finite(images: np.ndarray, source: Source = Source()) -> None:
    """Refuses images with a NaN or inf, naming the first ten examples."""
    bad = nonfinite_rows(images)
    if bad.size:
        raise ValueError(
            f"{source.name} has NaN or inf images at {source.indices} "
            f"{(bad[:10] + source.offset).tolist()}; clean or drop those examples."
        )


def check_label_range(labels: np.ndarray, num_classes: int, source: Source = Source()) -> None:
    """Refuses labels outside [0, num_classes), naming the first ten."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"{source.name} has labels out of range [0, {num_classes}) at {source.indices} "
            f"{(bad[:10] + source.offset).tolist()} (values {labels[bad[:10]].tolist()}); fix "
            "the labels or the model num_classes."
        )


def check_inputs(check_model_fn, images, labels, batch_size, seed_axis, integer_inputs=False):
    """Validates the arguments of a scores call on arrays.

    Args:
      check_model_fn: `(example_shape, dtype, num_examples=N) -> (K, num_classes)`, checking the
        model and its variables (`check_model` for Linen, `model_form.check_pure` for others).
      images, labels, batch_size, seed_axis, integer_inputs: as `scores.el2n_scores`.
    Returns:
      (images [N, ...] float (integer ids with `integer_inputs`), labels [N] int32, K) with
      images and labels as host numpy arrays.
    Raises:
      ValueError: one line naming the problem and the fix.
    """
    check_args(batch_size, seed_axis)
    images, labels = check_pairs(images, labels, integer_inputs=integer_inputs)
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one example.")
    check_finite(images)
    num_seeds, num_classes = check_model_fn(
        images.shape[1:], images.dtype, num_examples=len(images)
    )
    check_label_range(labels, num_classes)
    return images, labels.astype(np.int32), num_seeds
