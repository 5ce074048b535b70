"""The speedup study at smoke scale: its CSV against the runs' own metrics.jsonl and result.json
files, the steps each schedule's rounds take, the static arms' score-run cost, and a rerun
that trains nothing."""

import json
import math
import os

import numpy as np
import pytest

from configs.studies import speedup as study
from datadiet_jax.scores import pruning
from experiments import speedup, sweeps
from tests.conftest import figure_dirs, read_rows, snapshot

SETTINGS = study.SPEEDUP_SCALES["smoke"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    runs, out = figure_dirs(tmp_path_factory, "speedup")
    outputs = speedup.reproduce("smoke", runs, out)
    scale = speedup.speedup_scale("smoke")
    config = scale.base_config()
    rows = read_rows(os.path.join(out, "speedup.csv"))
    return dict(runs=runs, out=out, outputs=outputs, scale=scale, config=config, rows=rows)


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _run_dir(smoke, arm):
    item = sweeps.workdir(smoke["runs"], smoke["scale"], {"name": f"speedup_{arm.name}_noise00"})
    (name,) = [d for d in os.listdir(os.path.join(item, "retrain")) if not d.startswith("_")]
    return item, os.path.join(item, "retrain", name)


def _arm_rows(smoke, arm):
    return [r for r in smoke["rows"] if r["arm"] == arm.name]


def _last(rows, seed):
    return max((r for r in rows if int(r["seed"]) == seed), key=lambda r: float(r["epoch"]))


def _score_dir(smoke):
    return sweeps.workdir(smoke["runs"], smoke["scale"], {"name": speedup.SCORE_ITEM})


def test_rows_are_the_runs_own_records(smoke):
    num_epochs, seeds = smoke["config"].train.num_epochs, SETTINGS.num_seeds
    assert {r["arm"] for r in smoke["rows"]} == {a.name for a in SETTINGS.arms}
    for arm in SETTINGS.arms:
        _, run_dir = _run_dir(smoke, arm)
        lines = _jsonl(os.path.join(run_dir, "metrics.jsonl"))
        result = json.load(open(os.path.join(run_dir, "result.json")))
        rows = _arm_rows(smoke, arm)
        assert len(rows) == seeds * num_epochs and len(lines) == num_epochs, arm.name
        for r in rows:
            line = lines[int(float(r["epoch"])) - 1]
            seed, extra = int(r["seed"]), int(r["score_steps"])
            assert r["status"] == "ok"
            assert float(r["test_accuracy"]) == pytest.approx(line["test_accuracy"][seed])
            assert int(r["steps"]) == line["step"] + extra
            assert int(r["examples"]) == line["examples"][seed] + int(r["score_examples"])
        for seed in range(seeds):
            last = _last(rows, seed)
            assert int(last["steps"]) - int(last["score_steps"]) == result["steps"]
            # The curve's last point is the run's own final evaluation.
            assert float(last["test_accuracy"]) == pytest.approx(
                result["test_accuracy"][seed], abs=1e-6
            )


def _expected_steps(arm, n, batch, epochs):
    """The steps of an arm's rounds where they follow from N alone (None where they depend on
    the losses: InfoBatch and SeTa)."""
    full = math.ceil(n / batch)
    if arm.kind == study.FULL:
        return epochs * full
    if arm.kind == "rs2":  # rounds of round(f * N), the last of a pass what is left
        size, left, steps = round(arm.level * n), 0, 0
        for _ in range(epochs):
            left = left or n
            steps += math.ceil(min(size, left) / batch)
            left -= min(size, left)
        return steps
    if arm.kind == study.STATIC:
        return epochs * math.ceil(pruning.num_to_keep(n, arm.level) / batch)
    if arm.kind == "prune_continue":
        at = arm.settings["at_epoch"]
        return at * full + (epochs - at) * math.ceil(pruning.num_to_keep(n, arm.level) / batch)
    return None


def test_steps_are_the_schedules_rounds(smoke):
    config = smoke["config"]
    n, batch, epochs = config.data.num_train_examples, config.train.batch_size, 2
    assert config.train.num_epochs == epochs
    full = epochs * math.ceil(n / batch)
    for arm in SETTINGS.arms:
        rows = _arm_rows(smoke, arm)
        own = int(_last(rows, 0)["steps"]) - int(_last(rows, 0)["score_steps"])
        want = _expected_steps(arm, n, batch, epochs)
        if want is not None:
            assert own == want, arm.name
        else:  # InfoBatch keeps every example in round 0 (equal initial losses), then prunes
            first = min(int(r["steps"]) for r in rows)
            if arm.kind == "infobatch":
                assert first == math.ceil(n / batch)
            assert own < full, arm.name


def test_static_arm_pays_for_its_score_run(smoke):
    config, score_dir = smoke["config"], _score_dir(smoke)
    train_lines = _jsonl(os.path.join(score_dir, "scores", "train", "metrics.jsonl"))
    timings = _jsonl(os.path.join(score_dir, "scores", "timings.jsonl"))
    n, batch = config.data.num_train_examples, config.train.batch_size
    (static,) = [a for a in SETTINGS.arms if a.kind == study.STATIC]
    item, run_dir = _run_dir(smoke, static)
    selected = json.load(open(os.path.join(item, "selection_seconds.json")))
    want = sum(r["seconds"] for r in train_lines) + sum(t["seconds"] for t in timings)
    want += sum(selected.values())
    first = _jsonl(os.path.join(run_dir, "metrics.jsonl"))[0]
    for r in _arm_rows(smoke, static):
        assert float(r["score_seconds"]) == pytest.approx(want, abs=2e-3)
        assert int(r["score_steps"]) == SETTINGS.score_epoch * math.ceil(n / batch)
        assert int(r["score_examples"]) == SETTINGS.score_epoch * n
        if float(r["epoch"]) == 1:
            assert float(r["seconds"]) == pytest.approx(want + first["seconds"], abs=2e-3)
    for arm in SETTINGS.arms:
        if arm.kind != study.STATIC:
            assert {float(r["score_seconds"]) for r in _arm_rows(smoke, arm)} == {0.0}


def test_pruned_arms_see_fewer_examples_than_full(smoke):
    config = smoke["config"]
    full_rows = [r for r in smoke["rows"] if r["arm"] == study.FULL]
    seen = {s: int(_last(full_rows, s)["examples"]) for s in range(SETTINGS.num_seeds)}
    assert set(seen.values()) == {config.train.num_epochs * config.data.num_train_examples}
    for arm in SETTINGS.arms:
        if arm.kind == study.FULL:
            continue
        for s in range(SETTINGS.num_seeds):
            last = _last(_arm_rows(smoke, arm), s)
            assert int(last["examples"]) - int(last["score_examples"]) < seen[s], arm.name
    # Seconds and examples never decrease along a curve.
    for arm in SETTINGS.arms:
        rows = sorted(_arm_rows(smoke, arm), key=lambda r: (int(r["seed"]), float(r["epoch"])))
        for key in ("seconds", "examples", "steps"):
            values = np.array([float(r[key]) for r in rows]).reshape(SETTINGS.num_seeds, -1)
            assert np.all(np.diff(values, axis=1) >= 0), (arm.name, key)


def test_outputs_name_every_arm(smoke):
    assert all(os.path.exists(p) for p in smoke["outputs"]["figure"])
    summary = open(smoke["outputs"]["summary"][0]).read()
    assert all(f"| {a.name} |" in summary for a in SETTINGS.arms)


def test_rerun_trains_nothing(smoke):
    before = snapshot(smoke["runs"])
    with open(os.path.join(smoke["out"], "speedup.csv")) as f:
        csv_before = f.read()
    speedup.reproduce("smoke", smoke["runs"], smoke["out"])
    assert snapshot(smoke["runs"]) == before
    with open(os.path.join(smoke["out"], "speedup.csv")) as f:
        assert f.read() == csv_before
