"""The first-batch check that each example's logits depend on that example alone.

Per-example scores mean nothing when a model's output for one example depends on the rest of its
batch (a BatchNorm normalizing with the batch's own statistics, as in training mode). So every
score call runs its first batch a second time with the batch changed around half of its real
examples (`altered_batch`): they move to every other row from the end, and every other row
becomes an affine copy `2 x + 1` of an example (token ids: other ids), which moves the batch's
mean and variance (a permutation alone would not), also within each device's shard of a mesh.
Each kept example's logits must stay within `max_c |l' - l| <= ATOL + RTOL * max_c |l|` per seed
(`changed`). Both runs are one compiled program (`logits_program`, cached per model) on batches
of one shape, over the seeds as the scores run them, so a batch-independent model differs at
most by the rounding of kernels whose summation order depends on a row's position, which RTOL
leaves room for. With batch size 1 nothing is checked; later batches are not checked (the model
and its mode are the same for every batch). A call repeats no check that passed before in the
process for the same model, shapes, variable values and first batch (`check_once`,
`decisions.py`; the verdict depends on values: a param can gate the dependence on the batch).

Usage:

    batch_check.check("el2n", form, "unroll", sharding.Placement(), placed, first_batch)
    # first_batch: (images [B, ...], labels [B], mask [B], count); ValueError if logits move
    batch_check.check_once("el2n", form, "unroll", sharding.Placement(), placed, first_batch)
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np
from absl import logging

from datadiet_jax.scores import decisions
from datadiet_jax.scores import seed_axis as seed_axis_lib

RTOL = 1e-3
ATOL = 1e-5

_FIX = (
    "apply it in inference mode with running statistics (Linen: BatchNorm("
    "use_running_average=True), or train=False; haiku: is_training=False, "
    "test_local_stats=False; equinox: inference=True; NNX: module.eval())"
)


def altered_batch(images: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first batch with other examples around half of its real ones.

    Args:
      images: [B, ...] a padded batch, B >= 2; count: its real examples (rows [0, count)).
    Returns:
      (altered [B, ...], kept [k] rows of `images`, their rows in `altered` [k]) with
      k = max(1, count // 2) <= B / 2: kept example i sits at row B - 1 - 2 i, and every other
      row is `2 x + 1` of a real example (integer token ids: `(x + 1) mod (max id + 1)`, ids an
      embedding table holds).
    """
    size = len(images)
    kept = np.arange(max(1, count // 2))
    moved = size - 1 - 2 * kept
    rest = np.setdiff1d(np.arange(size), moved)
    altered = np.empty_like(images)
    others = images[(len(kept) + np.arange(len(rest))) % count]
    if np.issubdtype(images.dtype, np.integer):  # token ids: other ids in the batch's own range
        altered[rest] = (others + 1) % (images.max() + 1)
    else:
        altered[rest] = 2 * others + 1
    altered[moved] = images[kept]
    return altered, kept, moved


def changed(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which (seed, example) logits moved beyond the tolerance.

    Args:
      before, after: [K, k, C] logits of the same examples in the two batches.
    Returns:
      (moved [K, k] bool, the largest difference [K, k]). An example whose logits in the first
      batch are not finite is left to the scores' NaN check; finite ones that turn non-finite
      moved.
    """
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    finite = np.isfinite(before).all(axis=-1)
    diff = np.where(np.isfinite(after), np.abs(after - before), np.inf).max(axis=-1)
    scale = np.where(np.isfinite(before), np.abs(before), 0.0).max(axis=-1)
    return finite & ~(diff <= ATOL + RTOL * scale), diff


def _build(model, seed_axis: str, mesh):
    def local(variables, images, labels, mask):
        del labels, mask

        def per_seed(v):
            return model.logits(v["params"], v["state"], images)

        if jax.tree.leaves(variables)[0].shape[0] == 1:  # as the scores: no loop for one seed
            return per_seed(jax.tree.map(lambda v: v[0], variables))[None]
        return seed_axis_lib.over_seeds(per_seed, seed_axis)(variables)

    if mesh is None:
        return jax.jit(local)
    from datadiet_jax.scores import sharding

    return sharding.shard_scores_fn(local, mesh)


_build_cached = functools.lru_cache(maxsize=32)(_build)


def logits_program(model, seed_axis: str, mesh=None):
    """The jitted logits of K seeds, run over seeds and devices as the scores are.

    Returns:
      `(variables [K, ...], images [B, ...], labels [B], mask [B]) -> logits [K, B, C]`.
    """
    try:
        return _build_cached(model, seed_axis, mesh)
    except TypeError:  # an unhashable model: build it for this call only
        return _build(model, seed_axis, mesh)


def clear_programs() -> None:
    """Forgets the cached logits programs."""
    _build_cached.cache_clear()


def check(kind: str, model, seed_axis: str, place, variables, first_batch) -> None:
    """Refuses a model whose logits for an example depend on the rest of its batch.

    Args:
      kind: the score ('el2n', 'grand'), for the message; model: a `model_form.ModelForm`;
      seed_axis: a resolved mode; place: the call's `sharding.Placement`; variables: the
      stacked variables on the devices; first_batch: `(images [B, ...], labels [B], mask [B],
      count)`.
    Raises:
      ValueError: one line naming the likely cause (batch statistics) and the fix.
    """
    images, labels, mask, count = first_batch
    if len(images) < 2:  # one example alone in its batch depends on no other example
        return
    start = time.perf_counter()
    decisions.count("batch_checks")
    fn, put, fetch = logits_program(model, seed_axis, place.mesh), place.put, place.fetch
    altered, kept, moved = altered_batch(images, count)
    before = fetch(fn(variables, put(images), put(labels), put(mask)))[:, kept]
    after = fetch(fn(variables, put(altered), put(labels), put(mask)))[:, moved]
    bad, diff = changed(before, after)
    logging.info(
        "%s batch check: logits of %d examples x %d seeds in a changed batch, largest "
        "difference %.2g, in %.1f s",
        kind,
        len(kept),
        len(diff),
        float(diff.max()),
        time.perf_counter() - start,
    )
    if bad.any():
        seed, example = (int(i) for i in np.argwhere(bad)[0])
        scale = float(np.abs(before[seed, example]).max())
        raise ValueError(
            f"{kind} scores need each example's logits to depend on that example alone, but "
            f"they change with the rest of the batch (seed {seed}, example {int(kept[example])}"
            f" of the first batch: by {diff[seed, example]:.2g}, its largest logit "
            f"{scale:.2g}); the model likely uses batch statistics (a BatchNorm or similar "
            f"layer in training mode): {_FIX}."
        )


def check_once(kind: str, model, seed_axis: str, place, variables, first_batch) -> None:
    """`check`, unless the same check passed before in this process: the same signature
    (`decisions.signature`), variable values (`decisions.values_digest`) and first batch.

    Args and Raises: as `check`; a refusal is never remembered.
    """
    images = first_batch[0]
    if len(images) < 2:  # nothing to check
        return
    sig = decisions.signature(model, variables, images, seed_axis, place.mesh)
    key = decisions.batch_key(sig, variables, first_batch)
    if decisions.batch_passed(key):
        return
    check(kind, model, seed_axis, place, variables, first_batch)
    decisions.record_batch_pass(key)
