"""Flax NNX modules in the model form: built per seed from a factory, or a split graphdef.

`params` are the `nnx.Param` variables and `state` the others; train mode calls
`module.train()`, eval mode `module.eval()`. PRNG keys the module holds (Dropout's) are stored as
key data and, in train mode, replaced by `fold_in(rng, i)`, so a step's randomness comes from its
`rng` alone. A graphdef of `nnx.split` scores modules built elsewhere but cannot build fresh
seeds (`init`).

Usage:

    form = NNXModel.of(functools.partial(MyNNXNet, width=32))  # a factory taking rngs
    params, state = form.init(jax.random.key(0), images[:1])
    logits = form.logits(params, state, images)  # [B, C], after module.eval()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from datadiet_jax.scores.model_form.base import ModelForm, hash_key


@dataclasses.dataclass(frozen=True, eq=False)
class NNXModel(ModelForm):
    """A Flax NNX module in the model form.

    `params` are the `nnx.Param` variables, `state` the others. Train mode calls
    `module.train()`, eval mode `module.eval()`. PRNG keys the module holds (Dropout's) are
    stored as key data and, in train mode, replaced by `fold_in(rng, i)`, so a step's randomness
    comes from its `rng` alone.

    Attributes:
      factory: the class or factory taking `rngs` (None for a graphdef of `nnx.split`).
      graphdef: the module's graph definition.
      key_paths: the paths of the state leaves that are PRNG keys (stored as key data).
    """

    factory: Any
    graphdef: Any
    key_paths: tuple = ()

    @classmethod
    def of(cls, factory) -> NNXModel:
        """The form of an NNX class or factory (its graphdef from an abstract construction)."""
        abstract = nnx.eval_shape(lambda: factory(rngs=nnx.Rngs(0)))
        graphdef, _, state = nnx.split(abstract, nnx.Param, ...)
        paths = tuple(
            path
            for path, leaf in jax.tree_util.tree_leaves_with_path(state.to_pure_dict())
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        )
        return cls(factory, graphdef, paths)

    def _identity(self):
        return ("nnx", hash_key(self.factory if self.factory is not None else self.graphdef))

    def __hash__(self):
        return hash(self._identity())

    def __eq__(self, other):
        return isinstance(other, NNXModel) and self._identity() == other._identity()

    def init(self, key, sample):
        if self.factory is None:
            raise ValueError(
                "this NNX model is a graphdef of nnx.split, which cannot build fresh seeds; pass "
                "its class or a factory taking rngs."
            )
        _, params, state = nnx.split(self.factory(rngs=nnx.Rngs(key)), nnx.Param, ...)
        return params.to_pure_dict(), _keys_to_data(state.to_pure_dict(), self.key_paths)

    def apply(self, params, state, x, *, train, rng=None):
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

    def logits(self, params, state, x):
        return self.apply(params, state, x, train=False)[0]

    def mode_layers(self, params, state, sample):
        module = nnx.merge(self.graphdef, params, _data_to_keys(state, self.key_paths, None))
        kinds = (nnx.BatchNorm, nnx.Dropout)
        return sorted({type(m).__name__ for _, m in nnx.iter_graph(module) if isinstance(m, kinds)})

    def mode_hint(self) -> str:
        return (
            "its layers must follow module.train() and module.eval() (nnx.Dropout, nnx.BatchNorm)"
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
