import numpy as np
import pytest

from datadiet_jax import data, pipelines


def _batches(split, kept, **kw):
    args = dict(mean=split.mean, std=split.std, num_seeds=2, batch_size=4, seed=0)
    args.update(kw)
    return list(pipelines.train_batches(split.images, split.labels, kept, **args))


def test_pruned_pipeline_yields_each_kept_index_once_per_epoch(synthetic_split):
    kept = np.array([1, 4, 9, 16, 25, 36, 49, 50, 63, 7, 3])  # 11 examples -> 3 batches of 4
    spe = pipelines.steps_per_epoch(len(kept), 4)
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
        synthetic_split.images[b["index"]], synthetic_split.mean, synthetic_split.std
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


def test_augmentation_is_a_crop_of_the_reflect_padded_image_maybe_flipped():
    from tests.conftest import make_split

    split = make_split(n=8, hw=32, channels=3)
    b = _batches(split, np.arange(8), num_steps=2, augment=True)[1]
    for k in range(2):
        for j in range(4):
            x = data.normalize(split.images[b["index"][k, j]], split.mean, split.std)
            padded = np.pad(x, [(4, 4), (4, 4), (0, 0)], mode="reflect")
            crops = [padded[r : r + 32, c : c + 32] for r in range(9) for c in range(9)]
            crops += [c[:, ::-1] for c in crops]
            assert min(np.abs(c - b["image"][k, j]).max() for c in crops) < 1e-5


def test_eval_batches_pad_and_mask(synthetic_split):
    batches = list(
        pipelines.eval_batches(
            synthetic_split.images,
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
