"""The first-batch check that each example's logits depend on that example alone.

Per-example scores are meaningless when a model's output for one example depends on the rest of
its batch: a BatchNorm (or any layer) normalizing with the batch's own statistics, as in
training mode (a Linen `BatchNorm(use_running_average=False)`, haiku's `BatchNorm` with
`test_local_stats=True`, an equinox `BatchNorm` not in inference mode). Its EL2N then differed
from a one-example-at-a-time reference by up to 2e-2, and would change with the batch size.

So every score call runs the model once more on its first batch with the batch changed around
some of its examples (`altered_batch`): half of its real examples are kept and moved to every
other row from the end, and every other row is replaced by an affine copy `2 x + 1` of an
example, which moves the batch's mean and variance (a permutation alone would not: batch
statistics are the same for any order of the same examples). As the kept examples alternate
with the copies, every contiguous slice of two or more rows holding one of them holds a copy
too, so the examples that share a device's shard of the batch under a mesh change as well.
Each kept example's logits must stay the same within

    max_c |l' - l| <= ATOL + RTOL * max_c |l|                      (per seed and example)

Both runs are calls of one compiled program on batches of the same shape, over the K seeds as
the scores run them (the same `seed_axis` mode, the same mesh), so for a batch-independent model
the kept logits can differ only by the rounding of kernels whose summation order depends on a
row's position in the batch. On XLA:CPU they were bit-identical (difference 0) for small_cnn
(widths 4 and 32, random running statistics), TinyCNN and an MLP at batch sizes 2, 7 and 128,
and ResNet18 at 2 and 32, with full and partial first batches, K = 1 and 3 (every seed-axis
mode; ResNet18 unrolled only) and inputs of scales 1 to 100: 15,444 checked (seed, example)
pairs. Accelerators (not measured) may tile a matmul or convolution differently at different
rows; float32 accumulation rounding is then about 1e-7 of the summed magnitudes, and RTOL = 1e-3
(as the GraNd guard's) leaves a factor of about 1e4 for such differences to grow through a deep
model before a false alarm. Batch statistics move the kept logits far more: a layer subtracting
the batch mean, a BatchNorm with batch statistics after the first convolution, and one after
the hidden Dense layer changed the most-moved example's logits by at least 0.20, 0.36 and 0.34
of max |l| in every measured batch (sizes 2, 7 and 128, also 3 and 256 for the last; input
scales 1 and 10, also 0.1 for the last; K = 1 and 3), 200x above RTOL. ATOL = 1e-5 covers logits
near zero.

The cost: one forward-only program, compiled once per model (cached like the score programs),
run twice on one batch. With batch_size 1 a batch holds one example, which cannot depend on
others, and nothing is checked; a first batch with fewer real examples than rows is checked
(its padding rows are part of the batch a batch-statistics layer sees). Later batches, the last
partial one included, are not checked: the model and its mode are the same for every batch.
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np
from absl import logging

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
