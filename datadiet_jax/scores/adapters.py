"""One pure form for models of any framework: `apply(params, state, images) -> logits`.

`el2n_scores` and `grand_scores` take a `(model, variables)` pair; `adapt` turns every accepted pair
into an `Adapted` model and stacked `{'params': ..., 'state': ...}` variables, so the rest of the
library sees one form. `params` is every differentiated leaf (GraNd's gradient is taken w.r.t. all
of them); `state` is held constant (BatchNorm statistics, buffers). Both carry the K seeds on a
leading axis. The model always runs in eval mode.

Accepted pairs:

- Flax Linen: `(module, variables)` with `variables = init_variables(...)` (collections stacked
  over K). Called as `module.apply(variables, images, train=False)` (without `train` if
  `__call__` has no such argument); params are `variables['params']`, every other collection is
  state.
- Flax NNX: `nnx.split(module)` -> `(graphdef, state)`, the module's state carrying the K seeds
  on a leading axis, as `nnx.vmap` over a constructor makes it. One ordinary module (no seed
  axis) is passed alone as `(module, None)`: K = 1. Params are the `nnx.Param` variables, every
  other variable is state. Each call merges a fresh module and calls `module.eval()` (BatchNorm
  with running statistics, Dropout off) before `module(images)`; the given module is not
  changed.
- A plain function: `(apply_fn, params)` with `apply_fn(params, images) -> logits` and `params`
  any pytree stacked on a leading K axis; every leaf is differentiated. Non-differentiated
  arrays can be closed over (shared by all seeds), or passed per seed with `stateful`:
  `(stateful(fn), {'params': params, 'state': state})` with `fn(params, state, images)`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx

from datadiet_jax.scores import image_fit, inputs


@dataclasses.dataclass(frozen=True)
class stateful:  # noqa: N801 (used like a function: stateful(fn))
    """Marks `fn(params, state, images) -> logits`; pass variables `{'params': p, 'state': s}`."""

    fn: Callable


@dataclasses.dataclass(frozen=True)
class Adapted:
    """A model in the pure form. form: 'linen', 'nnx', 'function' or 'stateful'; model: the
    module, graphdef or function.

    Hashable when its model is (a compiled program is cached per Adapted model).
    """

    form: str
    model: Any
    train_arg: bool = False

    def apply(self, params, state, images: jax.Array) -> jax.Array:
        """Logits [B, C] of one model (no seed axis) in eval mode. images: [B, ...]."""
        if self.form == "linen":
            kwargs = {"train": False} if self.train_arg else {}
            return self.model.apply({**state, "params": params}, images, **kwargs)
        if self.form == "nnx":
            module = nnx.merge(self.model, params, state)
            module.eval()
            return module(images)
        if self.form == "stateful":
            return self.model.fn(params, state, images)
        return self.model(params, images)

    @property
    def uses_linen_sites(self) -> bool:
        """Linen models find GraNd's fast sites by module interception; others by their jaxpr."""
        return self.form == "linen"


def takes_train(module: nn.Module) -> bool:
    """Whether a Linen module's `__call__` has a `train` argument (set to False for scores)."""
    return "train" in inspect.signature(module.__call__).parameters


def adapt(model, variables) -> tuple[Adapted, dict]:
    """The pure form of a `(model, variables)` pair (see the module docstring).

    Returns:
      (adapted, {'params': stacked params, 'state': stacked state}), every leaf [K, ...].
    Raises:
      ValueError: a model of no accepted kind, or variables that do not fit it.
    """
    if isinstance(model, nn.Module):
        inputs.check_linen_variables(variables)
        state = {k: v for k, v in variables.items() if k != "params"}
        packed = {"params": variables["params"], "state": state}
        return Adapted("linen", model, takes_train(model)), packed
    if isinstance(model, nnx.Module):
        if variables is not None:
            raise ValueError(
                "an NNX module is passed alone, as (module, None) for one model; for K stacked "
                "seeds pass nnx.split(module) as (graphdef, state)."
            )
        model, variables = nnx.split(model)
        variables = jax.tree.map(lambda v: v[None], variables)  # one model: K = 1
    if isinstance(model, nnx.GraphDef):
        if not isinstance(variables, nnx.State):
            raise ValueError(
                f"an NNX graphdef needs its nnx.State as variables, got {type(variables).__name__}"
                "; pass *nnx.split(module)."
            )
        params, state = nnx.split_state(variables, nnx.Param, ...)
        return Adapted("nnx", model), {"params": params, "state": state}
    if isinstance(model, stateful):
        if not isinstance(variables, dict) or set(variables) != {"params", "state"}:
            raise ValueError(
                "a stateful(fn) model takes variables {'params': params, 'state': state}, "
                "both stacked over seeds."
            )
        return Adapted("stateful", model), dict(variables)
    if callable(model):
        return Adapted("function", model), {"params": variables, "state": {}}
    raise ValueError(
        f"model must be a Flax Linen module, an NNX module or graphdef, or a function "
        f"apply_fn(params, images), got {type(model).__name__}."
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
    adapted: Adapted, packed: dict, example_shape, dtype, num_examples: int | None = None
) -> tuple[int, int]:
    """Checks a non-Linen model on one example (abstractly); returns (K, num_classes).

    Args:
      adapted, packed: from `adapt`; example_shape: one example's shape (images
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
            "non-float arrays to the state (adapters.stateful) or close over them."
        )
    spec = lambda v, lead=1: jax.ShapeDtypeStruct(np.shape(v)[lead:], v.dtype)  # noqa: E731
    one = jax.tree.map(spec, packed)
    sample = jax.ShapeDtypeStruct((1, *example_shape), dtype)
    try:
        logits = jax.eval_shape(adapted.apply, one["params"], one["state"], sample)
    except Exception as err:  # noqa: BLE001 (the model's own error, reported in one line)
        whole = jax.tree.map(lambda v: spec(v, 0), packed)
        try:  # do the variables as given, seed axis and all, fit one model?
            jax.eval_shape(adapted.apply, whole["params"], whole["state"], sample)
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
