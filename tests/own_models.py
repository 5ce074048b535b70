"""A researcher's own models, outside the package: what `config.model.name` imports by path.

- `LinenNet`: a Linen module without a `width` field and without a `train` argument.
- `NNXNet`: an NNX module class with BatchNorm and Dropout (state and randomness in training).
- `FUNCTION_NET` / `function_net`: a plain-function model (`init`, `apply`) with a state array
  (a running mean of its hidden activations, updated in train mode).
- `TrainNet`, `TrainingNet`, `IsTrainingNet`, `DeterministicNet`, `RunningAverageNet`,
  `FrozenNet`, `FrozenDropoutNet`: one BatchNorm + Dropout body behind each mode-flag convention
  (and an unnamed one), for the tests that each trains in train mode or is refused.
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


def _mode_body(x, train: bool, num_classes: int):
    """Conv(4) + BatchNorm + ReLU + Dropout(0.5) + Dense, in train or eval mode; called inside
    the `__call__` of the modules below, whose only difference is the name of their mode flag."""
    x = nn.Conv(4, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    x = nn.Dropout(0.5, deterministic=not train)(jnp.mean(x, axis=(1, 2)))
    return nn.Dense(num_classes)(x)


class TrainNet(nn.Module):
    """The mode flag `train` (train mode when true)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        return _mode_body(x, train, self.num_classes)


class TrainingNet(nn.Module):
    """The mode flag `training` (train mode when true)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, training: bool = False):
        return _mode_body(x, training, self.num_classes)


class IsTrainingNet(nn.Module):
    """haiku's `is_training`, without a default."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, is_training: bool):
        return _mode_body(x, is_training, self.num_classes)


class DeterministicNet(nn.Module):
    """Flax's own convention, `deterministic` (train mode when false)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        return _mode_body(x, not deterministic, self.num_classes)


class RunningAverageNet(nn.Module):
    """`use_running_average` (train mode when false)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, use_running_average: bool = True):
        return _mode_body(x, not use_running_average, self.num_classes)


class FrozenNet(nn.Module):
    """A flag no convention names, `frozen` (train mode when false): needs `train_arg`."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, frozen: bool = True):
        return _mode_body(x, not frozen, self.num_classes)


class FrozenDropoutNet(nn.Module):
    """Dropout without BatchNorm behind the unnamed flag `frozen`: no state that could move."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, frozen: bool = True):
        x = nn.Dropout(0.5, deterministic=frozen)(x.reshape((x.shape[0], -1)))
        return nn.Dense(self.num_classes)(x)
