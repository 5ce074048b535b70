"""Whether images fit a Linen model's variables, and which layer refuses them if they do not.

Linen variables carry the input shape they were initialized on (a Dense kernel's input features,
a Conv kernel's input channels), so images of another shape make `model.apply` fail inside the
first layer that meets them, usually with an error that reads as if the variables were wrong.
`first_failure` runs the model abstractly on one example with one seed's variables, intercepting
every module call, and records the innermost call that raises (`Failure`: the layer, its input
shape and its parameters' shapes). `Failure.blames_images` tells images that do not fit from
variables that are wrong, and `Failure.detail` says it in one clause.

Usage:

    sample = jax.ShapeDtypeStruct((1, *images.shape[1:]), images.dtype)
    shape, failure = image_fit.first_failure(model, one_seed_vars, sample, (("train", False),))
    if failure is not None and failure.blames_images():
        print(failure.detail(images.shape))  # "Dense_0 takes 784 input features, the images ..."
"""

from __future__ import annotations

import dataclasses
import re

import flax
import flax.linen as nn
import jax
import numpy as np

_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def shape_str(shape) -> str:
    """`[8, 28, 28]` for a shape tuple; 'N' stands for an unknown leading size (None)."""
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def _spec(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x


def one_line(err: BaseException, limit: int = 300) -> str:
    """An error as one line: its type and the first non-empty line of its text, shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = re.sub(r"\s*\(https?://[^)]*\)$", "", lines[0]).rstrip(".") if lines else ""
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _tuple(value, rank: int) -> tuple[int, ...]:
    return (value,) * rank if isinstance(value, int) else tuple(value)


@dataclasses.dataclass(frozen=True)
class Failure:
    """The innermost module call that raised while the model ran on the images.

    module: the module; path: its path in the variables; name: the path as
    written ('Dense_0', 'Block_0/Conv_1'; 'the model' for the top module);
    input_shape: its first input's shape (batch 1: one example) or None; params: the shapes of
    its own 'params' leaves ('kernel', 'bias'; not its submodules'); is_images: whether that
    input is the images themselves; error: the error's type and first line; error_type: its
    class.
    """

    module: nn.Module
    path: tuple[str, ...]
    name: str
    input_shape: tuple | None
    params: dict
    is_images: bool
    error: str
    error_type: type

    def blames_images(self, expected: dict | None = None) -> bool:
        """True unless the layer's own parameters cannot belong to it whatever its input is.

        expected: the shapes `model.init` gives the layer's params on these images, if known;
        a parameter of another rank than those is a variables problem (e.g. a second seed axis).
        """
        kernel = self.params.get("kernel")
        if isinstance(self.module, nn.Dense) and kernel is not None:
            return len(kernel) == 2 and kernel[1] == self.module.features
        if isinstance(self.module, nn.Conv) and kernel is not None:
            window = _tuple(self.module.kernel_size, 1)
            return tuple(kernel[:-2]) == window and kernel[-1] == self.module.features
        return not expected or all(
            len(shape) == len(expected.get(k, shape)) for k, shape in self.params.items()
        )

    def detail(self, images_shape) -> str:
        """What the layer expects and what these images give it, in one clause."""
        x, kernel = self.input_shape, self.params.get("kernel")
        given = "the images give it" if self.is_images else "these images give it"
        if x and kernel is not None and isinstance(self.module, nn.Dense) and x[-1] != kernel[0]:
            return f"{self.name} takes {_count(kernel[0], 'input feature')}, {given} {x[-1]}"
        if x and kernel is not None and isinstance(self.module, nn.Conv):
            rank = len(kernel) - 2
            channels = kernel[-2] * self.module.feature_group_count
            want = f"[B, {_SPATIAL.get(rank, '...')}, {channels}]"
            if len(x) < rank + 2:
                if self.is_images:
                    lack = (
                        "the images lack the channel axis (add it: images[..., None])"
                        if channels == 1
                        else f"the images {shape_str(images_shape)} lack an axis"
                    )
                else:
                    lack = f"its input from these images is {shape_str(x)}, an axis short"
                return f"{self.name} expects inputs {want}; {lack}"
            if x[-1] != channels:
                return f"{self.name} takes {_count(channels, 'input channel')}, {given} {x[-1]}"
        params = ", ".join(f"{k} {shape_str(v)}" for k, v in self.params.items())
        where = f" on its input {shape_str(x)}" if x is not None else ""
        own = f" (params {params})" if params else ""
        return f"{self.name} ({type(self.module).__name__}) fails{where}{own}: {self.error}"


def first_failure(model: nn.Module, variables, sample, mode: tuple):
    """Runs `model.apply(variables, sample)` abstractly and finds where it fails.

    Args:
      model: a Linen module; variables: one model's variables (no seed axis);
      sample: `jax.ShapeDtypeStruct` [1, ...] of one example; mode: the eval-mode keyword
        arguments as `(name, value)` pairs.
    Returns:
      (logits shape, None) if the model runs, else (None, the `Failure` of the innermost call
      that raised; None there too if the error came from outside every module).
    """
    kwargs = dict(mode)
    found: list[Failure] = []

    def interceptor(next_fun, args, call_kwargs, context):
        try:
            return next_fun(*args, **call_kwargs)
        except Exception as err:
            if not found:  # the innermost call sees the error first
                module = context.module
                x = args[0] if args else call_kwargs.get("inputs", call_kwargs.get("x"))
                own = module.variables.get("params", {}) if module.scope is not None else {}
                flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(own))
                found.append(
                    Failure(
                        module=module,
                        path=tuple(module.path),
                        name="/".join(module.path) or "the model",
                        input_shape=tuple(x.shape) if hasattr(x, "shape") else None,
                        params={k[0]: tuple(np.shape(v)) for k, v in flat.items() if len(k) == 1},
                        is_images=getattr(x, "shape", None) == sample.shape and x is top[0],
                        error=one_line(err),
                        error_type=type(err),
                    )
                )
            raise

    top = [None]

    def run(v, x):
        top[0] = x
        with nn.intercept_methods(interceptor):
            return model.apply(v, x, **kwargs)

    try:
        logits = jax.eval_shape(run, jax.tree.map(_spec, variables), sample)
    except Exception as err:  # noqa: BLE001 (reported as the model's own error)
        if found:
            return None, found[0]
        return None, Failure(
            model, (), "the model", tuple(sample.shape), {}, True, one_line(err), type(err)
        )
    return tuple(getattr(logits, "shape", ())), None
