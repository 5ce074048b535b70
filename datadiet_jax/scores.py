"""Per-example data-pruning scores (EL2N and GraNd) for K stacked initializations at once.

EL2N of an example is `||softmax(logits) - onehot(label)||_2`; GraNd is the L2 norm of the gradient
of its cross-entropy loss with respect to ALL trainable parameters ('params'; BatchNorm statistics
and other collections are constants). Both use the model in eval mode (`train=False`, BatchNorm with
running statistics), as the authors did. At initialization eval-mode BatchNorm is the identity, and
GraNd there mostly tracks the input norm (an independent reproduction found it no better than
random): average several seeds and prefer scores from a few epochs into training.

The K models are one pytree with a leading seed axis. Data are streamed from host memory in
fixed-size padded batches with a mask, so shapes never change, nothing recompiles, and device
memory does not depend on N. GraNd is exact and computed from one batched backward pass per batch
(see `grad_norms.py`), not by materializing per-example gradients; before the main loop, a guard
checks every fast layer rule against `vmap(grad)` on the first batch of each seed and sends a layer
that disagrees to the exact fallback (`grad_guard.py`). Images must be float (normalized as the
model expects); integer images are refused rather than silently cast.

Usage:

    model = get_model('small_cnn', num_classes=10)
    variables = init_variables(model, jax.random.key(0), num_seeds=4, sample_input=images[:1])
    el2n = el2n_scores(model, variables, images, labels)    # [4, N] float32
    grand = grand_scores(model, variables, images, labels)  # [4, N] float32
    keep = np.argsort(-grand.mean(axis=0))[: len(images) // 2]
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from datadiet_jax import grad_guard, grad_norms, seeds

SEED_AXES = ("unroll", "vmap", "map")
_LOG_EVERY_S = 10.0


def _takes_train(model: nn.Module) -> bool:
    return "train" in inspect.signature(model.__call__).parameters


def _apply_fn(model: nn.Module):
    """`(variables, images) -> logits` in eval mode, for models with or without a `train` arg."""
    kwargs = {"train": False} if _takes_train(model) else {}
    return lambda variables, images: model.apply(variables, images, **kwargs)


def init_variables(model: nn.Module, key: jax.Array, num_seeds: int, sample_input) -> Any:
    """Initializes `num_seeds` models stacked on a leading seed axis.

    Args:
      model: a Flax Linen module.
      key: PRNG key; seed k is initialized with `jax.random.split(key, num_seeds)[k]`.
      num_seeds: K >= 1.
      sample_input: [b, ...] example batch fixing the input shape (e.g. `images[:1]`).
    Returns:
      variables: the `model.init` pytree with every leaf of shape [K, ...].
    """
    if int(num_seeds) < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}; pass a positive seed count.")
    kwargs = {"train": False} if _takes_train(model) else {}
    sample = jnp.asarray(sample_input)
    keys = jax.random.split(key, int(num_seeds))
    return jax.jit(lambda ks: jax.lax.map(lambda k: model.init(k, sample, **kwargs), ks))(keys)


def el2n(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """EL2N per example. logits: [B, C], labels: [B] int -> [B] float32."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    return jnp.sqrt(jnp.sum((probs - onehot) ** 2, axis=-1))


def _per_seed_scores(model, kind, exclude, variables, images, labels, mask):
    """Scores of one model on one batch. images: [B, ...], labels/mask: [B] -> [B] float32.

    exclude: GraNd layers (site keys) the guard sent to the exact fallback.
    """
    apply_fn = _apply_fn(model)
    if kind == "el2n":
        return el2n(apply_fn(variables, images), labels)
    return grad_norms.per_example_grad_norms(
        apply_fn, variables, images, labels, mask, exclude=exclude
    )


def _batch_scores(model, kind, seed_axis, exclude, variables, images, labels, mask):
    """Scores of K stacked models on one batch -> [K, B] float32.

    seed_axis (see `seeds.over_seeds`): 'unroll' runs the seeds one after another inside the jit
    (the CPU default: convolutions vmapped over kernels become grouped convolutions that run
    1.5-8x slower in 3x the memory, and a `lax.map` loop ran ResNet18 about 2x slower than
    separate calls); 'vmap' batches the seeds (the GPU/TPU default); 'map' loops with `lax.map`.
    """
    per_seed = functools.partial(_per_seed_scores, model, kind, exclude)
    if jax.tree.leaves(variables)[0].shape[0] == 1:  # one seed: no loop or batching needed
        one = jax.tree.map(lambda v: v[0], variables)
        return per_seed(one, images, labels, mask)[None]
    return seeds.over_seeds(lambda v: per_seed(v, images, labels, mask), seed_axis)(variables)


def _build(model, kind, seed_axis, mesh, exclude=frozenset()):
    def local(variables, images, labels, mask):
        return _batch_scores(model, kind, seed_axis, exclude, variables, images, labels, mask)

    if mesh is None:
        return jax.jit(local)
    from datadiet_jax import sharding

    return sharding.shard_scores_fn(local, mesh)


_build_cached = functools.lru_cache(maxsize=32)(_build)


def _compiled(model, kind, seed_axis, mesh, exclude=frozenset()):
    """The jitted [K, B] batch function; cached so repeated calls do not recompile."""
    try:
        return _build_cached(model, kind, seed_axis, mesh, exclude)
    except TypeError:  # an unhashable module: build it for this call only
        return _build(model, kind, seed_axis, mesh, exclude)


def _build_guard(model, num_examples: int):
    fn = functools.partial(grad_guard.layer_sq_norms, _apply_fn(model), num_examples=num_examples)
    return jax.jit(fn)


_guard_cached = functools.lru_cache(maxsize=32)(_build_guard)


def _guard(model, variables, images, labels, batch_size: int, num_seeds: int) -> frozenset:
    """Runs `grad_guard` on the first batch for every seed; returns the site keys to exclude."""
    n = min(batch_size, len(images))
    x, y, mask = _padded(images, labels, 0, n, batch_size)
    m = min(grad_guard.NUM_EXAMPLES, n)
    try:
        fn = _guard_cached(model, m)
    except TypeError:  # an unhashable module
        fn = _build_guard(model, m)
    start = time.perf_counter()
    per_seed = (jax.tree.map(lambda v, k=k: v[k], variables) for k in range(num_seeds))
    exclude = grad_guard.guard(fn, per_seed, jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))
    logging.info(
        "grand guard: %d seeds x %d examples checked in %.1f s; %d layers to the exact fallback",
        num_seeds, m, time.perf_counter() - start, len(exclude),
    )  # fmt: skip
    return exclude


def _padded(images, labels, lo: int, hi: int, batch_size: int):
    """Examples [lo, hi) padded with zeros to `batch_size`, and their [batch_size] mask."""
    x, y = images[lo:hi], labels[lo:hi]
    mask = np.zeros(batch_size, np.float32)
    mask[: hi - lo] = 1.0
    if hi - lo < batch_size:  # pad the last batch so the compiled shape never changes
        x = np.concatenate([x, np.zeros((batch_size - (hi - lo), *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros(batch_size - (hi - lo), y.dtype)])
    return x, y, mask


def _abstract_model(model, shape, dtype):
    """(flat `model.init` shapes, logits shape) for one example of `shape`, by abstract tracing."""
    kwargs = {"train": False} if _takes_train(model) else {}
    sample = jax.ShapeDtypeStruct(shape, dtype)
    init = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), sample)
    logits = jax.eval_shape(_apply_fn(model), init, sample)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(init))
    return {k: tuple(v.shape) for k, v in flat.items()}, tuple(logits.shape)


_abstract_cached = functools.lru_cache(maxsize=32)(_abstract_model)


def _abstract(model, shape, dtype):
    try:
        return _abstract_cached(model, shape, np.dtype(dtype))
    except TypeError:  # an unhashable module
        return _abstract_model(model, shape, np.dtype(dtype))


def _check_variables(model, variables, want: dict) -> int:
    """Checks that `variables` are K stacked `model.init` outputs; returns K."""
    if not isinstance(variables, dict | flax.core.FrozenDict) or "params" not in variables:
        raise ValueError(
            "variables must be a dict with a 'params' collection stacked over seeds; "
            "build them with init_variables(model, key, num_seeds, images[:1])."
        )
    have = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    missing = [k for k in want if k not in have]
    if missing:
        raise ValueError(
            f"variables lack {'/'.join(missing[0])} (and {len(missing) - 1} more) that model.init "
            "creates; pass the variables of this model, e.g. from init_variables."
        )
    if all(tuple(have[k].shape) == want[k] for k in want):
        raise ValueError(
            "variables have no leading seed axis (they match a single model.init); stack them, "
            "e.g. jax.tree.map(lambda x: x[None], variables), or use init_variables."
        )
    leads = {}
    for k in want:
        shape = tuple(have[k].shape)
        if shape[1:] != want[k]:
            raise ValueError(
                f"variables leaf {'/'.join(k)} has shape {shape}, expected [K, *{want[k]}]; "
                "stack K models on a leading seed axis (see init_variables)."
            )
        leads[k] = shape[0]
    if len(set(leads.values())) != 1:
        raise ValueError(
            f"variables leaves disagree on the seed axis size ({sorted(set(leads.values()))}); "
            "every leaf needs the same leading K (see init_variables)."
        )
    return next(iter(leads.values()))


def _nonfinite_rows(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Indices of examples with a NaN or inf, scanned in chunks to bound host memory."""
    bad = []
    for lo in range(0, len(images), chunk):
        part = images[lo : lo + chunk]
        bad.append(np.flatnonzero(~np.isfinite(part.reshape(len(part), -1)).all(axis=1)) + lo)
    return np.concatenate(bad)


def _check_inputs(model, variables, images, labels, batch_size, seed_axis):
    """Validates arguments; returns (images, labels, num_seeds) as host numpy arrays."""
    if seed_axis not in SEED_AXES:
        raise ValueError(f"seed_axis must be one of {SEED_AXES} or None, got {seed_axis!r}.")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}; "
            "pass class indices, not one-hot vectors."
        )
    if images.ndim < 1 or len(images) != len(labels):
        raise ValueError(
            f"images and labels have different lengths ({len(images)} vs {len(labels)}); "
            "pass one label per image."
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"images have dtype {images.dtype}, not a float type; convert them to float and "
            "normalize them first, e.g. (images / 255 - mean) / std as the model was trained."
        )
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one example.")
    bad = _nonfinite_rows(images)
    if bad.size:
        raise ValueError(
            f"images contain NaN or inf at indices {bad[:10].tolist()}; "
            "clean or drop those examples."
        )
    want, logits_shape = _abstract(model, (1, *images.shape[1:]), images.dtype)
    num_seeds = _check_variables(model, variables, want)
    if len(logits_shape) != 2:
        raise ValueError(f"model must return logits [B, C], got shape {logits_shape}.")
    num_classes = logits_shape[1]
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"labels out of range [0, {num_classes}) at indices {bad[:10].tolist()} "
            f"(values {labels[bad[:10]].tolist()}); fix the labels or the model num_classes."
        )
    return images, labels.astype(np.int32), num_seeds


def _scores(kind, model, variables, images, labels, batch_size, mesh, seed_axis) -> np.ndarray:
    """Streams padded batches through the compiled [K, B] function; returns [K, N] float32."""
    if seed_axis is None:
        seed_axis = "unroll" if jax.default_backend() == "cpu" else "vmap"
    images, labels, num_seeds = _check_inputs(
        model, variables, images, labels, batch_size, seed_axis
    )
    n = len(images)
    exclude = frozenset()
    if kind == "grand":
        exclude = _guard(model, variables, images, labels, batch_size, num_seeds)
    fn = _compiled(model, kind, seed_axis, mesh, exclude)
    if mesh is None:
        variables = jax.device_put(variables)
        put, fetch = jnp.asarray, np.asarray
    else:
        from datadiet_jax import sharding

        sharding.check_mesh(mesh, num_seeds, batch_size)
        variables = sharding.put_variables(variables, mesh)
        put = functools.partial(sharding.put_batch, mesh=mesh)
        fetch = sharding.fetch
    out = np.empty((num_seeds, n), np.float32)
    start = last_log = time.perf_counter()
    pending = None
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        x, y, mask = _padded(images, labels, lo, hi, batch_size)
        result = fn(variables, put(x), put(y), put(mask))  # dispatched asynchronously
        if pending is not None:
            out[:, pending[0] : pending[1]] = fetch(pending[2])[:, : pending[1] - pending[0]]
        pending = (lo, hi, result)
        now = time.perf_counter()
        if now - last_log >= _LOG_EVERY_S:
            rate = hi / (now - start)
            logging.info(
                '%s: %d/%d examples x %d seeds, %.1f examples/s, ETA %.0f s',
                kind, hi, n, num_seeds, rate, (n - hi) / rate,
            )  # fmt: skip
            last_log = now
    out[:, pending[0] : pending[1]] = fetch(pending[2])[:, : pending[1] - pending[0]]
    logging.info(
        "%s: %d examples x %d seeds in %.1f s", kind, n, num_seeds, time.perf_counter() - start
    )
    seeds, idx = np.nonzero(~np.isfinite(out))
    if idx.size:
        pairs = list(zip(seeds[:10].tolist(), idx[:10].tolist(), strict=True))
        raise ValueError(
            f"{kind} scores are NaN or inf for (seed, example) {pairs}; "
            "check those examples and the model weights (e.g. diverged training)."
        )
    return out


def el2n_scores(
    model: nn.Module,
    variables,
    images,
    labels,
    *,
    batch_size: int = 256,
    mesh: jax.sharding.Mesh | None = None,
    seed_axis: str | None = None,
) -> np.ndarray:
    """EL2N scores `||softmax(f(x)) - onehot(y)||_2` of every example under every seed.

    Args:
      model: Flax module, applied as `model.apply(variables, images, train=False)` (or without
        `train` if its `__call__` has no such argument); must return logits [B, C].
      variables: K models stacked on a leading axis (see `init_variables`).
      images: [N, ...] float numpy or jax array, normalized as the model expects (integer
        images are refused). labels: [N] int in [0, C).
      batch_size: examples per compiled step (the last batch is padded and masked).
      mesh: optional `jax.sharding.Mesh` with axes ('seed', 'data') to shard seeds and data.
      seed_axis: 'unroll' (seeds one after another inside the jit, default on CPU), 'vmap'
        (default on GPU/TPU) or 'map' (`lax.map` over seeds).
    Returns:
      scores: [K, N] float32, in example order.
    Raises:
      ValueError: bad labels, lengths, non-float images, variables without a seed axis, or NaN
        inputs/scores.
    """
    return _scores("el2n", model, variables, images, labels, batch_size, mesh, seed_axis)


def grand_scores(
    model: nn.Module,
    variables,
    images,
    labels,
    *,
    batch_size: int = 128,
    mesh: jax.sharding.Mesh | None = None,
    seed_axis: str | None = None,
) -> np.ndarray:
    """GraNd scores: exact per-example L2 norms of the cross-entropy gradient w.r.t. all params.

    Fast per-layer rules cover Dense, Conv and BatchNorm layers whose leading axis is the batch
    and whose params are used nowhere else; all other params get `vmap(grad)`. On the first batch
    of the call, each layer's rule is checked against `vmap(grad)` on a few examples per seed; a
    layer that disagrees uses `vmap(grad)` for the rest of the call (an absl warning names it).

    Args:
      model, variables, images, labels, batch_size, mesh, seed_axis: as in `el2n_scores`.
    Returns:
      scores: [K, N] float32, in example order.
    Raises:
      ValueError: as `el2n_scores`, or if the model uses batch statistics in eval mode.
    """
    return _scores("grand", model, variables, images, labels, batch_size, mesh, seed_axis)
