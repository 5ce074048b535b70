"""config.train.prune from the config check, the notebook helper and the command line."""

import json
import os

import numpy as np
import pytest

from datadiet_jax.pipeline import config_check, notebook
from datadiet_jax.pipeline.config_base import base_config
from tests.conftest import SMOKE_ARGS, run_main, smoke_config, tiny_model
from tests.references import make_split


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"train.prune.schedule": "infobach"}, "config.train.prune.schedule"),
        (
            {"train.prune.schedule": "rs2", "train.prune.fraction": 1.5},
            "config.train.prune.fraction",
        ),
        ({"train.prune.schedule": "prune_continue", "train.prune.at_epoch": 2}, "at_epoch"),
    ],
)
def test_bad_schedule_is_one_line_naming_the_setting(overrides, setting):
    with pytest.raises(ValueError) as err:
        config_check.validate(smoke_config(**overrides))
    assert setting in str(err.value) and "\n" not in str(err.value)


def test_default_is_off_and_a_schedule_reaches_the_retrainings():
    from datadiet_jax.pipeline import stacked

    assert base_config().train.prune.schedule == ""
    specs = config_check.validate(smoke_config(**{"train.prune.schedule": "rs2"}))
    spec = stacked.train_spec(specs.retrain, make_split(), 64, "/tmp/unused", "run")
    assert spec.prune.schedule == "rs2" and spec.prune.fraction == 0.5
    assert specs.retrain.settings["train"]["prune"]["schedule"] == "rs2"  # in the record
    plain = config_check.validate(smoke_config())
    assert stacked.train_spec(plain.retrain, make_split(), 64, "/tmp/unused", "run").prune is None


def test_train_seeds_takes_a_schedule(tmp_path):
    split = make_split()
    out = notebook.train_seeds(
        tiny_model(split),
        split,
        num_seeds=2,
        num_steps=8,
        batch_size=16,
        prune={"schedule": "infobatch", "ratio": 0.5},
        workdir=str(tmp_path),
    )
    assert out.stats["prune"]["loss"].shape == (2, 64)
    assert int(np.asarray(out.stats["prune"]["round"])[0]) >= 1
    # num_epochs with a schedule: that many rounds, each half the 64 examples at batch 16.
    rounds = notebook.train_seeds(
        tiny_model(split),
        split,
        num_seeds=2,
        num_epochs=2,
        batch_size=16,
        prune={"schedule": "rs2", "fraction": 0.5},
    )
    assert rounds.num_steps == 4
    np.testing.assert_array_equal(np.asarray(rounds.stats["forgetting"]["seen"]).sum(1), [64, 64])
    with pytest.raises(ValueError, match="whole number of rounds"):
        notebook.train_seeds(tiny_model(split), split, num_epochs=1.5, prune={"schedule": "rs2"})
    with pytest.raises(ValueError, match="unknown fields"):
        notebook.train_seeds(tiny_model(split), split, num_steps=1, prune={"schedul": "rs2"})
    with pytest.raises(ValueError, match="train_seeds prune.ratio"):
        notebook.train_seeds(
            tiny_model(split), split, num_steps=1, prune={"schedule": "infobatch", "ratio": 2}
        )


def test_command_line_retrains_with_a_schedule_by_rounds_and_logs_its_curve(smoke_run, tmp_path):
    workdir = str(tmp_path / "run")
    proc = run_main(
        *SMOKE_ARGS,
        f"--workdir={workdir}",
        f"--config.score.workdir={smoke_run[0]}",
        "--config.train.prune.schedule=rs2",
        "--config.train.prune.fraction=0.5",
        "--config.retrain.budget=epochs",
        "--config.retrain.curve=True",
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert {r["status"][0] for r in results["runs"]} == {"ok"}
    # The full-data run saw half of its 128 examples per round, for its 2 rounds (the 2
    # epochs of the budget): 4 steps where full epochs take 8.
    run_dir = os.path.join(workdir, "retrain", "full")
    lines = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [x["epoch"] for x in lines] == [1, 2] and [x["step"] for x in lines] == [2, 4]
    assert lines[-1]["examples"] == [4 * 32]
    result = json.load(open(os.path.join(run_dir, "result.json")))
    assert result["steps"] == 4
    # The curve's last point is the run's own evaluation of the same final state.
    np.testing.assert_allclose(lines[-1]["test_accuracy"], result["test_accuracy"], atol=1e-6)


def test_target_accuracy_out_of_range_is_one_line():
    with pytest.raises(ValueError) as err:
        config_check.validate(smoke_config(**{"retrain.target_accuracy": 1.5}))
    assert "config.retrain.target_accuracy" in str(err.value) and "\n" not in str(err.value)
