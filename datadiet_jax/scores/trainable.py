"""The train-mode form of a model: `init` and `apply` pure functions, for any framework.

`adapters.py` turns a `(model, variables)` pair into the eval-mode form scores need; this module
turns a model *definition* into what a training needs as well: fresh initializations, a
train-mode forward pass that returns the updated state (BatchNorm statistics), and the eval-mode
pair the scores take. One `Trainable` serves the pipeline's training, scoring, checkpoints and
retraining alike:

  init(key, sample [1, ...])                      -> (params, state)
  apply(params, state, x [B, ...], *, train, rng) -> (logits [B, C], new state)
  scoring_pair(params, state)                     -> (model, variables) for `grand_scores`

`params` is every trained leaf, `state` every other array (both plain pytrees, so optax and
orbax see ordinary dicts); `rng` is a PRNG key for Dropout in train mode (None in eval mode).

Accepted definitions (`trainable`):

- a Flax Linen module: `init` is `module.init(key, sample, train=False)` (without `train` if
  `__call__` has no such argument); `params` is the 'params' collection and `state` every other
  collection; train mode is `apply(..., train=True, mutable=<state collections>,
  rngs={'dropout': rng})`.
- a Flax NNX module factory `factory(rngs=nnx.Rngs(key))` (an `nnx.Module` class, or a
  `functools.partial` of one with its other arguments bound): `params` are the `nnx.Param`
  variables, `state` the others; train mode calls `module.train()`, eval mode `module.eval()`.
  PRNG keys held by the module (Dropout's) are stored as key data and, in train mode, replaced
  by keys derived from `rng`, so a step's randomness comes from (seed, step) and nothing else.
- a plain-function model: any object with `init(key, sample) -> (params, state)` and
  `apply(params, state, x, *, train, rng) -> (logits, new_state)`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from datadiet_jax.scores import adapters, image_fit

FORMS = ("linen", "nnx", "function")


@dataclasses.dataclass(frozen=True, eq=False)
class Trainable:
    """A model in the train-mode pure form (see the module docstring).

    Attributes:
      form: 'linen', 'nnx' or 'function'.
      model: the Linen module, the NNX factory, or the plain-function model.
      train_arg: whether a Linen module's `__call__` takes `train`.
      graphdef: for NNX, the module's graph definition (from an abstract construction).
      key_paths: for NNX, the paths of the state leaves that are PRNG keys.

    Equal (and hashing alike) when the forms and models are, so compiled programs are shared.
    """

    form: str
    model: Any
    train_arg: bool = False
    graphdef: Any = None
    key_paths: tuple = ()

    def _identity(self):
        try:
            hash(self.model)
            return (self.form, self.model)
        except TypeError:
            return (self.form, id(self.model))

    def __hash__(self):
        return hash(self._identity())

    def __eq__(self, other):
        return isinstance(other, Trainable) and self._identity() == other._identity()

    def init(self, key: jax.Array, sample: jax.Array) -> tuple[Any, Any]:
        """(params, state) of one fresh model; vmappable over `key`. sample: [1, ...] input."""
        if self.form == "linen":
            variables = self.model.init(key, sample, **self._train_kw(False))
            params = variables["params"]
            return params, {k: v for k, v in variables.items() if k != "params"}
        if self.form == "nnx":
            _, params, state = nnx.split(self.model(rngs=nnx.Rngs(key)), nnx.Param, ...)
            return params.to_pure_dict(), _keys_to_data(state.to_pure_dict(), self.key_paths)
        return self.model.init(key, sample)

    def apply(self, params, state, x: jax.Array, *, train: bool, rng: jax.Array | None = None):
        """(logits [B, C], new state) of one model on `x [B, ...]`; eval mode leaves the state.

        rng: a PRNG key for Dropout in train mode (None: no randomness is available).
        """
        if self.form == "linen":
            variables = {"params": params, **state}
            kwargs = self._train_kw(train)
            if not train:
                return self.model.apply(variables, x, **kwargs), state
            rngs = {"dropout": rng} if rng is not None else {}
            if not state:
                return self.model.apply(variables, x, rngs=rngs, **kwargs), state
            logits, updates = self.model.apply(
                variables, x, rngs=rngs, mutable=list(state), **kwargs
            )
            return logits, {**state, **updates}
        if self.form == "nnx":
            state_in = _data_to_keys(state, self.key_paths, rng if train else None)
            module = nnx.merge(self.graphdef, params, state_in)
            if train:
                module.train()
            else:
                module.eval()
            logits = module(x)
            if not train:
                return logits, state
            _, _, new_state = nnx.split(module, nnx.Param, ...)
            return logits, _keys_to_data(new_state.to_pure_dict(), self.key_paths)
        return self.model.apply(params, state, x, train=train, rng=rng)

    def eval_logits(self, params, state, x: jax.Array) -> jax.Array:
        """Logits [B, C] in eval mode: `apply(..., train=False)`'s first output."""
        return self.apply(params, state, x, train=False)[0]

    def scoring_pair(self, params, state) -> tuple[Any, Any]:
        """The `(model, variables)` pair `el2n_scores`/`grand_scores` take, every leaf [K, ...].

        Linen models keep their module (GraNd finds their layers by module interception); the
        others are `adapters.stateful(self.eval_logits)` with `{'params', 'state'}`.
        """
        if self.form == "linen":
            return self.model, {"params": params, **state}
        return adapters.stateful(self.eval_logits), {"params": params, "state": state}

    def linen_module(self) -> nn.Module:
        """The Linen module of a 'linen' Trainable.

        Raises:
          ValueError: another form (the analyses that intercept Linen modules need one).
        """
        if self.form != "linen":
            raise ValueError(
                f"this analysis intercepts Flax Linen modules; the model is a {self.form} model "
                "(config.model.name): use a Linen model for it."
            )
        return self.model

    def _train_kw(self, train: bool) -> dict:
        return {"train": train} if self.train_arg else {}


def check_outputs(model: Trainable, sample, num_classes: int) -> None:
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


def is_nnx_factory(obj) -> bool:
    """Whether `obj` builds an NNX module from `rngs` (an `nnx.Module` class or a partial of
    one, or a function with an `rngs` argument)."""
    target = obj.func if isinstance(obj, functools.partial) else obj
    if isinstance(target, type):
        return issubclass(target, nnx.Module)
    try:
        return callable(obj) and "rngs" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def is_function_model(obj) -> bool:
    """Whether `obj` is a plain-function model: callable `init` and `apply`, not a Linen module
    and not a class."""
    return (
        not isinstance(obj, (type, nn.Module))
        and callable(getattr(obj, "init", None))
        and callable(getattr(obj, "apply", None))
    )


def trainable(model) -> Trainable:
    """The `Trainable` of a model definition (see the module docstring); a `Trainable` is
    returned as it is.

    Raises:
      ValueError: a built NNX module (its K seeds need fresh constructions: pass its factory),
        or an object of no accepted kind.
    """
    if isinstance(model, Trainable):
        return model
    if isinstance(model, nn.Module):
        return Trainable("linen", model, adapters.takes_train(model))
    if isinstance(model, nnx.Module):
        raise ValueError(
            f"got a constructed NNX module ({type(model).__name__}); training K seeds needs K "
            "fresh constructions: pass its class or a factory taking rngs, e.g. "
            "functools.partial(MyModel, width=32)."
        )
    if is_nnx_factory(model):
        abstract = nnx.eval_shape(lambda: model(rngs=nnx.Rngs(0)))
        graphdef, _, state = nnx.split(abstract, nnx.Param, ...)
        paths = tuple(
            path
            for path, leaf in jax.tree_util.tree_leaves_with_path(state.to_pure_dict())
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        )
        return Trainable("nnx", model, graphdef=graphdef, key_paths=paths)
    if is_function_model(model):
        return Trainable("function", model)
    raise ValueError(
        f"model must be a Flax Linen module, an NNX module class or factory taking rngs, or an "
        f"object with init(key, sample) and apply(params, state, x, *, train, rng); got "
        f"{type(model).__name__}."
    )


def _map_paths(tree, paths: tuple, fn: Callable):
    """`tree` with `fn(leaf, i)` applied to the leaf at `paths[i]`."""
    if not paths:
        return tree
    where = {path: i for i, path in enumerate(paths)}
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: fn(leaf, where[path]) if path in where else leaf, tree
    )


def _keys_to_data(state, paths: tuple):
    """NNX state with its PRNG keys as raw key data (uint32 arrays orbax and optax can hold)."""
    return _map_paths(state, paths, lambda key, _: jax.random.key_data(key))


def _data_to_keys(state, paths: tuple, rng):
    """NNX state with its key data as PRNG keys again: with `rng`, the i-th key is
    `fold_in(rng, i)` (a step's randomness comes from its rng alone)."""
    if rng is None:
        return _map_paths(state, paths, lambda data, _: jax.random.wrap_key_data(data))
    return _map_paths(state, paths, lambda data, i: jax.random.fold_in(rng, i))
