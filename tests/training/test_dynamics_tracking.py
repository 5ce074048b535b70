"""The dynamics scores the K-seed loop tracks equal those of the presentations replayed by hand."""

import functools

import jax
import numpy as np

from datadiet_jax.scores import trajectory
from datadiet_jax.scores.seed_axis import over_seeds
from datadiet_jax.training import initial, input_pipeline, keys, train
from tests.conftest import tiny_model, tiny_spec, train_tiny
from tests.references import make_split


def _replayed_true_probs(split, spec):
    """[K, N, T] train-mode probability of each example's label at its t-th presentation,
    from the same batches and steps run one at a time outside the loop."""
    model = tiny_model(split)
    state = initial.initial_states(model, split, spec)
    tx = train.make_optimizer(spec.train_cfg, spec.schedule_steps)
    step = jax.jit(
        over_seeds(functools.partial(train.train_step, model, tx), spec.train_cfg.seed_axis)
    )
    rng = keys.dropout_keys(spec.seed, spec.purpose, spec.num_seeds)
    stream = input_pipeline.BatchStream(
        num_seeds=spec.num_seeds,
        batch_size=spec.train_cfg.batch_size,
        seed=keys.data_seed(spec.seed, spec.purpose),
        num_steps=spec.num_steps,
    )
    batches = input_pipeline.train_batches(split, split.index, stream)
    seen = [[[] for _ in range(split.num_examples)] for _ in range(spec.num_seeds)]
    for batch in batches:
        state, metrics = step(state, {**batch, "rng": rng})
        probs = np.asarray(metrics["probs"])
        for k in range(spec.num_seeds):
            for b in np.flatnonzero(batch["mask"][k]):
                i = batch["index"][k, b]
                seen[k][i].append(probs[k, b, split.labels[i]])
    return np.array(seen, np.float64)


def test_loop_tracks_the_dynamics_of_every_presentation(tmp_path):
    split = make_split(n=40)
    # 3 epochs of 3 steps (batch 16; the last batch of each epoch is padded), windows of 2.
    kw = dict(num_steps=9, schedule_steps=9, dynamics_window=2)
    _, stats, _ = train_tiny(split, tmp_path / "ckpt", **kw)
    p = _replayed_true_probs(split, tiny_spec(tmp_path / "unused", **kw))
    assert p.shape == (2, 40, 3)  # every example presented once per epoch, per seed
    np.testing.assert_allclose(trajectory.mean_true_probs(stats["dynamics"]), p.mean(-1), atol=2e-6)
    # DUAL: mean over windows (t, t+1) of std (ddof 1) * (1 - window mean); windows 0-1 and 1-2.
    stds = np.abs(np.diff(p, axis=-1)) / np.sqrt(2)
    means = (p[..., 1:] + p[..., :-1]) / 2
    want = (stds * (1 - means)).mean(-1)
    np.testing.assert_allclose(trajectory.dual_scores(stats["dynamics"]), want, atol=2e-6)
    # Dyn-Unc: the windows followed by a later epoch (only 0-1 here).
    np.testing.assert_allclose(
        trajectory.dyn_unc_scores(stats["dynamics"]), stds[..., 0], atol=2e-6
    )
    assert not np.allclose(want[0], want[1])  # the seeds' dynamics differ
