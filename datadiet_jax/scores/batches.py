"""Host-side input of the scores: fixed-size padded batches from arrays or from a stream.

Whatever the input, it reaches the compiled `[K, B]` function as batches of exactly `batch_size`
examples with a mask (the last one padded with zeros), so nothing recompiles. Arrays
(`images [N, ...]`, `labels [N]`) are sliced (`array_batches`); a stream, any iterable of
`(images [b, ...], labels [b])` batches of any sizes (or dicts with 'image' and 'label' keys), is
re-chunked in order (`stream_batches`) holding about two input batches, so host memory does not
grow with N. Every item is checked as the arrays of a call are (`inputs`), named by its stream
position. `ResultBuffer` collects the `[K, b]` (or `[K, b, D]`) results, N known or not.

Usage:

    source, num_seeds, total = batches.input_batches(
        check_model, images, labels, batch_size=256, seed_axis="unroll", integer_inputs=False
    )  # total: N, or None for a stream
    out = batches.ResultBuffer(num_seeds, total)
    for x, y, mask, count in source:  # [B, ...], [B], [B] float32, real examples
        out.append(score_fn(x, y, mask)[:, :count])  # [K, count]
    scores = out.result()  # [K, N] float32
"""

from __future__ import annotations

import collections.abc
from collections.abc import Iterable, Iterator

import numpy as np

from datadiet_jax.scores import inputs

_BLOCK = 1 << 16  # examples per result block of a stream


def is_stream(images) -> bool:
    """True for an iterable of batches (not an array, a list of numbers, or a tensor)."""
    if isinstance(images, np.ndarray | str | bytes) or hasattr(images, "__array__"):
        return False
    if isinstance(images, list | tuple):  # a list of (images, labels) tuples, not nested numbers
        return bool(images) and isinstance(images[0], tuple | dict)
    return isinstance(images, collections.abc.Iterable)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])


def _padded(x, y, batch_size):
    n = len(x)
    mask = np.zeros(batch_size, np.float32)
    mask[:n] = 1.0
    return _pad(x, batch_size), _pad(y, batch_size), mask, n


def array_batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> Iterator[tuple]:
    """Yields `(images [B, ...], labels [B], mask [B] float32, count)` slices of arrays.

    `count` is the number of real examples (the rest is zero padding with mask 0).
    """
    for lo in range(0, len(images), batch_size):
        hi = min(len(images), lo + batch_size)
        yield _padded(images[lo:hi], labels[lo:hi], batch_size)


def _unpack(item, number: int, integer_inputs: bool = False):
    if isinstance(item, dict) and "image" in item and "label" in item:
        item = (item["image"], item["label"])
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise ValueError(
            f"stream item {number} is a {type(item).__name__}, not an (images, labels) pair; "
            "yield (images [b, ...], labels [b]) tuples (or dicts with 'image' and 'label')."
        )
    source = inputs.Source(f"stream item {number}")
    images, labels = inputs.check_pairs(item[0], item[1], source, integer_inputs)
    return images, labels.astype(np.int32)


def first_batch(
    stream: Iterable, integer_inputs: bool = False
) -> tuple[np.ndarray, np.ndarray, Iterator]:
    """Reads the first non-empty item of `stream`, for shapes and model checks (`integer_inputs`:
    the images are integer token ids, `inputs.check_input_dtype`).

    Returns:
      (images [b, ...], labels [b], an iterator over every item, the first one included).
    Raises:
      ValueError: a malformed first item, or a stream with no examples.
    """
    if not isinstance(stream, collections.abc.Iterable):
        raise ValueError(
            f"images is a {type(stream).__name__}; pass an array with labels, or an iterable of "
            "(images, labels) batches without labels."
        )
    it = iter(stream)
    skipped = []
    for item in it:
        images, labels = _unpack(item, len(skipped), integer_inputs)
        skipped.append((images, labels))
        if len(images):
            return images, labels, _chain(skipped, it)
    raise ValueError("the stream yielded no examples; pass at least one (images, labels) batch.")


def _chain(head: list, rest: Iterator) -> Iterator:
    yield from head
    yield from rest


def stream_batches(
    items: Iterator,
    batch_size: int,
    example_shape: tuple,
    dtype,
    num_classes: int,
    integer_inputs: bool = False,
) -> Iterator[tuple]:
    """Re-chunks a stream of `(images, labels)` items into fixed-size padded batches.

    Args:
      items: iterator over stream items (from `first_batch`).
      batch_size: B.
      example_shape: the shape of one example; every item must match it.
      dtype: images are cast to it (the first batch's dtype).
      num_classes: C; labels must lie in [0, C).
      integer_inputs: the images are integer token ids (`inputs.check_input_dtype`).
    Yields:
      `(images [B, ...], labels [B], mask [B] float32, count)` in stream order.
    Raises:
      ValueError: naming the item and what is wrong with it.
    """
    buf_x, buf_y, held, seen = [], [], 0, 0
    for number, item in enumerate(items):
        x, y = _unpack(item, number, integer_inputs)
        if tuple(x.shape[1:]) != tuple(example_shape):
            raise ValueError(
                f"stream item {number} has examples of shape {tuple(x.shape[1:])}, the first "
                f"had {tuple(example_shape)}; every batch needs the same example shape."
            )
        if not len(x):
            continue
        source = inputs.Source(f"stream item {number}", "stream indices", seen)
        inputs.check_finite(x, source)
        inputs.check_label_range(y, num_classes, source)
        seen += len(x)
        buf_x.append(x.astype(dtype))  # a copy: the stream may reuse its buffers
        buf_y.append(y)
        held += len(x)
        if held < batch_size:
            continue
        xs = np.concatenate(buf_x) if len(buf_x) > 1 else buf_x[0]
        ys = np.concatenate(buf_y) if len(buf_y) > 1 else buf_y[0]
        lo = 0
        while held - lo >= batch_size:
            yield xs[lo : lo + batch_size], ys[lo : lo + batch_size], _ones(batch_size), batch_size
            lo += batch_size
        buf_x, buf_y, held = [xs[lo:]], [ys[lo:]], held - lo
    if held:
        yield _padded(np.concatenate(buf_x), np.concatenate(buf_y), batch_size)


def _ones(n: int) -> np.ndarray:
    return np.ones(n, np.float32)


class ResultBuffer:
    """Host `[K, N, *trailing]` float32 results, filled batch by batch in order.

    `trailing` is the shape of one example's result: `()` for scores, `(D,)` for features. With N
    known the result is allocated once. With N unknown, results go into blocks of `_BLOCK`
    examples and are copied into one array at the end, freeing each block as it is copied, so the
    peak stays about the size of the result.
    """

    def __init__(self, num_seeds: int, total: int | None = None, trailing: tuple = ()):
        self.num_seeds, self.total, self.size = num_seeds, total, 0
        self.trailing = tuple(trailing)
        shape = (num_seeds, total, *self.trailing)
        self._out = None if total is None else np.empty(shape, np.float32)
        self._blocks: list[np.ndarray] = []
        self._at = 0  # filled columns of the last block

    def append(self, values: np.ndarray) -> None:
        """Appends `values [K, b, *trailing]`."""
        b = values.shape[1]
        if self._out is not None:
            self._out[:, self.size : self.size + b] = values
        done = 0
        while self._out is None and done < b:
            if not self._blocks or self._at == _BLOCK:
                block = np.empty((self.num_seeds, _BLOCK, *self.trailing), np.float32)
                self._blocks.append(block)
                self._at = 0
            take = min(b - done, _BLOCK - self._at)
            self._blocks[-1][:, self._at : self._at + take] = values[:, done : done + take]
            self._at += take
            done += take
        self.size += b

    def result(self) -> np.ndarray:
        """The `[K, N, *trailing]` float32 results in order."""
        if self._out is not None:
            return self._out[:, : self.size]
        out = np.empty((self.num_seeds, self.size, *self.trailing), np.float32)
        for i in range(len(self._blocks)):
            lo = i * _BLOCK
            hi = min(self.size, lo + _BLOCK)
            out[:, lo:hi] = self._blocks[i][:, : hi - lo]
            self._blocks[i] = None
        self._blocks = []
        return out


def input_batches(check_model, images, labels, batch_size, seed_axis, integer_inputs):
    """Validated fixed-size padded host batches from arrays or from a stream.

    check_model: `(example_shape, dtype, num_examples=) -> (K, num_classes)` (`api.model_check`).
    Returns:
      (batches yielding `(images [B, ...], labels [B], mask [B], count)`, K, N or None for a
      stream, whose length is learned as it is read).
    """
    stream = is_stream(images)
    if labels is None and not stream:
        raise ValueError(
            "labels is missing; pass labels [N] with an images array (labels are omitted only "
            "for an iterable of (images, labels) batches)."
        )
    if labels is not None:
        if stream:
            raise ValueError(
                "images is an iterable of batches; omit labels (each batch carries its own) or "
                "pass images as an array."
            )
        images, labels, num_seeds = inputs.check_inputs(
            check_model, images, labels, batch_size, seed_axis, integer_inputs
        )
        return array_batches(images, labels, batch_size), num_seeds, len(images)
    inputs.check_args(batch_size, seed_axis)
    first_images, _, items = first_batch(images, integer_inputs)
    example_shape, dtype = first_images.shape[1:], first_images.dtype
    num_seeds, num_classes = check_model(example_shape, dtype, num_examples=len(first_images))
    rechunked = stream_batches(items, batch_size, example_shape, dtype, num_classes, integer_inputs)
    return rechunked, num_seeds, None
