"""Figure 4, seed count and score transfer at smoke scale (about three minutes on a CPU).

The three scripts run once (module fixture) into the figure folder the suite shares, so they
reuse the clean score run and the baselines of Figures 1 and 2; the tests read what they wrote
and check it against independent computations.
"""

import dataclasses
import json
import os
import time

import numpy as np
import pytest
from scipy import stats

from configs.studies.fig4 import FIG4
from configs.studies.scales import get_scale
from datadiet_jax import models
from datadiet_jax.dynamics import connectivity
from datadiet_jax.pipeline import artifacts, data
from datadiet_jax.training import files, keys, loop, train
from experiments import fig4, seedcount, sweeps, transfer
from tests.conftest import read_rows, restore_checkpoint, snapshot

SMOKE = get_scale("smoke")
N = 256


@pytest.fixture(scope="module")
def smoke(smoke_figures):
    runs, out = smoke_figures
    seconds = {}
    for module in (fig4, seedcount, transfer):
        start = time.time()
        module.reproduce("smoke", runs, out)
        seconds[module.__name__] = time.time() - start
    return dict(runs=runs, out=out, seconds=seconds)


def _score_mean(runs, name="el2n_epoch001.npz", run="scores_noise00"):
    return artifacts.load_scores(os.path.join(runs, "smoke", run, "scores", name))


def _hardest(scores, k):
    return sorted(np.argsort(-np.asarray(scores, np.float64), kind="stable")[:k].tolist())


def test_fig4_rows_and_barriers(smoke):
    rows = read_rows(os.path.join(smoke["out"], "fig4.csv"))
    # 3 spawning steps (epochs 0, 0.5, 1 of 8 steps) x 2 BatchNorm modes x 4 subsets x 5 alphas.
    assert len(rows) == 3 * 2 * 4 * 5
    assert {int(r["spawn_step"]) for r in rows} == {0, 4, 8}
    assert {r["subset"] for r in rows} == {"highest", "lowest", "random", "test"}
    groups = {}
    for r in rows:
        groups.setdefault((r["spawn_step"], r["bn"], r["subset"]), {})[float(r["alpha"])] = r
    for curve in groups.values():
        errors = {a: float(r["error"]) for a, r in curve.items()}
        expected = errors[0.5] - (errors[0.0] + errors[1.0]) / 2
        for r in curve.values():
            assert float(r["barrier"]) == pytest.approx(expected)
            assert float(r["max_barrier"]) == pytest.approx(
                max(errors.values()) - (errors[0.0] + errors[1.0]) / 2
            )
    for name in ("fig4.png", "fig4.pdf", "fig4_summary.md"):
        assert os.path.getsize(os.path.join(smoke["out"], name)) > 0
    summary = open(os.path.join(smoke["out"], "fig4_summary.md")).read()
    assert "Recomputed vs interpolated BatchNorm statistics" in summary


def test_fig4_subsets_follow_the_el2n_ranking(smoke):
    run = os.path.join(smoke["runs"], "smoke", fig4.ITEM)
    subsets = np.load(os.path.join(run, "subsets.npz"))
    mean = _score_mean(smoke["runs"])["mean"]
    assert subsets["highest"].tolist() == _hardest(mean, 40)
    assert subsets["lowest"].tolist() == _hardest(-mean, 40)
    assert len(set(subsets["random"].tolist())) == 40


def test_fig4_endpoint_errors_match_an_independent_evaluation(smoke):
    # The children of the last spawning step, restored from their checkpoint: with interpolated
    # statistics, alpha 0 and 1 are the children themselves, so their test errors are
    # 1 - train.evaluate's accuracy.
    config = fig4.spawning_config(SMOKE, smoke["runs"])
    split, test_split = data.load_splits(config.data)
    model = models.build(config.model, 10)
    total = connectivity.total_steps(config.train, N)
    ckpt = os.path.join(smoke["runs"], "smoke", fig4.ITEM, "children", "step000008", "ckpt")
    spec = loop.TrainSpec(
        train_cfg=config.train,
        num_seeds=2,
        seed=0,
        purpose=keys.Purpose.CHILD,
        num_steps=total,
        schedule_steps=total,
        ckpt_dir=ckpt,
        augment=False,
    )
    state = restore_checkpoint(model, split, spec, total)
    assert int(state.step[0]) == int(state.step[1]) == total
    acc, _ = train.evaluate(model, state, test_split, batch_size=100)
    rows = read_rows(os.path.join(smoke["out"], "fig4.csv"))
    test = {
        float(r["alpha"]): float(r["error"])
        for r in rows
        if r["spawn_step"] == "8" and r["bn"] == "interpolate" and r["subset"] == "test"
    }
    assert test[0.0] == pytest.approx(1 - acc[0], abs=1e-6)
    assert test[1.0] == pytest.approx(1 - acc[1], abs=1e-6)


def test_seedcount_prunes_with_the_first_k_seeds(smoke):
    runs = smoke["runs"]
    scores = _score_mean(runs)
    for k, expected in ((1, scores["per_seed"][0]), (2, scores["mean"])):
        run = os.path.join(runs, "smoke", f"seedcount_el2n1_k{k}_noise00")
        kept = np.load(os.path.join(run, "retrain", "el2n-1_hardest_f0.60", "kept.npz"))["index"]
        assert kept.tolist() == _hardest(expected, 102), k
    rows = read_rows(os.path.join(smoke["out"], "seedcount.csv"))
    assert {(r["method"], r["num_seeds"]) for r in rows} == {
        ("k seeds", "1"),
        ("k seeds", "2"),
        ("random", ""),
        ("full", ""),
    }
    assert len(rows) == 4 * 2
    spearman = read_rows(os.path.join(smoke["out"], "seedcount_spearman.csv"))
    got = {
        (r["score"], r["comparison"], r["num_seeds"], r["seed"]): float(r["spearman"])
        for r in spearman
    }
    assert got[("el2n@1", "first_k_vs_all", "2", "-1")] == pytest.approx(1.0)
    independent = stats.spearmanr(scores["per_seed"][0], scores["per_seed"].mean(0)).statistic
    assert got[("el2n@1", "seed_vs_all", "1", "0")] == pytest.approx(independent)
    rest = stats.spearmanr(scores["per_seed"][0], scores["per_seed"][1]).statistic
    assert got[("el2n@1", "seed_vs_rest", "1", "0")] == pytest.approx(rest)
    assert os.path.getsize(os.path.join(smoke["out"], "seedcount.png")) > 0


def test_transfer_prunes_the_target_with_the_source_scores(smoke):
    runs = smoke["runs"]
    source = os.path.join(runs, "smoke", "scores_small_cnn_w4_noise00")
    assert json.load(open(os.path.join(source, "config.json")))["model"]["width"] == 4
    moved = os.path.join(runs, "smoke", "transfer_el2n1_small_cnn_w4_to_small_cnn_w8_noise00")
    config = json.load(open(os.path.join(moved, "config.json")))
    assert config["model"]["width"] == 0 and config["model"]["smoke_width"] == 8  # the smoke CNN
    assert config["score"]["allow_transfer"] is True
    assert config["score"]["workdir"] == source
    kept = np.load(os.path.join(moved, "retrain", "el2n-1_hardest_f0.60", "kept.npz"))["index"]
    assert kept.tolist() == _hardest(
        _score_mean(runs, run="scores_small_cnn_w4_noise00")["mean"], 102
    )
    own = os.path.join(runs, "smoke", "transfer_el2n1_own_small_cnn_w8_noise00")
    kept = np.load(os.path.join(own, "retrain", "el2n-1_hardest_f0.60", "kept.npz"))["index"]
    assert kept.tolist() == _hardest(_score_mean(runs)["mean"], 102)
    rows = read_rows(os.path.join(smoke["out"], "transfer.csv"))
    assert {r["method"] for r in rows} == {
        "el2n@1 of small_cnn_w4",
        "el2n@1 of small_cnn_w8 (own)",
        "random",
        "full",
    }
    summary = open(os.path.join(smoke["out"], "transfer_summary.md")).read()
    independent = stats.spearmanr(
        _score_mean(runs, run="scores_small_cnn_w4_noise00")["mean"], _score_mean(runs)["mean"]
    ).statistic
    assert f"{independent:.4f}" in summary


def test_second_invocation_trains_nothing(smoke):
    runs, out = smoke["runs"], smoke["out"]
    before = snapshot(runs)
    csvs = {f: open(os.path.join(out, f)).read() for f in ("fig4.csv", "seedcount.csv")}
    start = time.time()
    fig4.reproduce("smoke", runs, out)
    seedcount.reproduce("smoke", runs, out)
    transfer.reproduce("smoke", runs, out)
    assert snapshot(runs) == before
    for name, text in csvs.items():
        assert open(os.path.join(out, name)).read() == text
    assert time.time() - start < 60
    print("smoke timings:", smoke["seconds"])


def test_bad_fig4_settings_are_refused_before_training(tmp_path, monkeypatch):
    bad = dataclasses.replace(FIG4["smoke"], spawn_epochs=(0, 2))
    monkeypatch.setitem(FIG4, "smoke", bad)
    with pytest.raises(ValueError, match="outside \\[0, 16\\)"):
        fig4.reproduce("smoke", str(tmp_path / "runs"), str(tmp_path / "out"))
    big = dataclasses.replace(bad, spawn_epochs=(0,), subset_size=300)
    monkeypatch.setitem(FIG4, "smoke", big)
    with pytest.raises(ValueError, match="do not fit in 256"):
        fig4.reproduce("smoke", str(tmp_path / "runs"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "runs")


def test_changed_scores_are_refused_by_a_measured_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    index = {"highest": np.arange(3), "lowest": np.arange(3, 6), "random": np.arange(6, 9)}
    files.save_npz(str(run / "subsets.npz"), **index)
    connectivity._save_or_check_subsets(str(run / "subsets.npz"), index)  # same: accepted
    index["highest"] = np.arange(1, 4)
    with pytest.raises(ValueError, match="the scores changed"):
        connectivity._save_or_check_subsets(str(run / "subsets.npz"), index)


def test_settings_of_every_scale_are_valid():
    for name in ("paper", "cpu", "smoke"):
        scale = get_scale(name)
        fig4.check(scale, "runs")
        sweeps.check_sweep(scale, seedcount.sweep(scale), "runs")
        items = transfer.sweep(scale, "runs")
        sweeps.check_sweep(scale, items, "runs")
        names = [it["name"] for it in items]
        assert len(set(names)) == len(names)
    paper = get_scale("paper")
    assert seedcount.counts(paper) == (1, 2, 4, 8, 10)
    moved = [it for it in transfer.sweep(paper, "runs") if "_to_" in it["name"]][0]
    config = sweeps.make_config(paper, moved, "runs")
    assert config.model.name == "resnet50" and config.score.allow_transfer
    assert config.score.workdir == os.path.join("runs", "paper", "scores_noise00")
    own = [it for it in transfer.sweep(paper, "runs") if "_own_" in it["name"]][0]
    own_config = sweeps.make_config(paper, own, "runs")
    assert own_config.score.workdir == os.path.join("runs", "paper", "scores_resnet50_noise00")
    assert not own_config.score.allow_transfer
    cpu = fig4.spawning_config(get_scale("cpu"), "runs")
    assert cpu.train.num_epochs == 4 and cpu.data.num_train_examples == 10_000


def test_a_parent_past_the_spawning_step_is_refused(smoke):
    # The parent stopped last at step 8; asking for step 4 again must fail, not return step 8.
    config = fig4.spawning_config(SMOKE, smoke["runs"])
    split, _ = data.load_splits(config.data)
    model = models.build(config.model, 10)
    workdir = os.path.join(smoke["runs"], "smoke", fig4.ITEM)
    state = connectivity.train_parent(config.train, config.seed, workdir, model, split, 8, False)
    assert int(state.step[0]) == 8
    with pytest.raises(ValueError, match="past the spawning step 4"):
        connectivity.train_parent(config.train, config.seed, workdir, model, split, 4, False)
