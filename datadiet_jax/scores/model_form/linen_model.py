"""Flax Linen modules in the model form, and the conventions of their mode flags.

A Linen module's train mode is a keyword argument of `__call__`. `train`, `training` and
`is_training` mean train mode when true; `deterministic`, `use_running_average`, `eval` and
`is_eval` mean train mode when false; `train_arg` names any other flag ('name' or 'not name').

Usage:

    form = LinenModel.of(MyNet())                       # flag found by convention
    form = LinenModel.of(MyNet(), train_arg="not frozen")
    form.mode_kwargs(train=True)                        # {'frozen': False}
"""

from __future__ import annotations

import dataclasses
import inspect

import flax.linen as nn
import jax

from datadiet_jax.scores.model_form.base import ModelForm

TRAIN_WHEN_TRUE = ("train", "training", "is_training")
TRAIN_WHEN_FALSE = ("deterministic", "use_running_average", "eval", "is_eval")


@dataclasses.dataclass(frozen=True)
class ModeFlag:
    """A boolean argument of a model's `__call__` that switches train mode.

    Attributes:
      name: the argument's name.
      train_value: the value that means train mode (True for `train`, False for
        `deterministic`).
    """

    name: str
    train_value: bool

    def value(self, train: bool) -> bool:
        return self.train_value if train else not self.train_value

    def __str__(self) -> str:
        return self.name if self.train_value else f"not {self.name}"


def parse_train_arg(text: str) -> ModeFlag:
    """`'name'` -> train mode when true; `'not name'` -> train mode when false.

    Raises:
      ValueError: text that is not an identifier, optionally after 'not '.
    """
    words = str(text).split()
    inverted = len(words) == 2 and words[0] == "not"
    name = words[-1] if words else ""
    if not name.isidentifier() or len(words) not in (1, 2) or (len(words) == 2 and not inverted):
        raise ValueError(
            f"train_arg={text!r} is not a flag name; write 'name' (train mode when true) or "
            "'not name' (train mode when false), e.g. config.model.train_arg='not frozen'."
        )
    return ModeFlag(name, not inverted)


def _call_parameters(module: nn.Module) -> dict[str, inspect.Parameter]:
    """The parameters of `module.__call__` after the input."""
    params = list(inspect.signature(module.__call__).parameters.values())
    return {p.name: p for p in params[1:]}


def bool_arguments(module: nn.Module) -> list[str]:
    """The arguments of a Linen module's `__call__` that look boolean (a bool default or
    annotation), for the messages that ask which one switches train mode."""
    out = []
    for name, p in _call_parameters(module).items():
        annotation = (
            p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        )
        if isinstance(p.default, bool) or "bool" in str(annotation):
            out.append(name)
    return out


def find_mode_flags(module: nn.Module, train_arg: str | None = None) -> tuple[ModeFlag, ...]:
    """The mode flags of a Linen module: `train_arg`'s, or every conventional name it takes.

    Raises:
      ValueError: `train_arg` names no argument of `__call__`, or `__call__` has a required
        argument that no convention names (it would fail on every call).
    """
    params = _call_parameters(module)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    name = type(module).__name__
    if train_arg:
        flag = parse_train_arg(train_arg)
        if flag.name not in params and not takes_any:
            raise ValueError(
                f"train_arg={train_arg!r}, but {name}.__call__ has no argument {flag.name!r}; "
                f"its arguments after the input are {sorted(params)}."
            )
        return (flag,)
    flags = tuple(ModeFlag(n, True) for n in TRAIN_WHEN_TRUE if n in params) + tuple(
        ModeFlag(n, False) for n in TRAIN_WHEN_FALSE if n in params
    )
    known = {f.name for f in flags}
    required = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and n not in known
    ]
    if required:
        raise ValueError(
            f"{name}.__call__ needs argument {required[0]!r}, which no mode convention names; if "
            f"it switches train mode set config.model.train_arg={required[0]!r} (or "
            f"'not {required[0]}' when true means eval mode), or give it a default."
        )
    return flags


@dataclasses.dataclass(frozen=True)
class LinenModel(ModelForm):
    """A Flax Linen module in the model form.

    `params` is the 'params' collection and `state` every other collection. Train mode is
    `apply(..., <flag>=train value, mutable=<state collections>, rngs={'dropout': rng})`.

    Attributes:
      module: the Linen module.
      flags: its mode flags (`find_mode_flags`); empty for a module without a mode.
    """

    module: nn.Module
    flags: tuple[ModeFlag, ...] = ()

    @classmethod
    def of(cls, module: nn.Module, train_arg: str | None = None) -> LinenModel:
        """The form of `module`, its flags found by convention or named by `train_arg`."""
        return cls(module, find_mode_flags(module, train_arg))

    def mode_kwargs(self, train: bool) -> dict[str, bool]:
        """The keyword arguments that put the module in train or eval mode."""
        return {f.name: f.value(train) for f in self.flags}

    def init(self, key, sample):
        variables = self.module.init(key, sample, **self.mode_kwargs(False))
        return variables["params"], {k: v for k, v in variables.items() if k != "params"}

    def apply(self, params, state, x, *, train, rng=None):
        variables = {"params": params, **state}
        kwargs = self.mode_kwargs(train)
        if not train:
            return self.module.apply(variables, x, **kwargs), state
        rngs = {"dropout": rng} if rng is not None else {}
        if not state:
            return self.module.apply(variables, x, rngs=rngs, **kwargs), state
        logits, updates = self.module.apply(variables, x, rngs=rngs, mutable=list(state), **kwargs)
        return logits, {**state, **updates}

    def logits(self, params, state, x):
        return self.module.apply({**state, "params": params}, x, **self.mode_kwargs(False))

    def mode_layers(self, params, state, sample):
        found = set()

        def record(next_fun, args, kwargs, context):
            if isinstance(context.module, (nn.BatchNorm, nn.Dropout)):
                found.add(type(context.module).__name__)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            jax.eval_shape(self.logits, params, state, sample)
        return sorted(found)

    def mode_hint(self) -> str:
        args = bool_arguments(self.module)
        now = ", ".join(map(str, self.flags)) or "none"
        return (
            f"its __call__'s boolean arguments are {args} (mode flag used: {now}); set "
            "config.model.train_arg (train_seeds(train_arg=...)) to the one that switches train "
            "mode, as 'name' or 'not name'"
        )
