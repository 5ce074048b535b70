"""A researcher's own models, outside the package: what `config.model.name` imports by path.

- `LinenNet`: a Linen module without a `width` field and without a `train` argument.
- `NNXNet`: an NNX module class with BatchNorm and Dropout (state and randomness in training).
- `FUNCTION_NET` / `function_net`: a plain-function model (`init`, `apply`) with a state array
  (a running mean of its hidden activations, updated in train mode).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class LinenNet(nn.Module):
    """Conv(4) + ReLU + 2x2 max-pool + Dense: no `width`, no `train`."""

    num_classes: int = 10
    features: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(nn.relu(nn.Conv(self.features, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


class NNXNet(nnx.Module):
    """Conv(4) + BatchNorm + ReLU + 2x2 max-pool + Dropout(0.25) + Linear."""

    def __init__(self, num_classes: int = 10, *, channels: int = 1, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)
        self.dropout = nnx.Dropout(0.25, rngs=rngs)
        self.head = nnx.Linear(4 * 14 * 14, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        x = nnx.max_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
        return self.head(self.dropout(x))


@dataclasses.dataclass(frozen=True)
class FunctionNet:
    """A two-layer network on flattened images, in the plain-function protocol.

    params {'w1', 'b1', 'w2', 'b2'}; state {'mean': [hidden]}, the running mean of the hidden
    activations (momentum 0.9), updated in train mode only; it does not change the logits.
    """

    num_classes: int = 10
    hidden: int = 16
    num_inputs: int = 28 * 28

    def init(self, key, sample):
        k1, k2 = jax.random.split(key)
        d = sample.reshape((sample.shape[0], -1)).shape[1]
        params = {
            "w1": jax.random.normal(k1, (d, self.hidden)) / jnp.sqrt(d),
            "b1": jnp.zeros(self.hidden),
            "w2": jax.random.normal(k2, (self.hidden, self.num_classes)) / jnp.sqrt(self.hidden),
            "b2": jnp.zeros(self.num_classes),
        }
        return params, {"mean": jnp.zeros(self.hidden)}

    def apply(self, params, state, x, *, train, rng):
        h = jax.nn.relu(x.reshape((x.shape[0], -1)) @ params["w1"] + params["b1"])
        if train:
            state = {"mean": 0.9 * state["mean"] + 0.1 * jnp.mean(h, 0)}
        return h @ params["w2"] + params["b2"], state


FUNCTION_NET = FunctionNet()


def function_net(num_classes: int = 10, hidden: int = 16) -> FunctionNet:
    """A factory of `FunctionNet` (config.model.kwargs: hidden)."""
    return FunctionNet(num_classes=num_classes, hidden=hidden)
