import numpy as np
import pytest

from datadiet_jax.pipeline import data
from datadiet_jax.training import input_pipeline


def _batches(split, kept, **kw):
    args = dict(num_seeds=2, batch_size=4, seed=0)
    args.update(kw)
    return list(input_pipeline.train_batches(split, kept, input_pipeline.BatchStream(**args)))


def test_pruned_pipeline_yields_each_kept_index_once_per_epoch(synthetic_split):
    kept = np.array([1, 4, 9, 16, 25, 36, 49, 50, 63, 7, 3])  # 11 examples -> 3 batches of 4
    spe = input_pipeline.steps_per_epoch(len(kept), 4)
    batches = _batches(synthetic_split, kept, num_steps=3 * spe)
    assert len(batches) == 3 * spe
    orders = []
    for epoch in range(3):
        chunk = batches[epoch * spe : (epoch + 1) * spe]
        for k in range(2):
            seen = np.concatenate([b["index"][k][b["mask"][k] > 0] for b in chunk])
            assert sorted(seen) == sorted(kept)  # a permutation of the kept indices
            orders.append(tuple(seen))
    assert len(set(orders)) == len(orders)  # each seed and epoch has its own order
    b = batches[0]
    assert b["image"].shape == (2, 4, 28, 28, 1) and b["image"].dtype == np.float32
    np.testing.assert_array_equal(b["label"], synthetic_split.labels[b["index"]])
    expected = data.normalize(
        synthetic_split.inputs[b["index"]], synthetic_split.mean, synthetic_split.std
    )
    np.testing.assert_allclose(b["image"], expected, rtol=1e-6)
    np.testing.assert_array_equal(batches[spe - 1]["mask"], [[1, 1, 1, 0]] * 2)


def test_resumed_pipeline_matches_uninterrupted(synthetic_split):
    kept = np.arange(0, 64, 3)
    full = _batches(synthetic_split, kept, num_steps=13, augment=True)
    resumed = _batches(synthetic_split, kept, num_steps=13, start_step=7, augment=True)
    assert len(resumed) == 6
    for a, b in zip(full[7:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("rows,cols", [((1, 3), (0, 4)), ((0, 4), (2, 4)), ((2, 3), (1, 3))])
def test_a_block_of_the_batch_is_that_block_of_the_whole_batch(rows, cols):
    """What one process of a multi-process job makes (`block`): its seeds and batch columns,
    with the indices, masks, crops and flips of those positions in the whole batch, whatever
    the other processes hold; streams and a padded last batch included."""
    from tests.references import make_split

    split = make_split(n=24, hw=32, channels=3)
    kept, streams = np.arange(1, 23, 2), (0, 1, 0, 1)  # 11 examples: padded last batch
    args = dict(num_seeds=4, num_steps=5, augment=True, streams=streams)
    whole = _batches(split, kept, **args)
    block = (slice(*rows), slice(*cols))
    part = _batches(split, kept, block=block, **args)
    assert len(part) == len(whole) == 5
    for a, b in zip(whole, part, strict=True):
        for key in a:
            np.testing.assert_array_equal(b[key], a[key][block], key)
    assert any(b["mask"].min() == 0 for b in whole)  # the padding is in the comparison


def test_augmentation_crops_and_flips_each_image_within_the_allowed_set():
    from tests.references import make_split

    split = make_split(n=8, hw=32, channels=3)
    batches = _batches(split, np.arange(8), num_steps=6, augment=True)
    shifted = flipped = untouched = 0
    for b in batches:
        for k in range(2):
            for j in range(4):
                x = data.normalize(split.inputs[b["index"][k, j]], split.mean, split.std)
                padded = np.pad(x, [(4, 4), (4, 4), (0, 0)], mode="reflect")
                candidates = {
                    (r, c, flip): padded[r : r + 32, c : c + 32][:, :: -1 if flip else 1]
                    for r in range(9)
                    for c in range(9)
                    for flip in (False, True)
                }
                errors = {key: np.abs(v - b["image"][k, j]).max() for key, v in candidates.items()}
                (r, c, flip), error = min(errors.items(), key=lambda kv: kv[1])
                assert error < 1e-5  # every output is one of the allowed crops and flips
                shifted += (r, c) != (4, 4)
                flipped += flip
                untouched += (r, c, flip) == (4, 4, False)
    total = 6 * 2 * 4
    # The 81 offsets and 2 flips are drawn uniformly: nearly all outputs are shifted, about half
    # flipped; an identity augmentation would give shifted = flipped = 0.
    assert shifted >= total - 6 and total // 4 <= flipped <= 3 * total // 4
    assert untouched <= 3


def test_augmentation_off_returns_the_normalized_image():
    from tests.references import make_split

    split = make_split(n=8, hw=32, channels=3)
    for b in _batches(split, np.arange(8), num_steps=2, augment=False):
        expected = data.normalize(split.inputs[b["index"]], split.mean, split.std)
        np.testing.assert_allclose(b["image"], expected, rtol=1e-6)


@pytest.mark.parametrize("num_kept", [1, 3])
def test_kept_set_smaller_than_a_batch_trains_with_masked_padding(synthetic_split, num_kept):
    kept = np.array([5, 17, 40][:num_kept])
    batches = _batches(synthetic_split, kept, batch_size=32, num_steps=3)
    assert len(batches) == 3  # one padded batch per epoch
    for b in batches:
        assert b["image"].shape == (2, 32, 28, 28, 1)
        np.testing.assert_array_equal(b["mask"].sum(1), [num_kept, num_kept])
        for k in range(2):
            real = b["index"][k][b["mask"][k] > 0]
            assert sorted(real) == sorted(kept)  # each kept example once per epoch
            assert set(b["index"][k]) == set(kept)  # the padding repeats kept examples
        np.testing.assert_array_equal(b["label"], synthetic_split.labels[b["index"]])


def test_eval_batches_pad_and_mask(synthetic_split):
    batches = list(
        input_pipeline.eval_batches(
            synthetic_split.inputs,
            synthetic_split.labels,
            mean=synthetic_split.mean,
            std=synthetic_split.std,
            batch_size=24,
        )
    )
    assert [b["image"].shape[0] for b in batches] == [24, 24, 24]
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 64 and np.all(mask[64:] == 0)
    index = np.concatenate([b["index"] for b in batches])[:64]
    np.testing.assert_array_equal(index, np.arange(64))


def test_empty_kept_set_is_refused(synthetic_split):
    with pytest.raises(ValueError, match="empty"):
        _batches(synthetic_split, np.array([], np.int64), num_steps=1)
