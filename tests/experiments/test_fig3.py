"""Figure 3 at smoke scale, checked against an independent NTK of restored checkpoints."""

import glob
import os
import time

import jax
import numpy as np
import pytest

from configs.studies import fig3 as studies_fig3
from configs.studies.scales import get_scale
from datadiet_jax import models
from datadiet_jax.dynamics import kernel_velocity
from datadiet_jax.pipeline import data
from datadiet_jax.training import keys, loop
from experiments import fig3
from tests.conftest import figure_dirs, read_rows, restore_checkpoint
from tests.references import jacrev_ntk

SMOKE = get_scale("smoke")
N = 256
MODEL = models.build(SMOKE.base_config().model, 10).module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    runs, out = figure_dirs(tmp_path_factory, "fig3")
    start = time.time()
    fig3.reproduce("smoke", runs, out)
    return dict(runs=runs, out=out, seconds=time.time() - start)


def _restore(config, workdir, model, split, epoch):
    """The K-seed state at `epoch` from the run's kept checkpoints."""
    spe = -(-N // config.train.batch_size)
    spec = loop.TrainSpec(
        train_cfg=config.train,
        num_seeds=config.score.num_seeds,
        seed=config.seed,
        purpose=keys.Purpose.KERNEL,
        num_steps=0,
        schedule_steps=config.train.num_epochs * spe,
        ckpt_dir=os.path.join(workdir, "train", "ckpt"),
        augment=False,
    )
    return restore_checkpoint(model, split, spec, epoch * spe)


def _jacrev_gram(state, seed, images):
    """Trace-over-logits NTK of one seed from the whole Jacobian (float64 products)."""
    variables = {"params": state.params, **state.model_state}
    return jacrev_ntk(_eval_apply, jax.tree.map(lambda v: v[seed], variables), images)[0]


def _eval_apply(variables, images):
    return MODEL.apply(variables, images, train=False)


def test_rows_figure_and_summary(smoke):
    rows = read_rows(os.path.join(smoke["out"], "fig3.csv"))
    # 2 noise levels x 2 epochs x 2 seeds x 4 windows.
    assert len(rows) == 2 * 2 * 2 * 4
    assert {r["noise_fraction"] for r in rows} == {"0.0", "0.1"}
    assert {int(r["window_start"]) for r in rows} == {0, 74, 149, 224}
    assert all(0.0 < float(r["velocity"]) < 2.0 for r in rows)
    for name in ("fig3.png", "fig3.pdf", "fig3_summary.md"):
        assert os.path.getsize(os.path.join(smoke["out"], name)) > 0
    summary = open(os.path.join(smoke["out"], "fig3_summary.md")).read()
    assert "Spearman(rank, velocity)" in summary and "10% random labels" in summary
    # The protocol opens it: no retraining, the K-seed training, 256 examples in batches of 32.
    assert summary.index("## Protocol") < summary.index("## Does velocity rise")
    assert (
        "| retraining budget | none |" in summary and "| training | one training of K=2" in summary
    )
    assert "epochs x 8 steps" in summary and "| batch size | 32 |" in summary


def test_windows_follow_the_el2n_ranking_at_t(smoke):
    run = os.path.join(smoke["runs"], "smoke", "fig3_noise10")
    with np.load(os.path.join(run, "el2n", "epoch001.npz")) as f:
        mean, per_seed, windows = f["mean"], f["per_seed"], f["windows"]
    np.testing.assert_allclose(mean, per_seed.mean(0), rtol=1e-6)
    order = np.argsort(mean, kind="stable")
    for w, start in enumerate((0, 74, 149, 224)):
        assert windows[w].tolist() == order[start : start + 32].tolist()
    assert mean[windows[-1]].min() >= mean[windows[0]].max()


def test_velocity_equals_an_independent_computation(smoke):
    # The states at t = 1 and t + 1 = 2 restored from the kept checkpoints; the NTK of the top
    # window from jacrev; the cosine distance by hand.
    config = fig3.velocity_config(SMOKE, 0.1, smoke["runs"])
    split, _ = data.load_splits(config.data)
    run = os.path.join(smoke["runs"], "smoke", "fig3_noise10")
    with np.load(os.path.join(run, "el2n", "epoch001.npz")) as f:
        window = f["windows"][-1]
    images = split.model_inputs()[window]
    rows = read_rows(os.path.join(smoke["out"], "fig3.csv"))
    states = [_restore(config, run, MODEL, split, e) for e in (1, 2)]
    for seed in (0, 1):
        k1, k2 = (_jacrev_gram(s, seed, images) for s in states)
        want = 1 - np.sum(k1 * k2) / np.sqrt(np.sum(k1 * k1) * np.sum(k2 * k2))
        got = [
            float(r["velocity"])
            for r in rows
            if r["noise_fraction"] == "0.1"
            and r["epoch"] == "1"
            and r["seed"] == str(seed)
            and r["window_start"] == "224"
        ]
        assert got == [pytest.approx(want, rel=1e-3, abs=1e-6)]


def test_class_share_of_the_windows(smoke):
    config = fig3.velocity_config(SMOKE, 0.1, smoke["runs"])
    split, _ = data.load_splits(config.data)
    run = os.path.join(smoke["runs"], "smoke", "fig3_noise10")
    with np.load(os.path.join(run, "el2n", "epoch001.npz")) as f:
        windows = f["windows"]
    rows = read_rows(os.path.join(smoke["out"], "fig3.csv"))
    for w, start in enumerate((0, 74, 149, 224)):
        counts = {}
        for label in split.labels[windows[w]].tolist():  # the noisy labels the run trained on
            counts[label] = counts.get(label, 0) + 1
        got = [
            float(r["majority_class_share"])
            for r in rows
            if r["noise_fraction"] == "0.1"
            and r["epoch"] == "1"
            and r["window_start"] == str(start)
        ]
        assert got == [pytest.approx(max(counts.values()) / 32)] * 2  # one row per seed
    share = kernel_velocity.majority_class_share(
        np.array([3, 3, 1, 2, 2, 2]), [[0, 1, 2], [3, 4, 5]]
    )
    np.testing.assert_allclose(share, [2 / 3, 1.0])


def test_el2n_file_of_another_length_is_refused(smoke, tmp_path):
    # A planted fault: the run's files, read against the labels of a smaller dataset.
    config = fig3.velocity_config(SMOKE, 0.0, smoke["runs"])
    split, _ = data.load_splits(config.data)
    run = os.path.join(smoke["runs"], "smoke", "fig3_noise00")
    with pytest.raises(ValueError, match="scores 256 examples, not the 255 labels"):
        kernel_velocity.velocity_rows(run, [0], split.labels[:255])


def test_second_invocation_trains_nothing(smoke):
    files = sorted(
        glob.glob(os.path.join(smoke["runs"], "smoke", "fig3_*", "**", "*"), recursive=True)
    )
    before = {p: os.stat(p).st_mtime_ns for p in files if os.path.isfile(p)}
    csv_text = open(os.path.join(smoke["out"], "fig3.csv")).read()
    fig3.reproduce("smoke", smoke["runs"], smoke["out"])
    after = {p: os.stat(p).st_mtime_ns for p in files if os.path.isfile(p)}
    assert after == before
    assert open(os.path.join(smoke["out"], "fig3.csv")).read() == csv_text
    print("fig3 smoke seconds:", smoke["seconds"])


def test_window_helpers_and_bad_settings(tmp_path, monkeypatch):
    assert kernel_velocity.window_starts(10, 4, 3).tolist() == [0, 3, 6]
    assert kernel_velocity.window_starts(10, 10, 5).tolist() == [0]
    scores = np.array([0.5, 0.1, 0.5, 0.9, 0.0])
    windows = kernel_velocity.rank_windows(scores, [0, 3], 2)
    assert windows.tolist() == [[4, 1], [2, 3]]  # ties keep dataset order
    with pytest.raises(ValueError, match="do not fit"):
        kernel_velocity.window_starts(10, 11, 2)
    bad = studies_fig3.Fig3Scale((0, 2), 32, 4)  # epoch 3 is past the 2 smoke epochs
    monkeypatch.setitem(studies_fig3.FIG3, "smoke", bad)
    with pytest.raises(ValueError, match="past the 2 training epochs"):
        fig3.reproduce("smoke", str(tmp_path / "runs"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "runs")


def test_settings_of_every_scale_are_valid():
    for name in ("paper", "cpu", "smoke"):
        fig3.check(get_scale(name), "runs")
    cpu = fig3.velocity_config(get_scale("cpu"), 0.1, "runs")
    assert cpu.score.num_seeds == 4 and cpu.data.num_train_examples == 10_000
    assert cpu.data.label_noise.fraction == 0.1
