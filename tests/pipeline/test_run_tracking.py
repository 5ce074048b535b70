"""A run's tracking (`config.track`): after the smoke run, TensorBoard events and records.jsonl
hold each training's metrics and each score file's histograms; without tracking, every other
output of the run is byte-identical."""

import glob
import json
import os

import numpy as np
import pytest

from tests.conftest import SMOKE_ARGS, run_main, run_outputs
from tests.training.test_tracking import jsonl_records, tensorboard_values


def _hand_learning_rate(train, total_steps, step):
    """The piecewise-constant rate of the last step before `step` (no warm-up in the smoke)."""
    drops = sum(step - 1 >= int(f * total_steps) for f in train["lr_drop_fractions"])
    return train["learning_rate"] * train["lr_drop_factor"] ** drops


def test_trainings_and_scores_are_tracked_in_tensorboard_and_jsonl(smoke_run):
    workdir, _ = smoke_run
    root = os.path.join(workdir, "tracking")
    records = jsonl_records(os.path.join(root, "records.jsonl"))
    events = tensorboard_values(os.path.join(root, "tensorboard"))
    train = json.load(open(os.path.join(workdir, "config.json")))["train"]
    trainings = ["scores/train"] + [f"retrain/{r}" for r in os.listdir(f"{workdir}/retrain")]
    for run in trainings:
        metrics = jsonl_records(os.path.join(workdir, run, "metrics.jsonl"))
        tracked = [r for r in records if r["run"] == run and "scalars" in r]
        assert [r["step"] for r in tracked] == [m["step"] for m in metrics], run
        # Every schedule spans num_epochs of the 128 examples (pruned runs: the same steps).
        total = train["num_epochs"] * (128 // train["batch_size"])
        for record, line in zip(tracked, metrics, strict=True):
            values, step = record["scalars"], record["step"]
            for k, loss in enumerate(line["loss"]):
                assert values[f"loss/seed{k}"] == loss
                assert 0 <= values[f"accuracy/seed{k}"] <= 1
            assert values["learning_rate"] == pytest.approx(_hand_learning_rate(train, total, step))
            assert values["examples_per_second"] > 0
            for name, value in values.items():
                assert events[(run, name, step)] == pytest.approx(value, rel=1e-6)
    histograms = {(r["histogram"], r["step"]): r for r in records if "histogram" in r}
    score_files = glob.glob(os.path.join(workdir, "scores", "*_epoch*.npz"))
    assert len(score_files) >= 5
    for path in score_files:
        kind, epoch = os.path.basename(path)[: -len(".npz")].split("_epoch")
        saved = np.load(path)
        rows = dict(enumerate(saved["per_seed"].astype(np.float64)))
        rows = {f"seed{k}": row for k, row in rows.items()} | {"mean": saved["mean"]}
        for label, values in rows.items():
            name = f"{kind}/{label}"
            values = np.asarray(values, np.float64)
            counts, edges = np.histogram(values[np.isfinite(values)], bins=30)
            record = histograms[(name, int(epoch))]
            np.testing.assert_array_equal(record["counts"], counts)
            np.testing.assert_allclose(record["edges"], edges)
            table = events[("scores", name, int(epoch))]
            np.testing.assert_array_equal(table[:, 2], counts)


def test_a_run_without_tracking_writes_the_same_files(smoke_run, tmp_path):
    workdir, _ = smoke_run
    quiet = str(tmp_path / "untracked")
    proc = run_main(*SMOKE_ARGS, f"--workdir={quiet}", "--config.track.writers=()")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not os.path.exists(os.path.join(quiet, "tracking"))
    got, want = run_outputs(quiet), run_outputs(workdir)
    assert sorted(got) == sorted(want)
    for name in want:
        if name == "config.json":  # the one difference: the writers asked for
            a, b = json.loads(got[name]), json.loads(want[name])
            assert a.pop("track") == {"writers": []} and b.pop("track")["writers"]
            assert a == b
        else:
            assert got[name] == want[name], name
