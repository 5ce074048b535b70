"""Host batching: re-chunking a stream, the growing result buffer, stream detection."""

import numpy as np

from datadiet_jax.scores import batches


def test_rechunked_stream_equals_array_batches():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(23, 2, 2)).astype(np.float32)
    labels = rng.integers(0, 3, 23)
    want = list(batches.array_batches(images, labels.astype(np.int32), 5))
    items = [(images[a:b], labels[a:b]) for a, b in ((0, 1), (1, 13), (13, 13), (13, 23))]
    first, _, it = batches.first_batch(items)
    np.testing.assert_array_equal(first, images[:1])
    got = list(batches.stream_batches(it, 5, (2, 2), np.float32, 3))
    assert [g[3] for g in got] == [5, 5, 5, 5, 3] == [w[3] for w in want]
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g[:3], w[:3], strict=True):
            assert a.shape[0] == 5
            np.testing.assert_array_equal(a, b)


def test_result_buffer_across_blocks(monkeypatch):
    monkeypatch.setattr(batches, "_BLOCK", 7)
    values = np.arange(2 * 30, dtype=np.float32).reshape(2, 30)
    buf = batches.ResultBuffer(2)
    for a, b in ((0, 3), (3, 10), (10, 24), (24, 30)):  # spans of 3, 7, 14 and 6 columns
        buf.append(values[:, a:b])
    np.testing.assert_array_equal(buf.result(), values)
    known = batches.ResultBuffer(2, total=30)
    for a in range(0, 30, 8):
        known.append(values[:, a : a + 8])
    np.testing.assert_array_equal(known.result(), values)


def test_is_stream():
    x = np.zeros((3, 2))
    assert batches.is_stream(iter([(x, x)]))
    assert batches.is_stream([(x, x)])
    assert batches.is_stream((x, x) for _ in range(2))
    assert not batches.is_stream(x)
    assert not batches.is_stream([[0.0, 1.0]])
    assert not batches.is_stream([x, x])
