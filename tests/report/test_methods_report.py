"""The cross-method report: verdicts against random, scoring costs and recorded times, by hand."""

import json
import math
import os

import numpy as np
import pytest

from datadiet_jax.report import methods, summary


def _row(method, fraction, mean, p16, p84, runs=2):
    return dict(method=method, prune_fraction=fraction, mean=mean, p16=p16, p84=p84, runs=runs)


def test_verdicts_compare_bands_with_random_at_the_same_fraction():
    table = [
        _row("random", 0.3, 0.80, 0.79, 0.81),
        _row("random", 0.7, 0.70, 0.69, 0.71),
        _row("a", 0.3, 0.83, 0.82, 0.84),  # band above random's
        _row("a", 0.7, 0.60, 0.58, 0.62),  # band below
        _row("b", 0.3, 0.805, 0.80, 0.81),  # overlapping
        _row("b", 0.7, 0.75, 0.75, 0.75, runs=1),
        _row("full", 0.0, 0.9, 0.9, 0.9),
        _row("c", 0.3, None, None, None, runs=0),  # no healthy run
    ]
    out = {(r["method"], r["prune_fraction"]): r for r in methods.against_random(table)}
    assert out[("a", 0.3)]["verdict"] == "better"
    assert out[("a", 0.3)]["vs_random"] == pytest.approx(0.03)
    assert out[("a", 0.7)]["verdict"] == "worse"
    assert out[("a", 0.7)]["vs_random"] == pytest.approx(-0.10)
    assert out[("b", 0.3)]["verdict"] == "within spread"
    assert out[("b", 0.7)]["verdict"] == "one run"
    assert out[("full", 0.0)]["verdict"] == "" and out[("full", 0.0)]["vs_random"] is None
    assert out[("random", 0.3)]["verdict"] == ""
    assert out[("c", 0.3)]["vs_random"] is None


def _seed_rows():
    """Hand-made retraining rows: 3 healthy seeds and a collapsed one for 'a', one for random."""
    rows = [
        dict(method="a", prune_fraction=0.3, test_accuracy=v, status="ok")
        for v in (0.81, 0.83, 0.86)
    ]
    rows.append(dict(method="a", prune_fraction=0.3, test_accuracy=0.1, status="collapsed"))
    rows.append(dict(method="random", prune_fraction=0.3, test_accuracy=0.80, status="ok"))
    return rows


def test_std_and_n_of_the_healthy_seeds():
    table = {
        r["method"]: r for r in summary.summary_table(_seed_rows(), ("method", "prune_fraction"))
    }
    a = table["a"]
    # Sample std by hand: mean 0.8333..., squared deviations summed over n - 1 = 2.
    mean = (0.81 + 0.83 + 0.86) / 3
    by_hand = math.sqrt(sum((v - mean) ** 2 for v in (0.81, 0.83, 0.86)) / 2)
    assert a["std"] == pytest.approx(by_hand) == pytest.approx(0.025166, abs=1e-6)
    assert a["std"] == pytest.approx(np.std(np.array([0.81, 0.83, 0.86]), ddof=1))
    assert a["runs"] == 3 and a["left_out"] == 1 and a["mean"] == pytest.approx(mean)
    assert table["random"]["std"] is None and table["random"]["runs"] == 1
    assert summary.mean_std_n(a) == f"{mean:.4f} ± {by_hand:.4f} (n=3)" == "0.8333 ± 0.0252 (n=3)"
    assert summary.mean_std_n(table["random"]) == "0.8000 (n=1)"
    assert summary.mean_std_n(dict(mean=None, std=None, runs=0)) == "-"


def test_summary_shows_mean_std_n_beside_the_verdict_after_the_protocol(tmp_path):
    table = summary.summary_table(_seed_rows(), ("method", "prune_fraction"))
    shown = methods.display_rows(methods.against_random(table))
    a = next(r for r in shown if r["method"] == "a")
    assert a[methods.MEAN_STD_N] == "0.8333 ± 0.0252 (n=3)" and a["verdict"] == "one run"
    assert "std" not in a and "runs" not in a and {"p16", "p84", "left_out"} <= set(a)
    columns = list(a)
    assert columns.index(methods.MEAN_STD_N) < columns.index("verdict")
    protocol = ("Protocol", [{"setting": "batch size", "value": "128"}])
    compared = methods.against_random(table)
    path = methods.write_summary(str(tmp_path / "m.md"), "Methods", compared, [], protocol)
    text = open(path).read()
    assert text.index("## Protocol") < text.index("## Test accuracy")
    assert "| 0.8333 ± 0.0252 (n=3) |" in text


def _score_run(tmp_path, epochs, timings):
    train = tmp_path / "scores" / "train"
    train.mkdir(parents=True)
    with open(train / "metrics.jsonl", "w") as f:
        for i, seconds in enumerate(epochs):
            f.write(json.dumps({"step": i + 1, "loss": [1.0] * 4, "seconds": seconds}) + "\n")
    with open(tmp_path / "scores" / "timings.jsonl", "w") as f:
        for t in timings:
            f.write(json.dumps(t) + "\n")
    return str(tmp_path)


def test_costs_from_recorded_times(tmp_path):
    # 4 seeds; the first epoch compiles (30 s) and is left out: median of 8, 10, 12 = 10 s.
    timings = [
        {"score": "el2n", "epoch": 1, "seconds": 9.0},
        {"score": "el2n", "epoch": 1, "seconds": 2.0},  # recomputed later: the last line counts
        {"score": "grand", "epoch": 0, "seconds": 6.0},
    ]
    run = _score_run(tmp_path, [30.0, 8.0, 12.0, 10.0], timings)
    timing = methods.training_seconds(run)
    assert timing == {"epoch_seconds": 10.0, "num_seeds": 4, "seed_epoch_seconds": 2.5}
    assert methods.score_seconds(run) == {"el2n@1": 2.0, "grand@0": 6.0}
    # One full training of one seed: 6 epochs x 2.5 s = 15 s.
    row = methods.cost_row("el2n", train_epochs=1, compute_seconds=2.0, num_epochs=6, timing=timing)
    assert row["full_training_seconds"] == 15.0
    assert row["cost_k_seeds"] == pytest.approx((4 * 1 * 2.5 + 2.0) / 15.0)
    assert row["cost_one_seed"] == pytest.approx((1 * 2.5 + 2.0 / 4) / 15.0)
    free = methods.cost_row(
        "random", train_epochs=0, compute_seconds=0.0, num_epochs=6, timing=timing
    )
    assert free["cost_k_seeds"] == free["cost_one_seed"] == 0.0


def test_a_score_run_without_epoch_times_is_refused(tmp_path):
    os.makedirs(tmp_path / "scores" / "train")
    (tmp_path / "scores" / "train" / "metrics.jsonl").write_text('{"step": 1, "loss": [1.0]}\n')
    with pytest.raises(ValueError, match="records no epoch times"):
        methods.training_seconds(str(tmp_path))
