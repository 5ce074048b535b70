"""Error barriers between two networks: the error along the line between their weights.

For networks w1 and w2 and a set of examples S, let E_S(a) be the error on S of the network
w(a) = (1 - a) w1 + a w2. The error barrier (Frankle et al., "Linear Mode Connectivity and the
Lottery Ticket Hypothesis", ICML 2020) is `barrier_S = E_S(1/2) - (E_S(0) + E_S(1)) / 2`; on a
finer grid of a, `max_a E_S(a) - (E_S(0) + E_S(1)) / 2` checks that the midpoint is where the
maximum lies. Errors are fractions of S in [0, 1].

BatchNorm: the running statistics of w1 and w2 do not describe the activations of w(a), so the
statistics at each point of the path are a choice (`BatchNormRule`):
  'recompute' (the default, and the correct choice): every point, the endpoints included, gets
    statistics recomputed from training images (train-mode passes over full batches, averaged
    per-batch mean and biased variance, as `torch.optim.swa_utils.update_bn` does).
  'interpolate': the statistics are interpolated like the weights. The variance of the
    activations of w(a) is not the mix of the endpoints' variances, so the barrier comes out
    too high; kept to measure the size of that error.
Variables are Flax variable dicts {'params': ..., 'batch_stats': ...} of one network (no seed
axis); without `batch_stats` the two modes agree.

Usage:

    from datadiet_jax.dynamics import barriers
    bn = barriers.BatchNormRule("recompute", images=train_images, batch_size=128)
    curves = barriers.error_curves(model, v1, v2, {"test": (images, labels)}, bn=bn)
    curves["test"]["barrier"]             # E(1/2) - (E(0) + E(1)) / 2
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

BN_MODES = ("recompute", "interpolate")


@dataclasses.dataclass(frozen=True, eq=False)
class BatchNormRule:
    """How the BatchNorm statistics of each point of the path are set (see the module docstring).

    Attributes:
      mode: 'recompute' (statistics recomputed from `images`) or 'interpolate' (mixed like the
        weights).
      images: [M, ...] float32 normalized training inputs, in the order to batch them; needed by
        'recompute' when the model has BatchNorm, unused by 'interpolate'.
      batch_size: B of the recomputation (the training batch size); the last M mod B images are
        left out.
    """

    mode: str = "recompute"
    images: np.ndarray | None = None
    batch_size: int = 128

    def __post_init__(self):
        if self.mode not in BN_MODES:
            raise ValueError(f"unknown BatchNorm mode {self.mode!r}; use one of {BN_MODES}")


def interpolate(tree1, tree2, alpha: float):
    """`(1 - alpha) * tree1 + alpha * tree2` leaf by leaf (pytrees of one structure)."""
    s1, s2 = jax.tree.structure(tree1), jax.tree.structure(tree2)
    if s1 != s2:
        raise ValueError(f"the two networks differ in structure ({s1} vs {s2}); use one model")
    a = float(alpha)
    return jax.tree.map(lambda x, y: (1.0 - a) * jnp.asarray(x) + a * jnp.asarray(y), tree1, tree2)


@functools.lru_cache(maxsize=8)
def _stats_program(model):
    def batch_stats(params, stats, images):
        _, updates = model.apply(
            {"params": params, "batch_stats": stats}, images, train=True, mutable=["batch_stats"]
        )
        return updates["batch_stats"]

    return jax.jit(batch_stats)


def recompute_batch_stats(model, params, batch_stats, images, batch_size: int):
    """BatchNorm running statistics of `params`, recomputed from `images` in train mode.

    The model updates a statistic as `new = m * old + (1 - m) * batch` (m its momentum). One
    forward pass from `old = 0` and one from `old = 1` give m exactly (their difference); after
    that, every batch's own statistic is `new / (1 - m)` from `old = 0`. The result is the plain
    average of the per-batch statistics over the full batches of `images`.

    Args:
      model: Flax module called as `model.apply(variables, x, train=True, mutable=[...])`.
      params: the network's parameters.
      batch_stats: its `batch_stats` collection (only the structure is used); {} for none.
      images: [M, ...] float32 training inputs (normalized), in the order to batch them.
      batch_size: B; the last M mod B images are left out (a smaller batch has other variances).

    Returns:
      A `batch_stats` tree like the input, as float32 numpy arrays.
    """
    if not jax.tree.leaves(batch_stats):
        return batch_stats
    num_batches = int(np.shape(images)[0]) // int(batch_size)
    if num_batches < 1:
        raise ValueError(
            f"{np.shape(images)[0]} images make no full batch of {batch_size}; pass more training "
            "images or a smaller batch size to recompute BatchNorm statistics"
        )
    program = _stats_program(model)
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    ones = jax.tree.map(jnp.ones_like, batch_stats)
    first = jnp.asarray(images[:batch_size])
    from_zero = program(params, zeros, first)
    momentum = jax.tree.map(lambda a, b: np.asarray(a - b), program(params, ones, first), from_zero)
    if any(np.any(m > 1 - 1e-3) for m in jax.tree.leaves(momentum)):
        raise ValueError("a BatchNorm momentum is 1 (statistics never update); cannot recompute")
    total = jax.tree.map(lambda x: np.zeros(np.shape(x), np.float64), batch_stats)
    for b in range(num_batches):
        new = program(params, zeros, jnp.asarray(images[b * batch_size : (b + 1) * batch_size]))
        total = jax.tree.map(
            lambda t, n, m: t + np.asarray(n, np.float64) / (1.0 - m), total, new, momentum
        )
    return jax.tree.map(lambda t: (t / num_batches).astype(np.float32), total)


@functools.lru_cache(maxsize=8)
def _wrong_program(model):
    def wrong(variables, images, labels, mask):
        logits = model.apply(variables, images, train=False)
        return jnp.sum((jnp.argmax(logits, -1) != labels) * mask)

    return jax.jit(wrong)


def subset_error(model, variables, images, labels, batch_size: int) -> float:
    """Error (fraction misclassified, eval mode) of one network on a set of examples.

    The last batch is padded with zeros and masked out, so every batch has one shape.

    Args:
      model: Flax module called as `model.apply(variables, x, train=False)`.
      variables: {'params': ..., 'batch_stats': ...} of one network.
      images: [M, ...] float32 normalized inputs of the subset, M >= 1.
      labels: [M] int labels.
      batch_size: B.

    Returns:
      The error in [0, 1].
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    m = images.shape[0]
    if m == 0 or labels.shape != (m,):
        raise ValueError(
            f"subset has {m} images and labels of shape {labels.shape}; pass [M] labels, M >= 1"
        )
    program = _wrong_program(model)
    padded = -(-m // batch_size) * batch_size
    images = np.concatenate([images, np.zeros((padded - m, *images.shape[1:]), np.float32)])
    labels = np.concatenate([labels, np.zeros(padded - m, np.int32)])
    mask = (np.arange(padded) < m).astype(np.float32)
    wrong = 0.0
    for s in range(0, padded, batch_size):
        sl = slice(s, s + batch_size)
        wrong += float(program(variables, images[sl], labels[sl], mask[sl]))
    return wrong / m


def path_variables(model, v1, v2, alpha: float, bn: BatchNormRule):
    """The variables of w(alpha) = (1 - alpha) w1 + alpha w2, BatchNorm statistics by `bn`.

    Args:
      model: Flax module.
      v1, v2: variables of the two networks.
      alpha: position on the line; 0 is w1, 1 is w2.
      bn: the rule of the statistics (`BatchNormRule`).

    Returns:
      {'params': ..., 'batch_stats': ...}.
    """
    if not isinstance(bn, BatchNormRule):
        raise TypeError(f"bn is a {type(bn).__name__}; pass a BatchNormRule (e.g. of {BN_MODES})")
    params = interpolate(v1["params"], v2["params"], alpha)
    stats1, stats2 = v1.get("batch_stats", {}), v2.get("batch_stats", {})
    if bn.mode == "interpolate" or not jax.tree.leaves(stats1):
        return {"params": params, "batch_stats": interpolate(stats1, stats2, alpha)}
    if bn.images is None:
        raise ValueError("BatchNormRule('recompute') needs images (training inputs); pass them")
    stats = recompute_batch_stats(model, params, stats1, bn.images, bn.batch_size)
    return {"params": params, "batch_stats": stats}


def check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    """Sorted unique alphas; they must contain 0, 1/2 and 1 and lie in [0, 1]."""
    out = tuple(sorted({float(a) for a in alphas}))
    if not {0.0, 0.5, 1.0} <= set(out) or out[0] < 0 or out[-1] > 1:
        raise ValueError(
            f"alphas {list(alphas)} must lie in [0, 1] and contain 0, 0.5 and 1 (the endpoints "
            "and the midpoint of the barrier)"
        )
    return out


def barrier_from_errors(alphas: Sequence[float], errors: Sequence[float]) -> dict:
    """The barrier numbers of one error curve.

    Args:
      alphas: [A] positions, with 0, 0.5 and 1 among them.
      errors: [A] errors E(alpha).

    Returns:
      {'error_1': E(0), 'error_2': E(1), 'error_mid': E(1/2),
       'barrier': E(1/2) - (E(0) + E(1)) / 2,
       'max_barrier': max_a E(a) - (E(0) + E(1)) / 2, 'argmax_alpha': the a of that maximum
       (the smallest one on ties)}.
    """
    by_alpha = dict(zip((float(a) for a in alphas), (float(e) for e in errors), strict=True))
    check_alphas(list(by_alpha))
    ends = (by_alpha[0.0] + by_alpha[1.0]) / 2.0
    argmax = min(by_alpha, key=lambda a: (-by_alpha[a], a))
    return {
        "error_1": by_alpha[0.0],
        "error_2": by_alpha[1.0],
        "error_mid": by_alpha[0.5],
        "barrier": by_alpha[0.5] - ends,
        "max_barrier": by_alpha[argmax] - ends,
        "argmax_alpha": argmax,
    }


def error_curves(
    model,
    v1,
    v2,
    subsets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    alphas: Sequence[float] = (0.0, 0.5, 1.0),
    bn: BatchNormRule = BatchNormRule(),
    batch_size: int = 500,
) -> dict[str, dict]:
    """Errors along the line between two networks on several subsets, and their barriers.

    Args:
      model: Flax module.
      v1, v2: variables of the two networks.
      subsets: {name: (images [M, ...] float32 normalized, labels [M] int)}.
      alphas: positions; must contain 0, 0.5 and 1. The statistics of each point are computed
        once and shared by all subsets.
      bn: the rule of the BatchNorm statistics at each point (mode, and for 'recompute' the
        training images and batch size); the default recomputes and needs images when the
        model has BatchNorm.
      batch_size: evaluation batch size.

    Returns:
      {subset: {'alphas': [A], 'errors': [A]} | `barrier_from_errors` of the curve}.
    """
    alphas = check_alphas(alphas)
    if not subsets:
        raise ValueError("no subsets given; pass {name: (images, labels)}")
    errors = {name: [] for name in subsets}
    for a in alphas:
        variables = path_variables(model, v1, v2, a, bn)
        for name, (images, labels) in subsets.items():
            errors[name].append(subset_error(model, variables, images, labels, batch_size))
    return {
        name: {"alphas": list(alphas), "errors": errs} | barrier_from_errors(alphas, errs)
        for name, errs in errors.items()
    }
