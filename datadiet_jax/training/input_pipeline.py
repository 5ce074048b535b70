"""tf.data input pipelines: K-seed training batches from kept indices, padded full-split batches.

Training: every seed has its own shuffle of the kept indices each epoch, drawn statelessly from
(seed, seed index, epoch), so a run restarted at any step sees exactly the batches an uninterrupted
run would. The last batch of an epoch is padded with repeated examples whose `mask` is 0, so every
epoch visits each kept example exactly once and shapes never change (a kept set of any size >= 1
works, even one smaller than a batch).

Batches are dicts of numpy arrays: `image [K, B, H, W, C] float32`, `label [K, B] int32`,
`index [K, B] int64` (dataset positions) and `mask [K, B] float32`. Images are uint8 pixels or
float values (`pipeline/input_kinds.py`); both are augmented after they are normalized. Inputs
that are not images (`data.Split.kind`) take the same path: `image` is then `[K, B, D] float32`
features or `[K, B, T] int32` token ids, prepared as `input_kinds.prepare` does (by dtype).

Usage:

    from datadiet_jax.training import input_pipeline
    stream = input_pipeline.BatchStream(num_seeds=4, batch_size=128, seed=0, num_steps=1000)
    for batch in input_pipeline.train_batches(split, kept, stream):   # kept [M] or [K, M]
        state, stats, loss = step_fn(state, stats, batch)
    batches = input_pipeline.eval_batches(split.inputs, split.labels, mean=split.mean,
                                          std=split.std, batch_size=500)   # [B, ...], padded
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np

from datadiet_jax.training import keys


def _tf():
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # tf.data only; JAX owns the accelerators.
    return tf


def seed_pair(seed: int, *purpose: int) -> np.ndarray:
    """A stateless TF seed `[2] int64` derived from the run seed and a purpose path."""
    state = np.random.SeedSequence([seed, *purpose]).generate_state(2, np.uint32)
    return state.astype(np.int64)


def steps_per_epoch(num_kept: int, batch_size: int) -> int:
    """Number of (padded) batches that visit `num_kept` examples once."""
    return math.ceil(num_kept / batch_size)


def augments(data_cfg, image_shape) -> bool:
    """Whether training augments: `config.data.augment` 'on', or 'auto' and 32x32 images.

    image_shape: the shape of the inputs, [N, H, W, C] for images (or of one example batch);
      inputs of another rank (features [N, D], token ids [N, T]) are never augmented.
    Raises:
      ValueError: 'on' for inputs that are not images.
    """
    if len(image_shape) != 4:
        if data_cfg.augment == "on":
            raise ValueError(
                f"config.data.augment is 'on' but the inputs are {tuple(image_shape[1:])} per "
                "example, not images [H, W, C] (random crops and flips are for images); set "
                "--config.data.augment=auto or off."
            )
        return False
    if data_cfg.augment == "auto":
        return tuple(image_shape[1:3]) == (32, 32)
    return data_cfg.augment == "on"


def augment_crop_flip(tf, images, seed, columns: slice | None = None, width: int | None = None):
    """Reflect-pad-4 random 32x32 crop and random horizontal flip, per example.

    Args:
      images: [M, H, W, C] float32.
      seed: [2] int stateless seed.
      columns, width: `images` are the examples `columns` of a batch of `width`: they get the
        crops and flips those positions get when the whole batch is augmented.
    """
    m, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
    part = columns if columns is not None else slice(None)
    draws = width if width is not None else m
    offsets = tf.random.stateless_uniform([2, draws], seed, minval=0, maxval=9, dtype=tf.int32)
    offsets = offsets[:, part]
    rows = offsets[0][:, None] + tf.range(h)[None]
    cols = offsets[1][:, None] + tf.range(w)[None]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    flip = tf.random.stateless_uniform([draws], flip_seed)[part] < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)


@dataclasses.dataclass(frozen=True)
class BatchStream:
    """Which K-seed training batches `train_batches` makes.

    Attributes:
      num_seeds: K; seed k shuffles with its own stream.
      batch_size: B.
      seed: run seed from which every shuffle and augmentation seed derives.
      num_steps: total steps of the run; epochs repeat as needed.
      start_step: first step to yield (for resuming).
      augment: reflect-pad-4 random crop and horizontal flip (32x32 datasets).
      streams: the seed index whose shuffles and augmentations each of the K seeds draws
        (`keys.seed_indices`; default 0..K-1), so a stacked member sees the batches of the seed
        it stands for.
      block: (seeds, columns) slices: make only this block `[k, b]` of every `[K, B]` batch
        (the part one process's devices hold, `train_mesh.local_block`), with the very values
        those positions have in the whole batch; None makes the whole batch.
    """

    num_seeds: int
    batch_size: int
    seed: int
    num_steps: int
    start_step: int = 0
    augment: bool = False
    streams: tuple = ()
    block: tuple[slice, slice] | None = None


def train_batches(split, kept: np.ndarray, stream: BatchStream) -> Iterator[dict[str, np.ndarray]]:
    """Yields K-seed training batches for steps `stream.start_step, ..., stream.num_steps - 1`.

    Args:
      split: the examples (a `data.Split`): `images` [N, H, W, C] uint8 or float32, the whole
        split in dataset order (or features [N, D] float32, token ids [N, T] int32), `labels`
        [N] int (possibly noisy), `mean` and `std` [C] normalization constants.
      kept: [M] int64 dataset indices to train on, or [K, M]: each seed its own kept set (of
        one size: a stacked training of several runs).
      stream: which batches (`BatchStream`).

    Yields:
      Dicts with `image [K, B, H, W, C] float32`, `label [K, B] int32`, `index [K, B] int64`,
      `mask [K, B] float32` (`[k, b, ...]` with `stream.block`).
    """
    num_seeds, batch_size, seed = stream.num_seeds, stream.batch_size, stream.seed
    num_steps, start_step = stream.num_steps, stream.start_step
    streams, block = stream.streams, stream.block
    tf = _tf()
    kept = np.asarray(kept, np.int64)
    if kept.size == 0:
        raise ValueError("No examples to train on: the kept index set is empty.")
    kept = np.broadcast_to(kept, (num_seeds, kept.shape[-1]))  # one row per seed
    index = keys.seed_indices(num_seeds, streams)
    rows, cols = block or (slice(0, num_seeds), slice(0, batch_size))
    kept, index = kept[rows], index[rows]
    spe = steps_per_epoch(kept.shape[1], batch_size)
    epoch_indices = _epoch_orders(tf, kept, index, batch_size, seed, cols)
    make_batch = _batch_fn(tf, split, index, stream, cols)
    start_epoch = start_step // spe
    num_epochs = math.ceil(num_steps / spe)
    ds = tf.data.Dataset.range(start_epoch, num_epochs).flat_map(epoch_indices)
    ds = ds.skip(start_step - start_epoch * spe).take(num_steps - start_step)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(start_step, num_steps), ds)
    return _numpy_batches(tf, ds, make_batch)


def round_batches(
    make_batch, idx: np.ndarray, mask: np.ndarray, stream: BatchStream
) -> Iterator[dict[str, np.ndarray]]:
    """Yields the K-seed batches of given index lists (a pruning round, `prune_feed`), for
    steps `stream.start_step, ..., stream.start_step + L - 1`.

    Args:
      make_batch: `round_batch_fn(split, stream)`, made once per training (it holds the split
        as TF constants).
      idx: [L, K, B] int64 dataset indices of each step's batch; mask: [L, K, B] float32.
      stream: the training's `BatchStream` (`block` selects the local part).

    Yields:
      Dicts as `train_batches` does.
    """
    tf = _tf()
    rows, cols = stream.block or (slice(0, stream.num_seeds), slice(0, stream.batch_size))
    idx = np.asarray(idx, np.int64)[:, rows, cols]
    mask = np.asarray(mask, np.float32)[:, rows, cols]
    first = stream.start_step
    ds = tf.data.Dataset.zip(
        tf.data.Dataset.range(first, first + len(idx)),
        tf.data.Dataset.from_tensor_slices((idx, mask)),
    )
    return _numpy_batches(tf, ds, make_batch)


def _numpy_batches(tf, ds, make_batch) -> Iterator[dict[str, np.ndarray]]:
    """`ds.map(make_batch)` on as many threads as the machine has cores, in order, two batches
    ahead, as numpy.

    tf.data's autotuning stays off: with it, building the next iterator after a finished one (a
    pruning round's batches, every round) stalled for up to 8 s on a 12 s epoch, inside tf.data,
    on 3 of 5 trainings (`benchmarks/bench_prune.py`); with a fixed thread count, in none, at the
    same rate.
    """
    opts = tf.data.Options()
    opts.autotune.enabled = False
    ds = ds.map(make_batch, num_parallel_calls=os.cpu_count() or 1, deterministic=True)
    return ds.prefetch(2).with_options(opts).as_numpy_iterator()


def round_batch_fn(split, stream: BatchStream):
    """The batch maker of `round_batches`: gathers, prepares and augments as `train_batches`
    does (augmentations drawn by seed index and step), for `stream.block`'s part."""
    tf = _tf()
    index = keys.seed_indices(stream.num_seeds, stream.streams)
    rows, cols = stream.block or (slice(0, stream.num_seeds), slice(0, stream.batch_size))
    return _batch_fn(tf, split, index[rows], stream, cols)


def _batch_fn(tf, split, index: np.ndarray, stream: BatchStream, cols: slice):
    """`(step, (idx [K, b], mask [K, b])) -> batch`: gathers, prepares and (with
    `stream.augment`) augments the examples, seed k with the augmentation stream of `index[k]`."""
    images_t = tf.constant(split.inputs)
    labels_t = tf.constant(np.asarray(split.labels, np.int32))
    mean_t = tf.constant(np.asarray(split.mean, np.float32))
    std_t = tf.constant(np.asarray(split.std, np.float32))
    aug = keys.STREAMS["augment"]
    aug_seeds = tf.constant(np.stack([seed_pair(stream.seed, aug, int(k)) for k in index]))

    def make_batch(step, idx_mask):
        idx, mask = idx_mask
        x = _prepare(tf, tf.gather(images_t, idx), mean_t, std_t)
        if stream.augment:
            per_seed = []
            for k in range(len(index)):
                s = tf.random.experimental.stateless_fold_in(aug_seeds[k], step)
                per_seed.append(augment_crop_flip(tf, x[k], s, cols, stream.batch_size))
            x = tf.stack(per_seed)
        return {"image": x, "label": tf.gather(labels_t, idx), "index": idx, "mask": mask}

    return make_batch


def _epoch_orders(
    tf, kept: np.ndarray, index: np.ndarray, batch_size: int, seed: int, columns: slice
):
    """`epoch -> Dataset of (idx [K, b], mask [K, b])`: each seed's own shuffle of its row of
    `kept [K, M]`, the batch positions `columns` of it.

    Every seed shuffles with the stateless stream of its seed index (`index [K]`), folded with
    the epoch; the last batch is padded by repeating the epoch's order (several times when
    B > 2M), with mask 0.
    """
    num_seeds, m = kept.shape
    spe = steps_per_epoch(m, batch_size)
    padded_len = spe * batch_size
    shuffle = keys.STREAMS["shuffle"]
    shuffle_seeds = tf.constant(np.stack([seed_pair(seed, shuffle, int(k)) for k in index]))
    kept_t = tf.constant(kept)
    mask_epoch = tf.constant(
        (np.arange(padded_len) < m).astype(np.float32).reshape(spe, batch_size)
    )

    def epoch_indices(epoch):
        rows = []
        for k in range(num_seeds):
            s = tf.random.experimental.stateless_fold_in(shuffle_seeds[k], epoch)
            order = tf.argsort(tf.random.stateless_uniform([m], s))
            perm = tf.gather(kept_t[k], order)
            rows.append(tf.tile(perm, [math.ceil(padded_len / m)])[:padded_len])
        idx = tf.reshape(tf.stack(rows), [num_seeds, spe, batch_size])
        idx = tf.transpose(idx, [1, 0, 2])[:, :, columns]  # [spe, K, b]
        mask = tf.tile(mask_epoch[:, None, columns], [1, num_seeds, 1])
        return tf.data.Dataset.from_tensor_slices((idx, mask))

    return epoch_indices


def _prepare(tf, inputs, mean, std):
    """Model inputs in the graph, as `input_kinds.prepare`: uint8 images -> float32
    `(x / 255 - mean) / std`, float images and features -> `(x - mean) / std`, integer ids ->
    int32."""
    if inputs.dtype == tf.uint8:
        return (tf.cast(inputs, tf.float32) / 255.0 - mean) / std
    if inputs.dtype.is_floating:
        return (tf.cast(inputs, tf.float32) - mean) / std
    return tf.cast(inputs, tf.int32)


def eval_batches(
    images: np.ndarray, labels: np.ndarray, *, mean, std, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Yields padded, masked batches over a whole split, in dataset order.

    Yields:
      Dicts with `image [B, H, W, C] float32` (or `[B, D]` features, `[B, T]` int32 token ids),
      `label [B] int32`, `index [B] int64` and `mask [B] float32`; the last batch is padded with
      zeros and mask 0.
    """
    tf = _tf()
    n = len(labels)
    padded = steps_per_epoch(n, batch_size) * batch_size
    idx = np.arange(padded, dtype=np.int64)
    mask = (idx < n).astype(np.float32)
    idx = np.minimum(idx, n - 1)
    images_t = tf.constant(images)
    labels_t = tf.constant(np.asarray(labels, np.int32))
    mean_t = tf.constant(np.asarray(mean, np.float32))
    std_t = tf.constant(np.asarray(std, np.float32))

    def make_batch(i, m):
        x = _prepare(tf, tf.gather(images_t, i), mean_t, std_t)
        x = x * tf.cast(tf.reshape(m, [-1] + [1] * (len(images.shape) - 1)), x.dtype)
        return {
            "image": x,
            "label": tf.gather(labels_t, i) * tf.cast(m, tf.int32),
            "index": i,
            "mask": m,
        }

    ds = tf.data.Dataset.from_tensor_slices((idx, mask)).batch(batch_size)
    return _numpy_batches(tf, ds, make_batch)
