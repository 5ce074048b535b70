"""Abstract checks of a model form (no compilation): its outputs, and stacked variables.

`check_outputs` checks that a form initializes on one example and returns `[1, C]` logits in
train and eval mode; `check_pure` that a non-Linen model's stacked `{'params', 'state'}` share
one leading seed axis (`num_seeds`), hold float params and fit the images. Each failure is a
one-line ValueError carrying the model's own error.

Usage:

    check_outputs(form, images[:1], num_classes=10)  # before a training
    num_seeds, num_classes = check_pure(form, packed, images.shape[1:], images.dtype)  # scores
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from datadiet_jax.scores import image_fit
from datadiet_jax.scores.model_form.base import ModelForm


def check_outputs(model: ModelForm, sample, num_classes: int) -> None:
    """Checks, abstractly (no compilation), that `model` initializes on `sample [1, ...]` and
    returns logits `[1, num_classes]` in train and eval mode.

    Raises:
      ValueError: one line with the model's own error, or the logits' shape.
    """
    shape = f"[N, {', '.join(map(str, sample.shape[1:]))}] {sample.dtype}"
    try:
        params, state = jax.eval_shape(model.init, jax.random.key(0), sample)
        for train in (True, False):
            run = functools.partial(model.apply, train=train, rng=jax.random.key(1))
            logits, _ = jax.eval_shape(run, params, state, sample)
    except Exception as err:  # noqa: BLE001 (the model's own error, reported in one line)
        raise ValueError(
            f"the model fails on the dataset's inputs {shape}: {image_fit.one_line(err)}; fix "
            "the model or config.model, or choose a dataset of the inputs it takes."
        ) from err
    if getattr(logits, "shape", None) != (1, num_classes):
        raise ValueError(
            f"the model returns {getattr(logits, 'shape', type(logits).__name__)} for one "
            f"example, but the dataset has {num_classes} classes: it must return logits "
            f"[B, {num_classes}] (set its num_classes)."
        )


def num_seeds(packed: dict) -> int:
    """The common leading axis K of every leaf of the packed variables."""
    leaves = jax.tree.leaves(packed)
    if not jax.tree.leaves(packed["params"]):
        raise ValueError("the model has no parameters to score with; pass its params.")
    leads = {np.shape(v)[0] if np.ndim(v) else None for v in leaves}
    if len(leads) != 1 or None in leads:
        raise ValueError(
            f"every leaf of params and state needs the same leading seed axis K, got leading "
            f"sizes {sorted(map(str, leads))}; stack K models (e.g. nnx.vmap over a constructor, "
            "or jax.tree.map(lambda x: x[None], params) for one)."
        )
    return leads.pop()


def check_pure(
    form, packed: dict, example_shape, dtype, num_examples: int | None = None
) -> tuple[int, int]:
    """Checks a non-Linen model on one example (abstractly); returns (K, num_classes).

    Args:
      form, packed: from `from_pair`; example_shape: one example's shape (images
        [N, *example_shape]); dtype: the images'; num_examples: N, for the messages.
    Raises:
      ValueError: one line: params that are not float or lack a seed axis, or a model that fails
        on the images (its own error's first line and the images' shape).
    """
    k = num_seeds(packed)
    ints = [
        v
        for v in jax.tree.leaves(packed["params"])
        if not jax.numpy.issubdtype(v.dtype, np.floating)
    ]
    if ints:
        raise ValueError(
            f"every params leaf is differentiated, but one has dtype {ints[0].dtype}; move "
            "non-float arrays to the state (stateful) or close over them."
        )
    spec = lambda v, lead=1: jax.ShapeDtypeStruct(np.shape(v)[lead:], v.dtype)  # noqa: E731
    one = jax.tree.map(spec, packed)
    sample = jax.ShapeDtypeStruct((1, *example_shape), dtype)
    try:
        logits = jax.eval_shape(form.logits, one["params"], one["state"], sample)
    except Exception as err:  # noqa: BLE001 (the model's own error, reported in one line)
        whole = jax.tree.map(lambda v: spec(v, 0), packed)
        try:  # do the variables as given, seed axis and all, fit one model?
            jax.eval_shape(form.logits, whole["params"], whole["state"], sample)
        except Exception:  # noqa: BLE001 (they do not: the images do not fit, or the model)
            images = "[" + ", ".join(map(str, (num_examples or "N", *example_shape))) + "]"
            raise ValueError(
                f"the model fails on images {images} ({list(example_shape)} per example) with "
                f"the params of one seed: {image_fit.one_line(err)}; pass images of the shape the "
                "model takes, and the params of this model stacked on a leading seed axis."
            ) from err
        raise ValueError(
            f"the params have no leading seed axis: the model runs on them as given but not on "
            f"one seed's (leading axis removed): {image_fit.one_line(err)}; stack them (e.g. "
            "jax.tree.map(lambda x: x[None], params)); an NNX module passed alone is one model, "
            "pass nnx.split(module) for stacked seeds."
        ) from err
    if not isinstance(logits, jax.ShapeDtypeStruct) or len(logits.shape) != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(f"model must return logits [B, C], got {shape}.")
    return k, logits.shape[1]
