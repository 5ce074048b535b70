"""Models of plain functions in the model form: `init`/`apply` objects and bare functions.

Three kinds: an object with `init(key, sample)` and `apply(params, state, x, *, train, rng)`
(`FunctionModel`), `stateful(fn)` for an eval-mode `fn(params, state, x) -> logits` whose
variables are `{'params', 'state'}`, and `apply_fn(params, x) -> logits` (`ParamsOnly`, no
state). The last two have no `init`: pass their params. Forms are equal (and hash alike) when
their models are, so compiled programs are shared.

Usage:

    form = FunctionModel(my_model)              # my_model.init(...), my_model.apply(...)
    form = FunctionModel(stateful(fn))          # fn(params, state, x) -> logits [B, C]
    form = FunctionModel(ParamsOnly(apply_fn))  # apply_fn(params, x) -> logits [B, C]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from datadiet_jax.scores.model_form.base import ModelForm, hash_key


@dataclasses.dataclass(frozen=True)
class stateful:  # noqa: N801 (used like a function: stateful(fn))
    """Marks `fn(params, state, x) -> logits`, an eval-mode model with state; its variables are
    `{'params': params, 'state': state}`."""

    fn: Callable

    def init(self, key, sample):
        raise ValueError("a stateful(fn) model has no init; pass its params and state.")

    def apply(self, params, state, x, *, train, rng=None):
        return self.fn(params, state, x), state


@dataclasses.dataclass(frozen=True)
class ParamsOnly:
    """`apply_fn(params, x) -> logits` in the model form (no state, no mode)."""

    fn: Callable

    def init(self, key, sample):
        raise ValueError("a function apply_fn(params, x) has no init; pass its params.")

    def apply(self, params, state, x, *, train, rng=None):
        return self.fn(params, x), state


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionModel(ModelForm):
    """A model of plain functions: `model.init(key, sample)` and
    `model.apply(params, state, x, *, train, rng)`.

    Equal (and hashing alike) when the models are, so compiled programs are shared.
    """

    model: Any

    def _identity(self):
        return ("function", hash_key(self.model))

    def __hash__(self):
        return hash(self._identity())

    def __eq__(self, other):
        return isinstance(other, FunctionModel) and self._identity() == other._identity()

    def init(self, key, sample):
        return self.model.init(key, sample)

    def apply(self, params, state, x, *, train, rng=None):
        return self.model.apply(params, state, x, train=train, rng=rng)
