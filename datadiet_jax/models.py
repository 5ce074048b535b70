"""The paper's Flax Linen models, the model registry, and the model of a config (`build`).

`config.model.name` is a registered name (`MODELS`, `register`) or an import path
`package.module:attribute`; `build` turns it into the train-mode form every stage uses
(`scores/model_form/`), so Linen, NNX and plain-function models meet the pipeline alike.

Every model is called as `model.apply(variables, images, train=...)` with `images: [B, H, W, C]`
float32 and returns logits `[B, num_classes]`. BatchNorm keeps running statistics in the
`batch_stats` collection; `train=False` uses them (the mode scores are computed in).

Usage:

    from datadiet_jax import models
    model = models.get_model("resnet18", num_classes=10)     # a Linen module
    models.register("my_cnn", MyCNN)                         # then config.model.name='my_cnn'
    form = models.build(config.model, num_classes=10)        # the model form the stages use
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from datadiet_jax.scores import model_form as form_lib
from datadiet_jax.scores.model_form import ModelForm

_BN = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


class SmallCNN(nn.Module):
    """Two 3x3 conv layers (`width`, 2 * `width` channels; 32, 64 by default) with BatchNorm and
    max-pooling, then Dense(`hidden`) with BatchNorm, then the Dense classifier.

    The hidden layer is normalized too: its inputs are all positive (ReLU, max-pool) and strongly
    correlated across images, so without normalization the sign of a unit's pre-activation is
    nearly the same for every image. A third of the units start dead, and at learning rate 0.1
    with Nesterov momentum the first steps kill most of the rest (over 90% after 5 steps on
    2,000 Fashion-MNIST images; the loss rose to 30 and training never recovered). With
    BatchNorm, under 5% are dead and the same training converges.
    """

    num_classes: int = 10
    width: int = 32
    hidden: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        for features in (self.width, 2 * self.width):
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False)(x)
            x = _BN(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.hidden, use_bias=False)(x)
        x = nn.relu(_BN(use_running_average=not train)(x))
        return nn.Dense(self.num_classes)(x)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a 1x1 projection when the shape changes."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        bn = functools.partial(_BN, use_running_average=not train)
        y = nn.Conv(self.features, (3, 3), self.strides, padding=1, use_bias=False)(x)
        y = nn.relu(bn()(y))
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
        y = bn()(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x)
            x = bn()(x)
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3, 1x1 with expansion 4)."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        bn = functools.partial(_BN, use_running_average=not train)
        out = self.features * 4
        y = nn.relu(bn()(nn.Conv(self.features, (1, 1), use_bias=False)(x)))
        y = nn.Conv(self.features, (3, 3), self.strides, padding=1, use_bias=False)(y)
        y = nn.relu(bn()(y))
        y = bn()(nn.Conv(out, (1, 1), use_bias=False)(y))
        if self.strides != 1 or x.shape[-1] != out:
            x = bn()(nn.Conv(out, (1, 1), self.strides, use_bias=False)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet for 32x32 inputs as in the paper's code: 3x3 stride-1 stem, no max-pool."""

    block: Callable[..., nn.Module]
    stage_sizes: Sequence[int]
    num_classes: int = 10
    width: int = 64

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(_BN(use_running_average=not train)(x))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block(self.width * 2**i, strides)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


MODELS: dict[str, Callable] = {
    "small_cnn": SmallCNN,
    "resnet18": functools.partial(ResNet, block=BasicBlock, stage_sizes=(2, 2, 2, 2)),
    "resnet50": functools.partial(ResNet, block=Bottleneck, stage_sizes=(3, 4, 6, 3)),
}


def register(name: str, factory: Callable) -> None:
    """Makes `factory` the model `config.model.name=name` builds (for configs written as Python
    files; an import path `package.module:attribute` needs no registration).

    Args:
      name: a name without ':' (those are import paths).
      factory: a Linen module class or factory, an NNX module class or factory taking `rngs`,
        or a plain-function model or its factory (`scores/model_form/`). Called with
        `config.model.kwargs`, and with `num_classes` when it takes that argument.
    Raises:
      ValueError: a name with ':', or one already registered for another factory.
    """
    if ":" in name:
        raise ValueError(f"model name {name!r} has ':', which marks import paths; drop it.")
    if MODELS.get(name, factory) is not factory:
        raise ValueError(f"model {name!r} is already registered; pick another name.")
    MODELS[name] = factory


def get_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Returns the registered model `name` with `num_classes` outputs.

    Raises:
      ValueError: `name` is not registered; the message lists the valid names.
    """
    return resolve(name)(num_classes=num_classes, **kwargs)


def resolve(name: str) -> Callable:
    """The factory of `config.model.name`: a registered name or `package.module:attribute`.

    Raises:
      ValueError: an unknown name or an import path that does not import, in one line.
    """
    if ":" not in name:
        if name not in MODELS:
            raise ValueError(
                f"Unknown model {name!r}; set config.model.name to one of {sorted(MODELS)}, to "
                "an import path package.module:attribute, or register it with "
                "datadiet_jax.models.register(name, factory)."
            )
        return MODELS[name]
    module_name, _, attribute = name.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 (any import error, reported in one line)
        raise ValueError(
            f"config.model.name={name!r}: cannot import {module_name!r} ({type(err).__name__}: "
            f"{err}); put its package on PYTHONPATH or fix the path."
        ) from err
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"config.model.name={name!r}: {module_name!r} has no attribute {attribute!r}; "
                "use package.module:attribute."
            )
        obj = getattr(obj, part)
    return obj


def _signature(factory) -> dict[str, inspect.Parameter]:
    """The parameters of `factory`: a class's own `__init__` (flax 0.12 reports an NNX class
    itself as `(*args, **kwargs)`), less what a `functools.partial` binds."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if isinstance(target, type):
        params = list(inspect.signature(target.__init__).parameters.values())[1:]  # no self
    else:
        params = list(inspect.signature(target).parameters.values())
    if isinstance(factory, functools.partial):
        params = [p for p in params[len(factory.args) :] if p.name not in factory.keywords]
    return {p.name: p for p in params}


def _parameters(factory) -> dict | None:
    """The keyword arguments `factory` takes ({name: default}), None when it takes any."""
    try:
        params = _signature(factory)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {k: p.default for k, p in params.items() if k not in ("self", "parent", "name")}


def _arguments(model_cfg, factory, num_classes: int) -> dict:
    """The keyword arguments of `factory` from `config.model` (kwargs, width, num_classes)."""
    kwargs = dict(model_cfg.get("kwargs", {}) or {})
    takes = _parameters(factory)
    smoke_width = model_cfg.get("smoke_width", 0) if "width" in (takes or {}) else 0
    width = model_cfg.width or smoke_width
    if width:
        kwargs["width"] = width
    unknown = sorted(set(kwargs) - set(takes)) if takes is not None else []
    if unknown:
        field = "width" if unknown == ["width"] else f"kwargs.{unknown[0]}"
        raise ValueError(
            f"config.model.{field} is set, but model {model_cfg.name!r} takes no argument "
            f"{unknown[0]!r}; it takes {sorted(k for k in takes if k not in ('rngs',))}."
        )
    if takes is None or "num_classes" in takes:
        kwargs.setdefault("num_classes", num_classes)
    return kwargs


def check(model_cfg) -> None:
    """Checks `config.model` without building it: the name resolves and every argument it sets
    is one the model takes.

    Raises:
      ValueError: one line naming the field to fix.
    """
    _arguments(model_cfg, resolve(model_cfg.name), 10)
    if model_cfg.get("train_arg"):
        try:
            form_lib.parse_train_arg(model_cfg.train_arg)
        except ValueError as err:
            raise ValueError(f"config.model.{err}") from None


def width(model_cfg) -> int:
    """The `width` `build` passes the model of `config.model` (0: none, the model's default)."""
    return _arguments(model_cfg, resolve(model_cfg.name), 10).get("width", 0)


def build(model_cfg, num_classes: int) -> ModelForm:
    """The model of `config.model` in the model form (`scores/model_form/`).

    The factory (`resolve`) gets `config.model.kwargs`, `width` when set (or `smoke_width` when
    the model takes `width`), and `num_classes` when it takes that argument. An NNX factory
    (one taking `rngs`) is built per seed by the training; a plain-function model object (with
    `init` and `apply`) is used as it is when no argument is set. A Linen module's mode flag is
    found by convention, or is `config.model.train_arg` ('name' or 'not name').

    Raises:
      ValueError: an unknown model, an argument it does not take, or a factory that returns no
        model of an accepted kind.
    """
    factory = resolve(model_cfg.name)
    train_arg = model_cfg.get("train_arg", "") or None
    if form_lib.is_function_model(factory) or isinstance(factory, nn.Module):
        kwargs = dict(model_cfg.get("kwargs", {}) or {})
        if kwargs or model_cfg.width:
            raise ValueError(
                f"config.model.name={model_cfg.name!r} is a built model; it takes no "
                "config.model.kwargs or width (name its factory instead)."
            )
        return _form(model_cfg, factory, train_arg)
    kwargs = _arguments(model_cfg, factory, num_classes)
    if form_lib.is_nnx_factory(factory):
        return _form(model_cfg, functools.partial(factory, **kwargs), train_arg)
    return _form(model_cfg, factory(**kwargs), train_arg)


def _form(model_cfg, model, train_arg) -> ModelForm:
    """`model_form(model)`, its errors naming `config.model`."""
    try:
        return form_lib.model_form(model, train_arg=train_arg)
    except ValueError as err:
        raise ValueError(f"config.model.name={model_cfg.name!r}: {err}") from None
