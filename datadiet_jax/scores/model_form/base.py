"""The protocol every model form follows: `init`, `apply`, and eval-mode `logits`.

`ModelForm` is the base of `LinenModel`, `NNXModel` and `FunctionModel`; its `logits` is
`apply(..., train=False)`'s first output, and `mode_layers` / `mode_hint` serve the trainer's
mode guard. `hash_key` keys caches by a model, or by its id when it is unhashable.

Usage:

    params, state = form.init(jax.random.key(0), images[:1])
    logits, state = form.apply(params, state, images, train=True, rng=jax.random.key(1))
    logits = form.logits(params, state, images)  # [B, C], eval mode
"""

from __future__ import annotations

from typing import Any

import jax


class ModelForm:
    """The protocol every model form follows (see the module docstring)."""

    def init(self, key: jax.Array, sample: jax.Array) -> tuple[Any, Any]:
        raise NotImplementedError

    def apply(self, params, state, x: jax.Array, *, train: bool, rng: jax.Array | None = None):
        raise NotImplementedError

    def logits(self, params, state, x: jax.Array) -> jax.Array:
        """Logits [B, C] in eval mode: `apply(..., train=False)`'s first output."""
        return self.apply(params, state, x, train=False)[0]

    def mode_layers(self, params, state, sample) -> list[str] | None:
        """Names of the layers whose output depends on the mode (BatchNorm, Dropout); None when
        the form cannot see its layers."""
        return None

    def mode_hint(self) -> str:
        """What to set when the model trains in the wrong mode (for the guard's message)."""
        return "make its apply honour train=True"


def hash_key(obj):
    try:
        hash(obj)
        return obj
    except TypeError:
        return id(obj)
