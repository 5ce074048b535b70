"""The cross-method report: verdicts against random, scoring costs and recorded times, by hand."""

import json
import os

import pytest

from datadiet_jax.report import methods


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
