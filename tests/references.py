"""Independent references the tests compare against, and the small models and data they share.

- `grad_norm_loop` and its K-seed forms: GraNd by one `jax.grad` per example in a Python loop,
  of optax's cross-entropy (not the library's), norms accumulated in float64.
- `jacrev_ntk`: the empirical NTK from the whole Jacobian by `jax.jacrev`, products in float64.
- `TinyCNN`: the small Conv + BatchNorm + Dense model of the score tests; `perturbed` gives
  variables whose BatchNorm statistics, scales and biases are random (eval mode not identity).
- `make_split`: a learnable synthetic `data.Split`.

Imports stay light (no TensorFlow, TFDS or ml_collections): the score tests run without them.
"""

from __future__ import annotations

import functools
import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

# The repository root (the working directory of the subprocess tests).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TinyCNN(nn.Module):
    """Conv(4, 3x3) + BatchNorm + ReLU + 2x2 max-pool, optionally a LayerNorm (a layer without a
    fast rule: the `vmap(grad)` fallback) and a hidden Dense named 'hidden', then Dense."""

    num_classes: int = 3
    hidden: int = 0
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.max_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
        if self.layer_norm:
            x = nn.LayerNorm()(x)
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(self.num_classes)(x)


def cross_entropy(logits, labels):
    """optax's per-example cross-entropy: an implementation independent of the library's."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def tree_norm(tree) -> float:
    """The L2 norm of every leaf of a pytree together, in float64."""
    return float(
        np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(tree)))
    )


def _example_grad(logits_fn):
    """Jitted `(params, consts, x, y) -> gradient w.r.t. params of one example's loss`.

    logits_fn: `(params, consts, x [1, ...]) -> logits [1, C]`; consts are not differentiated.
    """

    def loss(params, consts, x, y):
        return cross_entropy(logits_fn(params, consts, x[None]), y[None])[0]

    return jax.jit(jax.grad(loss))


def _norms(grad_one, params, consts, images, labels) -> np.ndarray:
    return np.array(
        [tree_norm(grad_one(params, consts, x, y)) for x, y in zip(images, labels, strict=True)]
    )


def grad_norm_loop(logits_fn, params, images, labels) -> np.ndarray:
    """GraNd of one model by one `jax.grad` per example: `[N] float64`.

    logits_fn: `(params, x [1, ...]) -> logits [1, C]`.
    """
    grad_one = _example_grad(lambda p, _, x: logits_fn(p, x))
    return _norms(grad_one, params, (), images, labels)


def seed(tree, k: int):
    """Seed `k` of a pytree stacked on a leading seed axis."""
    return jax.tree.map(lambda v: v[k], tree)


def num_seeds(tree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def linen_grand_loop(apply_fn, variables, images, labels) -> np.ndarray:
    """`[K, N]` GraNd of K stacked Linen variables; apply_fn: `(variables, x) -> logits`.

    One compiled gradient serves every seed: the other collections (BatchNorm statistics) are
    its constant argument.
    """
    grad_one = _example_grad(lambda p, rest, x: apply_fn({**rest, "params": p}, x))
    out = []
    for k in range(num_seeds(variables)):
        one = seed(variables, k)
        rest = {c: v for c, v in one.items() if c != "params"}
        out.append(_norms(grad_one, one["params"], rest, images, labels))
    return np.array(out)


def function_grand_loop(apply_fn, params, images, labels) -> np.ndarray:
    """`[K, N]` GraNd of a plain `apply_fn(params, x)` with params stacked on a seed axis."""
    grad_one = _example_grad(lambda p, _, x: apply_fn(p, x))
    return np.array(
        [_norms(grad_one, seed(params, k), (), images, labels) for k in range(num_seeds(params))]
    )


@functools.lru_cache(maxsize=16)
def _jacobian(apply_fn):
    """Jitted per-example Jacobians of the logits w.r.t. params: `(params, rest, x [n, ...]) ->
    {leaf: [n, C, *shape]}`, compiled once per `apply_fn` (the collections are an argument)."""

    def logits_one(params, rest, x):
        return apply_fn({**rest, "params": params}, x[None])[0]

    return jax.jit(jax.vmap(jax.jacrev(logits_one), in_axes=(None, None, 0)))


def jacrev_ntk(apply_fn, variables, images) -> tuple[np.ndarray, np.ndarray]:
    """The NTK of one model from its whole Jacobian (`jax.jacrev` per example), in float64.

    apply_fn: `(variables, x) -> logits`; variables: one model's (no seed axis).
    Returns:
      (trace over logits [n, n], every pair of logits [n*C, n*C], example-major).
    """
    rest = {c: v for c, v in variables.items() if c != "params"}
    jac = _jacobian(apply_fn)(variables["params"], rest, images)
    n, c = images.shape[0], jax.tree.leaves(jac)[0].shape[1]
    j = np.concatenate(
        [np.asarray(x, np.float64).reshape(n, c, -1) for x in jax.tree.leaves(jac)], axis=2
    )
    flat = j.reshape(n * c, -1)
    return np.einsum("icp,jcp->ij", j, j), flat @ flat.T


def perturbed(variables, key):
    """Random BatchNorm statistics, scales and biases, so that eval-mode BatchNorm is not the
    identity (one model's variables, or stacked ones)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    out = {}
    for i, (path, v) in enumerate(sorted(flat.items())):
        k = jax.random.fold_in(key, i)
        if path[-1] == "mean":
            v = jax.random.normal(k, v.shape)
        elif path[-1] == "var":
            v = jax.random.uniform(k, v.shape, minval=0.3, maxval=3.0)
        elif path[-1] in ("scale", "bias"):
            v = v + 0.5 * jax.random.normal(k, v.shape)
        out[path] = v
    return flax.traverse_util.unflatten_dict(out)


def cpu_devices_env(num_devices: int) -> dict:
    """The environment of a subprocess with `num_devices` simulated CPU devices."""
    env = dict(os.environ)
    # Simulated devices share this machine's cores: a collective may wait on a device thread for
    # longer than XLA's 40 s before it aborts the process (seen with 8 devices on 2 cores).
    flag = (
        f"--xla_force_host_platform_device_count={num_devices} "
        "--xla_cpu_collective_call_terminate_timeout_seconds=600"
    )
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def make_split(n=64, num_classes=3, hw=28, channels=1, seed=0):
    """A learnable synthetic train split (`data.Split`): the class sets the mean brightness."""
    from datadiet_jax.pipeline import data

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    base = labels[:, None, None, None] * (200 // num_classes)
    images = (rng.integers(0, 50, (n, hw, hw, channels)) + base).astype(np.uint8)
    return data.Split(
        name="synthetic",
        split="train",
        inputs=images,
        labels=labels,
        index=np.arange(n, dtype=np.int64),
        num_classes=num_classes,
        mean=np.full(channels, 0.4, np.float32),
        std=np.full(channels, 0.25, np.float32),
        clean_labels=labels,
        noisy_index=np.zeros(0, np.int64),
    )


def guard_warnings(call, caplog):
    """`(call(), the GraNd guard's warnings joined)`, compiled programs cleared around the call
    (a test that plants a faulty rule must not reuse or leave programs built with it)."""
    import logging

    from datadiet_jax.scores import programs

    programs.clear_programs()
    try:
        with caplog.at_level(logging.WARNING):
            result = call()
    finally:
        programs.clear_programs()
    messages = (r.getMessage() for r in caplog.records)
    return result, " ".join(m for m in messages if "GraNd guard" in m)
