"""The figure scripts at smoke scale: sweeps, CSV files, figures, reports, reuse and bad input.

Figure 2 then Figure 1 run once into a temporary folder (module fixture, about two minutes on a
CPU); the tests read what they wrote.
"""

import dataclasses
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from configs.studies.scales import get_scale
from datadiet_jax.pipeline import artifacts
from datadiet_jax.report import summary
from experiments import fig1, fig2, sweeps
from tests.conftest import read_rows, snapshot
from tests.references import ROOT

SMOKE = get_scale("smoke")
N = 256


@pytest.fixture(scope="module")
def smoke(smoke_figures):
    runs, out = smoke_figures
    start = time.time()
    written2 = fig2.reproduce("smoke", runs, out)
    seconds2 = time.time() - start
    score_dirs = sorted(glob.glob(os.path.join(runs, "smoke", "*", "scores", "train")))
    after_fig2 = snapshot(runs)
    start = time.time()
    written1 = fig1.reproduce("smoke", runs, out)
    seconds1 = time.time() - start
    return dict(
        runs=runs,
        out=out,
        fig2=written2,
        fig1=written1,
        seconds=(seconds2, seconds1),
        score_dirs_after_fig2=score_dirs,
        after_fig2=after_fig2,
    )


def test_fig2_csv_rows_and_columns(smoke):
    rows = read_rows(os.path.join(smoke["out"], "fig2.csv"))
    for column in (
        "offset",
        "noise_fraction",
        "strategy",
        "seed",
        "status",
        "test_accuracy",
        "num_kept",
    ):
        assert column in rows[0]
    assert {r["scale"] for r in rows} == {"smoke"}
    # Per noise level: full, random and 3 offsets, 2 seeds each.
    assert len(rows) == 2 * (1 + 1 + 3) * 2
    assert {float(r["noise_fraction"]) for r in rows} == {0.0, 0.1}
    offsets = {int(r["offset"]) for r in rows if r["strategy"] == "offset"}
    assert offsets == {0, 25, 153}  # floor(f * 256) for f in (0, 0.1, 0.6)
    assert {r["seed"] for r in rows} == {"0", "1"}
    kept = {(r["strategy"], int(r["num_kept"])) for r in rows}
    assert kept == {("full", N), ("random", 102), ("offset", 102)}  # round(0.4 * 256) = 102
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    fig2_s, fig1_s = smoke["seconds"]
    print(f"smoke timings: fig2 {fig2_s:.1f} s, fig1 {fig1_s:.1f} s")


def test_fig2_windows_follow_the_el2n_order(smoke):
    run_dir = os.path.join(smoke["runs"], "smoke", "offset_el2n1_noise10")
    mean = np.load(
        os.path.join(smoke["runs"], "smoke", "scores_noise10", "scores", "el2n_epoch001.npz")
    )["mean"]
    order = sorted(range(N), key=lambda i: (-mean[i], i))  # hardest first, ties by index
    for offset in (0, 25, 153):
        kept = np.load(
            os.path.join(run_dir, "retrain", f"el2n-1_offset_f0.60_o{offset}", "kept.npz")
        )
        np.testing.assert_array_equal(kept["index"], sorted(order[offset : offset + 102]))


def test_fig2_figures_summary_and_reports(smoke):
    out = smoke["out"]
    for name in ("fig2.png", "fig2.pdf", "fig2_summary.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    summary = open(os.path.join(out, "fig2_summary.md")).read()
    assert "label noise 10%" in summary and "best offset" in summary
    rep = os.path.join(out, "reports")
    for tag in ("noise00", "noise10"):
        for name in (
            f"score_histograms_{tag}.png",
            f"spearman_{tag}.png",
            f"extremes_el2n1_{tag}.png",
        ):
            assert os.path.getsize(os.path.join(rep, f"fig2_{name}")) > 0
        spearman = json.load(open(os.path.join(rep, f"fig2_spearman_{tag}.json")))
        names = spearman["names"]
        assert names[:2] == ["el2n@1 s0", "el2n@1 s1"] and names[-1] == "input norm"
        assert np.allclose(np.diag(np.array(spearman["matrix"], dtype=float)), 1.0)
    assert not os.path.exists(os.path.join(rep, "fig2_noise_detection_noise00.json"))
    detection = json.load(open(os.path.join(rep, "fig2_noise_detection_noise10.json")))
    noise = np.load(os.path.join(smoke["runs"], "smoke", "scores_noise10", "label_noise.npz"))
    assert detection["num_chosen"] == len(noise["noisy_index"]) == round(0.1 * N)
    mean = artifacts.load_scores(
        os.path.join(smoke["runs"], "smoke", "scores_noise10", "scores", "el2n_epoch001.npz")
    )["mean"]
    noisy = np.zeros(N, bool)
    noisy[noise["noisy_index"]] = True
    # AUC by its definition: the share of (noisy, clean) pairs ordered correctly, ties one half.
    diff = mean[noisy][:, None] - mean[~noisy][None, :]
    auc = (diff > 0).mean() + 0.5 * (diff == 0).mean()
    assert detection["scores"]["el2n@1"]["chosen"]["auc"] == pytest.approx(auc)
    # AUM is reported too, against the labels that changed, from its negated-AUM score file.
    aum = artifacts.load_scores(
        os.path.join(smoke["runs"], "smoke", "scores_noise10", "scores", "aum_epoch002.npz")
    )["mean"]
    flipped = noise["labels"] != noise["clean_labels"]
    diff = aum[flipped][:, None] - aum[~flipped][None, :]
    auc = (diff > 0).mean() + 0.5 * (diff == 0).mean()
    assert detection["scores"]["aum"]["flipped"]["auc"] == pytest.approx(auc)
    counts = json.load(open(os.path.join(rep, "fig2_class_counts.json")))
    entry = counts["offset_el2n1_noise00"]["el2n-1_offset_f0.60_o25"]
    kept = np.load(
        os.path.join(
            smoke["runs"],
            "smoke",
            "offset_el2n1_noise00",
            "retrain",
            "el2n-1_offset_f0.60_o25",
            "kept.npz",
        )
    )["index"]
    labels = np.load(os.path.join(smoke["runs"], "smoke", "scores_noise00", "label_noise.npz"))[
        "labels"
    ]
    assert entry["counts"] == [int((labels[kept] == c).sum()) for c in range(10)]
    assert sum(entry["counts"]) == entry["num_kept"] == 102


def test_fig1_reused_the_clean_score_run(smoke):
    runs = smoke["runs"]
    score_dirs = sorted(glob.glob(os.path.join(runs, "smoke", "*", "scores", "train")))
    assert score_dirs == smoke["score_dirs_after_fig2"]  # Figure 1 trained no score run
    # Both noise levels' score runs (the figure runs of other test modules may add their own).
    assert {"scores_noise00", "scores_noise10"} <= {d.split(os.sep)[-3] for d in score_dirs}
    before, after = smoke["after_fig2"], snapshot(runs)
    for path, stamp in before.items():  # nothing fig2 wrote was rewritten, scores included
        assert after[path] == stamp, path
    clean = os.path.join(runs, "smoke", "scores_noise00")
    for item in ("fig1_random_noise00", "fig1_pruning_noise00", "fig1_epochs_noise00"):
        config = json.load(open(os.path.join(runs, "smoke", item, "config.json")))
        assert config["score"]["workdir"] == clean
        assert not os.path.exists(os.path.join(runs, "smoke", item, "scores"))
        results = artifacts.read_results(os.path.join(runs, "smoke", item))
        assert all(p.startswith(clean + os.sep) for p in results["scores"].values())


def test_fig1_csv_rows_and_figures(smoke):
    out = smoke["out"]
    rows = read_rows(os.path.join(out, "fig1.csv"))
    pruning = [r for r in rows if r["panel"] == "pruning"]
    epochs = [r for r in rows if r["panel"] == "epochs"]
    methods = {"el2n@1", "grand@0", "grand@1", "forgetting"}
    assert {r["method"] for r in pruning} == methods | {"random", "full"}
    assert len(pruning) == (4 * 2 + 2 + 1) * 2  # methods x fractions, random x 2, full; 2 seeds
    assert {(r["score"], r["score_epoch"]) for r in epochs} == {
        ("el2n", "0"),
        ("el2n", "1"),
        ("grand", "0"),
        ("grand", "1"),
        ("full", ""),
    }
    assert len(epochs) == 5 * 2
    assert {float(r["prune_fraction"]) for r in epochs if r["score"] != "full"} == {0.6}
    # The hardest 40% by EL2N is Figure 2's window at offset 0: same subset, same seeds.
    hardest = sorted(
        float(r["test_accuracy"])
        for r in pruning
        if r["method"] == "el2n@1" and r["prune_fraction"] == "0.6"
    )
    fig2_rows = read_rows(os.path.join(out, "fig2.csv"))
    window = sorted(
        float(r["test_accuracy"])
        for r in fig2_rows
        if r["strategy"] == "offset" and r["offset"] == "0" and r["noise_fraction"] == "0.0"
    )
    assert hardest == pytest.approx(window, abs=1e-6)
    for name in (
        "fig1_pruning.png",
        "fig1_pruning.pdf",
        "fig1_epochs.png",
        "fig1_epochs.pdf",
        "fig1_summary.md",
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0
    for name in (
        "class_counts.json",
        "class_counts.csv",
        "spearman_noise00.json",
        "extremes_grand0_noise00.png",
    ):
        assert os.path.getsize(os.path.join(out, "reports", f"fig1_{name}")) > 0


def test_second_invocation_does_no_retraining(smoke):
    runs, out = smoke["runs"], smoke["out"]
    csv_before = {f: open(os.path.join(out, f)).read() for f in ("fig1.csv", "fig2.csv")}
    before = snapshot(runs)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [
        sys.executable,
        "-m",
        "experiments.fig2",
        "--scale=smoke",
        f"--runs={runs}",
        f"--out={out}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Retraining" not in proc.stderr and "score training" not in proc.stderr
    fig1.reproduce("smoke", runs, out)
    assert snapshot(runs) == before
    for name, text in csv_before.items():
        assert open(os.path.join(out, name)).read() == text


def test_score_run_of_another_noise_level_is_refused_before_training(smoke):
    runs = smoke["runs"]
    items = [it for it in fig2.sweep(SMOKE) if it["name"] == "offset_el2n1_noise10"]
    clean = sweeps.workdir(runs, SMOKE, sweeps.score_item(0.0))
    bad = dict(
        items[0], name="bad_noise10", overrides=items[0]["overrides"] | {"score.workdir": clean}
    )
    with pytest.raises(ValueError, match="label_noise"):
        sweeps.run_sweep(SMOKE, [bad], runs)
    assert not os.path.exists(sweeps.workdir(runs, SMOKE, bad))


def test_score_run_of_another_size_is_refused_before_training(smoke):
    runs = smoke["runs"]
    it = sweeps.training_item("bad_size", 0.0, scores=("el2n@1",), fractions=(0.5,))
    it["overrides"]["data.num_train_examples"] = 200
    with pytest.raises(ValueError, match="num_examples"):
        sweeps.run_sweep(SMOKE, [it], runs)
    assert not os.path.exists(sweeps.workdir(runs, SMOKE, it))


def test_out_of_range_window_is_refused_before_anything_runs(tmp_path):
    bad = dataclasses.replace(SMOKE, fig2_offset_fractions=(0.0, 0.7))
    with pytest.raises(ValueError, match="exceeds the 256 examples"):
        fig2.reproduce(bad, str(tmp_path / "runs"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "runs") and not os.path.exists(tmp_path / "out")
    empty = dataclasses.replace(SMOKE, fig2_keep_fraction=0.0)
    with pytest.raises(ValueError, match="outside \\[0, 1\\)"):
        fig2.reproduce(empty, str(tmp_path / "runs"), str(tmp_path / "out"))
    bad1 = dataclasses.replace(SMOKE, fig1_prune_fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="outside \\[0, 1\\)"):
        fig1.reproduce(bad1, str(tmp_path / "runs"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "runs")


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="Unknown scale 'gpu'"):
        get_scale("gpu")


def test_offsets_and_sweeps_of_every_scale():
    assert sweeps.offsets_for((0, 0.1, 0.6, 0.6), 256) == (0, 25, 153)
    assert sweeps.offsets_for((0.01, 0.6), 10_000) == (100, 6000)
    for name in ("paper", "cpu", "smoke"):
        scale = get_scale(name)
        for module in (fig1, fig2):
            items = module.sweep(scale)
            names = [it["name"] for it in items]
            assert len(set(names)) == len(names)
            assert [it for it in items if it["kind"] == "score"][0]["name"] == "scores_noise00"
        # Both figures ask for the same clean score run and baselines.
        shared = {it["name"]: it for it in fig1.sweep(scale)}
        for it in fig2.sweep(scale):
            if it["name"] in shared:
                assert shared[it["name"]] == it
    paper = get_scale("paper")
    offset_item = [it for it in fig2.sweep(paper) if it["name"] == "offset_el2n10_noise10"][0]
    assert offset_item["overrides"]["prune.offsets"][-1] == 30_000  # 60% of CIFAR-10's 50,000
    config = sweeps.make_config(paper, offset_item, "runs")
    assert config.score.num_seeds == 10 and config.data.label_noise.mode == "permute"
    assert config.score.workdir == os.path.join("runs", "paper", "scores_noise10")


def test_summary_table_by_hand():
    rows = [
        {"a": 1, "test_accuracy": 0.5},
        {"a": 1, "test_accuracy": 0.7},
        {"a": 2, "test_accuracy": 0.9},
    ]
    table = summary.summary_table(rows, ("a",))
    assert [t["a"] for t in table] == [1, 2] and [t["runs"] for t in table] == [2, 1]
    assert table[0]["mean"] == pytest.approx(0.6)
    assert table[0]["p16"] == pytest.approx(0.5 + 0.16 * 0.2)  # linear interpolation
    assert table[0]["p84"] == pytest.approx(0.5 + 0.84 * 0.2)
    assert table[1]["mean"] == table[1]["p16"] == table[1]["p84"] == pytest.approx(0.9)
