"""`benchmarks/bench_prune.py`: every case at a tiny size, in this process.

The record has the fields the tables and the docs read; InfoBatch at ratio 0 takes exactly the
steps of the full-data run; RS2's rounds and InfoBatch's pruned rounds are as many steps as
their kept counts need at the batch size, fewer than a full-data epoch.
"""

import math

import numpy as np

from benchmarks import bench_prune, synthetic
from tests.conftest import tiny_model


def test_measure_times_every_case_with_the_steps_its_schedule_keeps():
    split, cfg, _ = synthetic.setup(160, batch_size=16)  # 10 steps per full-data epoch
    res = bench_prune.measure(tiny_model(split), split, cfg, num_epochs=3, repeats=1)
    assert set(res) == set(bench_prune.CASES)
    full, zero, info, rs2 = (res[k] for k in ("full", "infobatch_r0", "infobatch_r0.5", "rs2_f0.5"))
    assert full["steps"] == zero["steps"] == 30 and full["overhead_pct"] == 0
    assert [e["steps"] for e in zero["epochs"]] == [10, 10, 10]
    assert [e["examples"] for e in zero["epochs"]] == [160, 160, 160]
    # RS2 at fraction 0.5: 80 examples, 5 steps, every round.
    assert [(e["steps"], e["examples"]) for e in rs2["epochs"]] == [(5, 80)] * 3
    assert rs2["steps"] == 15 and rs2["steps_ratio"] == 0.5 and rs2["round_examples"] == 80
    # InfoBatch at 0.5: the first round keeps every example (equal initial losses), later
    # rounds drop half of the well-learned ones, so they need fewer steps.
    first, *later = info["epochs"]
    assert (first["steps"], first["examples"]) == (10, 160)
    for e in later:
        assert e["examples"] < 160 and e["steps"] == math.ceil(e["examples"] / 16) < 10
    assert info["steps"] == sum(e["steps"] for e in info["epochs"]) < 30
    for r in res.values():
        assert r["round_s"] > 0 and r["wall_s"] > 0 and r["s_per_step"] > 0
        assert np.isclose(r["examples_per_s"], r["round_examples"] / r["round_s"])
        assert np.isclose(r["time_ratio"], r["round_s"] / full["round_s"])
    settings = {"model": "tiny", "batch_size": 16, "num_examples": 160, "num_epochs": 3}
    machine = {**bench_prune.machine(), "load_after": 0.0}
    text = bench_prune.table(
        {"machine": machine, "settings": {**settings, "repeats": 1}, "results": res}
    )
    assert "| rs2_f0.5 | 5.0 | 80 |" in text and "| infobatch_r0 | 30 |" in text
    assert "K = 1, batch 16, N = 160" in text
