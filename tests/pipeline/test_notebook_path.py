"""The notebook path: kept_indices, pruned_dataset and train_seeds."""

import jax
import numpy as np
import pytest

import datadiet_jax as dd
from datadiet_jax.scores import pruning
from tests.own_models import NNXNet


def test_kept_indices_says_kept_or_pruned_outright():
    scores = np.array([0.5, 3.0, 1.0, 2.0, 0.1])
    np.testing.assert_array_equal(dd.kept_indices(scores, "hardest", keep_fraction=0.4), [1, 3])
    np.testing.assert_array_equal(dd.kept_indices(scores, "hardest", prune_fraction=0.6), [1, 3])
    np.testing.assert_array_equal(dd.kept_indices(scores, "easiest", keep_fraction=0.4), [0, 4])
    labels = np.array([0, 0, 1, 1, 1])
    np.testing.assert_array_equal(
        dd.kept_indices(scores, "hardest_balanced", keep_fraction=0.4, labels=labels),
        pruning.kept_indices(scores, "hardest_balanced", prune_fraction=0.6, labels=labels),
    )
    with pytest.raises(ValueError, match="exactly one"):
        dd.kept_indices(scores, keep_fraction=0.5, prune_fraction=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        dd.kept_indices(scores)
    with pytest.raises(ValueError, match=r"keep_fraction 0.0 is outside \(0, 1\]"):
        dd.kept_indices(scores, keep_fraction=0.0)


def test_pruned_dataset_visits_each_kept_example_once_an_epoch(synthetic_split):
    kept = np.array([3, 7, 8, 20, 41, 63, 10])
    batches = list(dd.pruned_dataset(synthetic_split, kept, batch_size=4, num_epochs=2))
    assert len(batches) == 4 and batches[0]["image"].shape == (4, 28, 28, 1)
    for epoch in (batches[:2], batches[2:]):
        seen = np.concatenate([b["index"][b["mask"] > 0] for b in epoch])
        np.testing.assert_array_equal(np.sort(seen), np.sort(kept))
    b = batches[0]
    want = synthetic_split.model_inputs()[b["index"]]
    np.testing.assert_allclose(b["image"], want, rtol=1e-6)
    np.testing.assert_array_equal(b["label"], synthetic_split.labels[b["index"]])
    stacked = next(iter(dd.pruned_dataset(synthetic_split, kept, batch_size=4, num_seeds=3)))
    assert stacked["index"].shape == (3, 4)
    assert len({tuple(row) for row in stacked["index"]}) > 1  # each seed its own order
    with pytest.raises(ValueError, match=r"indices in \[0, 64\) of this split"):
        next(iter(dd.pruned_dataset(synthetic_split, [0, 64], batch_size=4)))


def test_train_seeds_trains_resumes_and_refuses(synthetic_split, tmp_path):
    kept = np.arange(40)
    kw = dict(num_seeds=2, kept=kept, num_steps=6, batch_size=16, learning_rate=0.01)
    trained = dd.train_seeds(NNXNet, synthetic_split, workdir=str(tmp_path), **kw)
    assert trained.num_steps == 6 and np.all(np.asarray(trained.state.step) == 6)
    accuracy, loss = trained.evaluate(synthetic_split)
    assert accuracy.shape == loss.shape == (2,) and np.all(np.isfinite(loss))
    # Seeds differ; only the first 40 examples were presented.
    a, b = (
        jax.tree.leaves(jax.tree.map(lambda x, k=k: x[k], trained.state.params))[0] for k in (0, 1)
    )
    assert not np.allclose(a, b)
    assert np.all(np.asarray(trained.stats["forgetting"]["seen"])[:, 40:] == 0)
    again = dd.train_seeds(NNXNet, synthetic_split, workdir=str(tmp_path), **kw)  # resumes
    for x, y in zip(jax.tree.leaves(trained.state), jax.tree.leaves(again.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(
        ValueError,
        match="got 'learning_rte', which is no option of it; use one of .*'learning_rate'",
    ):
        dd.train_seeds(NNXNet, synthetic_split, learning_rte=0.1)
    with pytest.raises(ValueError, match="train_seeds: seed 0 diverged"):
        dd.train_seeds(NNXNet, synthetic_split, num_seeds=1, num_steps=3, learning_rate=1e30)


def test_arrays_go_through_the_same_pipeline(synthetic_split):
    images, labels = synthetic_split.inputs, synthetic_split.labels
    split = dd.split_from_arrays(images, labels)
    assert split.num_classes == int(labels.max()) + 1 and split.kind == "images"
    x = images.reshape(-1, 1).astype(np.float64) / 255.0  # per-channel statistics by hand
    np.testing.assert_allclose(split.mean, [x.mean()], rtol=1e-5)
    np.testing.assert_allclose(split.std, [x.std()], rtol=1e-5)
    kept = np.arange(0, 64, 3)
    from_tuple = list(dd.pruned_dataset((images, labels), kept, batch_size=8, num_epochs=1))
    from_split = list(dd.pruned_dataset(split, kept, batch_size=8, num_epochs=1))
    for a, b in zip(from_tuple, from_split, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    features = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    f = dd.split_from_arrays(features, np.arange(30) % 3)
    assert f.kind == "features"
    np.testing.assert_allclose(f.model_inputs().mean(0), 0, atol=1e-5)  # standardized
    with pytest.raises(ValueError, match="has 30 inputs but 29 labels"):
        dd.split_from_arrays(features, np.arange(29) % 3)
    with pytest.raises(ValueError, match="expected a Split"):
        dd.pruned_dataset([images, labels], kept, batch_size=8)


def test_train_seeds_tracks_the_dynamics_scores_of_an_own_model(synthetic_split, tmp_path):
    # 3 epochs of the first 32 examples (2 steps of 16 each), windows of 2.
    kw = dict(num_seeds=2, kept=np.arange(32), num_epochs=3, batch_size=16, learning_rate=0.01)
    trained = dd.train_seeds(NNXNet, synthetic_split, dynamics_window=2, **kw)
    state = trained.stats["dynamics"]
    for fn in (dd.dyn_unc_scores, dd.tdds_scores, dd.dual_scores):
        with pytest.raises(ValueError, match="presentations"):  # the 32 others were never seen
            fn(state)
    seen = {k: v[:, :32] for k, v in state.items()}
    dual = dd.dual_scores(seen)
    assert dual.shape == (2, 32) and np.all(np.isfinite(dual)) and np.all(dual >= 0)
    assert "dynamics" not in dd.train_seeds(NNXNet, synthetic_split, **kw).stats
