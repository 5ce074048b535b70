"""The protocol section of the study summaries: its fields from a hand-made config, the scoring
cost from a hand-made score run's recorded times, and the rendered section."""

import json

import pytest

from datadiet_jax.pipeline import config_base
from datadiet_jax.report import protocol, summary


def _config(budget="steps"):
    c = config_base.base_config()
    c.train.batch_size = 128
    c.train.num_epochs = 6
    c.retrain.budget = budget
    c.retrain.num_seeds = 3
    c.score.num_seeds = 4
    c.score.el2n_epochs = (3,)
    c.score.grand_epochs = (0, 3)
    c.score.train_epochs = -1  # up to the last score epoch: 3
    return c


def test_fields_of_a_fixed_step_protocol():
    p = protocol.fields(_config(), 10_000)
    # 10,000 / 128 = 78.125: the last, padded batch makes 79 steps an epoch; 6 x 79 = 474.
    assert p["steps_per_epoch"] == 79 and p["num_steps"] == 474
    assert p["protocol"] == "fixed steps" and p["budget"] == "steps"
    assert (p["batch_size"], p["num_epochs"], p["retrain_seeds"]) == (128, 6, 3)
    table = {r["setting"]: r["value"] for r in protocol.rows(p)}
    assert table["full-data training"] == "6 epochs x 79 steps = 474 steps"
    assert "fixed steps" in table["retraining budget"] and "474 steps" in table["retraining budget"]
    assert table["batch size"] == "128" and table["retraining seeds per point"] == "3"


def test_fixed_epochs_no_retraining_and_a_bad_budget():
    p = protocol.fields(_config("epochs"), 1_024)
    assert p["protocol"] == "fixed epochs" and p["num_steps"] == 6 * 8
    table = {r["setting"]: r["value"] for r in protocol.rows(p)}
    assert table["retraining budget"].startswith("fixed epochs")
    none = protocol.fields(_config(), 1_024, retraining=False)
    assert none["protocol"] == "no retraining" and none["retrain_seeds"] == 0
    table = {r["setting"]: r["value"] for r in protocol.rows(none, training="one K-seed run")}
    assert "retraining seeds per point" not in table and table["training"] == "one K-seed run"
    with pytest.raises(ValueError, match="retrain.budget"):
        protocol.fields(_config("rounds"), 1_024)


def _score_run(tmp_path, epoch_seconds):
    (tmp_path / "config.json").write_text(json.dumps(config_base.config_to_dict(_config())))
    train = tmp_path / "scores" / "train"
    train.mkdir(parents=True)
    with open(train / "metrics.jsonl", "w") as f:
        for i, seconds in enumerate(epoch_seconds):
            line = {"step": i + 1, "loss": [1.0] * 4}
            f.write(json.dumps(line | ({"seconds": seconds} if seconds else {})) + "\n")
    timings = [("el2n", 3, 2.0), ("grand", 0, 6.0), ("grand", 3, 4.0)]
    with open(tmp_path / "scores" / "timings.jsonl", "w") as f:
        for score, epoch, seconds in timings:
            f.write(json.dumps({"score": score, "epoch": epoch, "seconds": seconds}) + "\n")
    return str(tmp_path)


def test_score_run_cost_from_recorded_times(tmp_path):
    # Epochs of 30 s (compiling, left out), 8 s and 12 s for K=4: 2.5 s per seed and epoch, so
    # one full training of one seed is 6 x 2.5 = 15 s. The run trains 3 epochs and computes its
    # scores in 2 + 6 + 4 = 12 s.
    cost = protocol.score_run_cost(_score_run(tmp_path, [30.0, 8.0, 12.0]))
    assert cost["basis"] == "measured" and cost["train_epochs"] == 3
    assert cost["cost_k_seeds"] == pytest.approx((4 * 3 * 2.5 + 12.0) / 15.0)
    assert cost["cost_one_seed"] == pytest.approx((3 * 2.5 + 12.0 / 4) / 15.0)


def test_score_run_cost_without_times_is_the_epoch_share(tmp_path):
    cost = protocol.score_run_cost(_score_run(tmp_path, [None, None, None]))
    assert cost["basis"] == "epochs"
    assert cost["cost_one_seed"] == pytest.approx(3 / 6) and cost["cost_k_seeds"] == 2.0
    assert "no recorded times" in protocol.cost_text(cost)


def test_section_opens_a_written_summary(tmp_path):
    (tmp_path / "run").mkdir()
    score_dir = _score_run(tmp_path / "run", [30.0, 8.0, 12.0])
    section = protocol.section(protocol.fields(_config(), 10_000), {"scores_noise00": score_dir})
    assert section[0] == protocol.HEADING
    path = summary.write_summary(str(tmp_path / "s.md"), "Study", [section, ("Accuracy", [])])
    text = open(path).read()
    assert text.index("## Protocol") < text.index("## Accuracy")
    assert "| scoring cost (scores_noise00) | 0.700 of one full training per score seed" in text
