"""One model form for every framework: `init` and `apply` as pure functions.

    init(key, sample [1, ...])                      -> (params, state)
    apply(params, state, x [B, ...], *, train, rng) -> (logits [B, C], new state)
    logits(params, state, x [B, ...])               -> logits [B, C], eval mode

`params` are the trained leaves (GraNd differentiates all of them), `state` every other array
(BatchNorm statistics, buffers); both are plain pytrees, so optax and orbax see ordinary dicts.
`rng` is the PRNG key of a train-mode step's randomness (Dropout); eval mode takes none. The scores
library, the trainer, checkpoints and the notebook path all take this one form:

  base            the protocol `ModelForm`
  linen_model     `LinenModel`: a Linen module; its mode flag found by convention (`train`,
                  `deterministic`, ...) or named by `train_arg` ('frozen', 'not frozen')
  nnx_model       `NNXModel`: an NNX class or factory taking `rngs` (built per seed), or the
                  graphdef of `nnx.split`; `module.train()` and `module.eval()` switch its mode
  function_model  `FunctionModel`: `init`/`apply` objects, `stateful(fn)`, `apply_fn(params, x)`
  checks          abstract checks of a form's outputs and of stacked variables

A model trained in the wrong mode is caught after its first training step
(`training/mode_guard.py`): a mode flag no convention names cannot pass silently.

Usage:

    form = model_form(MyLinenNet())                              # flag found by convention
    form = model_form(MyLinenNet(), train_arg="not frozen")      # any other flag
    form = model_form(functools.partial(MyNNXNet, width=32))     # NNX: built per seed
    params, state = form.init(jax.random.key(0), images[:1])
    logits, state = form.apply(params, state, images, train=True, rng=jax.random.key(1))
    form, variables = from_pair(model, variables)   # what `grand_scores(model, variables)` takes
"""

from __future__ import annotations

import functools
import inspect

import flax.linen as nn
import jax
from flax import nnx

from datadiet_jax.scores import inputs
from datadiet_jax.scores.model_form.base import ModelForm
from datadiet_jax.scores.model_form.checks import check_outputs, check_pure, num_seeds
from datadiet_jax.scores.model_form.function_model import FunctionModel, ParamsOnly, stateful
from datadiet_jax.scores.model_form.linen_model import (
    TRAIN_WHEN_FALSE,
    TRAIN_WHEN_TRUE,
    LinenModel,
    ModeFlag,
    bool_arguments,
    find_mode_flags,
    parse_train_arg,
)
from datadiet_jax.scores.model_form.nnx_model import NNXModel

__all__ = [
    "TRAIN_WHEN_FALSE",
    "TRAIN_WHEN_TRUE",
    "FunctionModel",
    "LinenModel",
    "ModeFlag",
    "ModelForm",
    "NNXModel",
    "ParamsOnly",
    "bool_arguments",
    "check_outputs",
    "check_pure",
    "find_mode_flags",
    "from_pair",
    "is_function_model",
    "is_nnx_factory",
    "linen_module",
    "model_form",
    "num_seeds",
    "parse_train_arg",
    "stateful",
]


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


def model_form(model, *, train_arg: str | None = None) -> ModelForm:
    """The form of a model definition (see the module docstring); a form is returned as it is.

    Args:
      model: a Linen module, an NNX class or factory taking `rngs`, an object with `init` and
        `apply` of the form, or a `ModelForm`.
      train_arg: a Linen module's mode flag, `'name'` or `'not name'` (default: by convention).
    Raises:
      ValueError: a built NNX module (its K seeds need fresh constructions), `train_arg` for a
        model that is not Linen, or an object of no accepted kind.
    """
    if isinstance(model, LinenModel) and train_arg:
        model = model.module
    if isinstance(model, ModelForm):
        return model
    if isinstance(model, nn.Module):
        return LinenModel.of(model, train_arg)
    if train_arg:
        raise ValueError(
            f"train_arg={train_arg!r} names a Flax Linen module's mode flag, but the model is a "
            f"{type(model).__name__}; leave it unset."
        )
    if isinstance(model, nnx.Module):
        raise ValueError(
            f"got a constructed NNX module ({type(model).__name__}); training K seeds needs K "
            "fresh constructions: pass its class or a factory taking rngs, e.g. "
            "functools.partial(MyModel, width=32)."
        )
    if is_nnx_factory(model):
        return NNXModel.of(model)
    if is_function_model(model):
        return FunctionModel(model)
    raise ValueError(
        f"model must be a Flax Linen module, an NNX module class or factory taking rngs, or an "
        f"object with init(key, sample) and apply(params, state, x, *, train, rng); got "
        f"{type(model).__name__}."
    )


def from_pair(model, variables) -> tuple[ModelForm, dict]:
    """The form of a scores call's `(model, variables)` and its `{'params', 'state'}`, every
    leaf `[K, ...]`.

    Accepted pairs: a Linen module and its variables (`init_variables`); an NNX graphdef and its
    `nnx.State` (`nnx.split` of K stacked modules), or one NNX module with None (K = 1); a
    `stateful(fn)` with `{'params', 'state'}`; a function `apply_fn(params, x)` with its params;
    a `ModelForm` with `{'params', 'state'}` (a trained model of `train_seeds`).

    Raises:
      ValueError: a model of no accepted kind, or variables that do not fit it.
    """
    if isinstance(model, nn.Module):
        inputs.check_linen_variables(variables)
        state = {k: v for k, v in variables.items() if k != "params"}
        return LinenModel.of(model), {"params": variables["params"], "state": state}
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
        return NNXModel(None, model), {"params": params, "state": state}
    if isinstance(model, (ModelForm, stateful)):
        if not isinstance(variables, dict) or set(variables) != {"params", "state"}:
            raise ValueError(
                f"a {type(model).__name__} model takes variables {{'params': params, 'state': "
                "state}, both stacked over seeds."
            )
        form = model if isinstance(model, ModelForm) else FunctionModel(model)
        return form, dict(variables)
    if callable(model):
        return FunctionModel(ParamsOnly(model)), {"params": variables, "state": {}}
    raise ValueError(
        f"model must be a Flax Linen module, an NNX module or graphdef, a model form, or a "
        f"function apply_fn(params, images), got {type(model).__name__}."
    )


def linen_module(model) -> nn.Module:
    """The Linen module of a Linen model or its `LinenModel` (the analyses that intercept Linen
    layers need one).

    Raises:
      ValueError: a model of another framework.
    """
    if isinstance(model, LinenModel):
        return model.module
    if isinstance(model, nn.Module):
        return model
    raise ValueError(
        f"this analysis intercepts Flax Linen modules; the model is a {type(model).__name__} "
        "(config.model.name): use a Linen model for it."
    )
