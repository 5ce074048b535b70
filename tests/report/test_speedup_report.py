"""The speedup summary's arithmetic on a hand-built table, and its figure."""

import os

import pytest

from datadiet_jax.report import speedup, speedup_summary


def _rows(arm, kind, steps, seconds, accuracy, examples=None, status=None):
    """Rows of one arm: `accuracy[seed][epoch]`; steps and seconds per epoch (cumulative)."""
    rows = []
    for seed, curve in enumerate(accuracy):
        for e, acc in enumerate(curve):
            rows.append(
                {
                    "arm": arm,
                    "kind": kind,
                    "seed": str(seed),
                    "epoch": str(float(e + 1)),
                    "steps": str(steps[e]),
                    "seconds": str(seconds[e]),
                    "examples": str((examples or steps)[e] * 10),
                    "test_accuracy": str(acc),
                    "status": (status or ["ok"] * len(accuracy))[seed],
                }
            )
    return rows


def _table():
    full = _rows(
        "full", "full", [10, 20, 30], [10.0, 20.0, 40.0], [[0.5, 0.8, 0.9], [0.6, 0.8, 0.9]]
    )
    # Reaches 0.9 (the full data's final mean) at its second epoch: 12 of 30 steps, 16 of 40 s.
    fast = _rows("fast", "rs2", [6, 12, 18], [8.0, 16.0, 24.0], [[0.7, 0.9, 0.92], [0.7, 0.9, 0.9]])
    # Never reaches it: ends at 0.85 (mean of 0.84 and 0.86).
    low = _rows("low", "seta", [5, 10, 15], [5.0, 10.0, 20.0], [[0.6, 0.8, 0.84], [0.6, 0.8, 0.86]])
    # A diverged seed left out: the mean is seed 0's alone.
    lossy = _rows(
        "lossy",
        "infobatch",
        [10, 20, 25],
        [12.0, 30.0, 50.0],
        [[0.5, 0.7, 0.88], [0.1, 0.1, 0.1]],
        status=["ok", "diverged"],
    )
    return full + fast + low + lossy


def test_savings_accuracy_lost_and_reaching_full_accuracy():
    out = {r["arm"]: r for r in speedup_summary.summary_rows(_table())}
    assert out["full"]["steps_saved"] == 0.0 and out["full"]["accuracy_lost"] == pytest.approx(0)
    assert out["full"]["reaches_full"] == 3.0
    fast = out["fast"]
    assert fast["steps_saved"] == pytest.approx(1 - 18 / 30)
    assert fast["wall_saved"] == pytest.approx(1 - 24 / 40)
    assert fast["accuracy"] == pytest.approx(0.91)
    assert (fast["accuracy_min"], fast["accuracy_max"]) == (0.9, 0.92)
    assert fast["accuracy_lost"] == pytest.approx(-0.01)
    assert fast["reaches_full"] == 2.0
    assert fast["steps_saved_at_full"] == pytest.approx(1 - 12 / 30)
    assert fast["wall_saved_at_full"] == pytest.approx(1 - 16 / 40)
    low = out["low"]
    assert low["accuracy_lost"] == pytest.approx(0.05)
    assert low["reaches_full"] is None and low["wall_saved_at_full"] is None
    assert low["reaches_range"] is None  # 0.85 < 0.9, the full data's lowest seed
    lossy = out["lossy"]
    assert lossy["seeds"] == 1 and lossy["left_out"] == 1
    assert lossy["accuracy"] == pytest.approx(0.88)
    assert lossy["wall_saved"] == pytest.approx(1 - 50 / 40)  # slower than the full data
    assert lossy["examples"] == 250.0


def test_full_seed_range_is_reached_below_the_full_mean():
    # Full seeds end at 0.88 and 0.92 (mean 0.90); the arm ends at 0.89: within the range.
    full = _rows("full", "full", [10, 20], [10.0, 20.0], [[0.7, 0.88], [0.7, 0.92]])
    near = _rows("near", "rs2", [5, 10], [4.0, 8.0], [[0.88, 0.89], [0.88, 0.89]])
    (_, r) = speedup_summary.summary_rows(full + near)
    assert r["reaches_full"] is None
    assert r["reaches_range"] == 1.0
    assert r["steps_saved_at_range"] == pytest.approx(1 - 5 / 20)
    assert r["wall_saved_at_range"] == pytest.approx(1 - 4 / 20)


def test_tolerance_lets_a_near_arm_reach():
    out = {r["arm"]: r for r in speedup_summary.summary_rows(_table(), tolerance=0.051)}
    assert out["low"]["reaches_full"] == 3.0
    assert out["low"]["steps_saved_at_full"] == pytest.approx(0.5)


def test_reach_epoch_is_the_first_epoch_of_the_seed_mean():
    import numpy as np

    acc = np.array([[0.5, 0.95, 0.8], [0.5, 0.8, 0.99]])  # means 0.5, 0.875, 0.895
    assert speedup_summary.reach_epoch(acc, 0.875) == 1
    assert speedup_summary.reach_epoch(acc, 0.89) == 2
    assert speedup_summary.reach_epoch(acc, 0.9) is None


def test_summary_needs_the_full_data():
    rows = [r for r in _table() if r["arm"] != "full"]
    with pytest.raises(ValueError, match="'full' arm"):
        speedup_summary.summary_rows(rows)


def test_written_summary_and_figure(tmp_path):
    table = speedup_summary.summary_rows(_table())
    path = speedup_summary.write_summary(str(tmp_path / "s.md"), "Speedup", table)
    text = open(path).read()
    cost = "| fast | 18 | 40.0% | 24.0 | 40.0% | 0.9100 (0.9000-0.9200) | -1.00 pt |"
    assert f"{cost} epoch 2: 60.0% / 60.0% | epoch 2: 60.0% / 60.0% |" in text
    assert "| low |" in text and "does not" in text
    assert "1 collapsed or diverged seeds left out" in text
    paths = speedup.plot_speedup(_table(), str(tmp_path / "speedup"))
    assert [os.path.basename(p) for p in paths] == ["speedup.png", "speedup.pdf"]
    assert all(os.path.getsize(p) > 1000 for p in paths)


def test_written_summary_opens_with_the_protocol(tmp_path):
    protocol = ("Protocol", [{"setting": "batch size", "value": "128"}])
    table = speedup_summary.summary_rows(_table())
    path = speedup_summary.write_summary(str(tmp_path / "s.md"), "Speedup", table, protocol)
    text = open(path).read()
    assert "## Protocol" in text and "| batch size | 128 |" in text
    assert text.index("| batch size | 128 |") < text.index("## Time to accuracy")
    assert text.index("## Time to accuracy") < text.index("| fast | 18 |")
