"""Divergence and collapse checks, each tested with a planted fault."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax import models
from datadiet_jax.pipeline import retrain
from datadiet_jax.report import summary
from datadiet_jax.training import health, initial, loop
from tests.conftest import tiny_spec, train_cfg, train_tiny


def test_first_nonfinite_step_is_recorded_once_per_seed():
    rec = health.init_nonfinite(3)
    rec = health.update_nonfinite(rec, jnp.array([1.0, jnp.nan, 2.0]), jnp.array([5, 5, 5]))
    rec = health.update_nonfinite(rec, jnp.array([jnp.inf, jnp.nan, 2.0]), jnp.array([6, 6, 6]))
    rec = health.update_nonfinite(rec, jnp.array([1.0, 1.0, 2.0]), jnp.array([7, 7, 7]))
    np.testing.assert_array_equal(np.asarray(rec), [6, 5, -1])


def test_statuses_by_hand():
    init = {"accuracy": [0.10, 0.10, 0.10, 0.10, 0.10], "loss": [2.3, 2.3, 2.3, 2.3, 2.3]}
    final = {
        # learned; at the majority share (predicts one class); below init loss but no better
        # than init accuracy; fits but loss rose; diverged
        "accuracy": [0.90, 0.40, 0.11, 0.90, 0.10],
        "loss": [0.30, 1.50, 2.00, 2.50, 0.20],
    }
    out = health.statuses(init, final, [-1, -1, -1, -1, 12], majority=0.40)
    assert out == ["ok", "collapsed", "collapsed", "collapsed", "diverged"]
    # A non-finite final metric is a divergence even if no step was recorded.
    nan_final = {"accuracy": [float("nan")], "loss": [1.0]}
    assert health.statuses(init, nan_final, [-1], majority=0.1) == ["diverged"]


def test_majority_share_and_fit_sample():
    assert health.majority_share(np.array([0, 1, 1, 2, 1])) == pytest.approx(0.6)
    kept = np.arange(0, 3 * health.FIT_CHECK_EXAMPLES, 3)
    sample = health.fit_sample(kept)
    assert len(sample) == health.FIT_CHECK_EXAMPLES
    assert sample[0] == kept[0] and sample[-1] == kept[-1]
    assert np.all(np.diff(sample) > 0)  # dataset order, no repeats
    np.testing.assert_array_equal(health.fit_sample(kept[:10]), kept[:10])


def test_planted_divergence_raises_in_the_score_stage(synthetic_split, tmp_path):
    with pytest.raises(ValueError, match=r"planted: seed 0 diverged \(non-finite loss at step"):
        train_tiny(
            synthetic_split,
            tmp_path / "ckpt",
            name="planted",
            on_diverge="raise",
            train_cfg=train_cfg(learning_rate=1e30),
        )
    # Nothing diverged was checkpointed as if it were healthy.
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_planted_divergence_is_marked_and_stops_training(synthetic_split, tmp_path):
    _, stats, step = train_tiny(
        synthetic_split, tmp_path / "ckpt", name="planted", train_cfg=train_cfg(learning_rate=1e30)
    )
    first = np.asarray(stats["nonfinite_step"])
    assert np.all(first >= 1) and np.all(first <= 4)  # found within the first epoch (4 steps)
    assert step == 4  # every seed diverged: stopped at the first check, not trained to 12


def test_healthy_training_records_no_divergence(synthetic_split, tmp_path):
    _, stats, step = train_tiny(synthetic_split, tmp_path / "ckpt", name="planted")
    assert step == 12
    np.testing.assert_array_equal(np.asarray(stats["nonfinite_step"]), [-1, -1])


def test_untrained_network_is_flagged_collapsed_and_trained_one_ok(synthetic_split, tmp_path):
    model = models.get_model("small_cnn", 3, width=4)
    spec = tiny_spec(
        tmp_path / "ckpt", train_cfg=train_cfg(learning_rate=0.05), num_steps=40, schedule_steps=40
    )
    state, stats, _ = loop.fit(model, synthetic_split, synthetic_split.index, spec)
    init = initial.initial_states(model, synthetic_split, spec)
    kept = synthetic_split.index
    eval_args = dict(batch_size=32, seed_axis="auto")
    # The planted fault: the "final" network is the initial one, which never trained.
    for final, expected in ((state, "ok"), (init, "collapsed")):
        fit = retrain.fit_check(model, init, final, synthetic_split, kept, **eval_args)
        acc = np.array([0.9, 0.8])
        fields = retrain._health_fields("planted", acc, acc, fit, stats["nonfinite_step"])
        assert fields["status"] == [expected, expected]
        if expected == "collapsed":
            assert fields["mean_test_accuracy"] is None and fields["num_left_out"] == 2
        else:
            assert fields["mean_test_accuracy"] == pytest.approx(0.85)


def test_summaries_leave_collapsed_and_diverged_runs_out():
    rows = [
        {"method": "el2n", "test_accuracy": 0.8, "status": "ok"},
        {"method": "el2n", "test_accuracy": 0.7, "status": "ok"},
        {"method": "el2n", "test_accuracy": 0.1, "status": "collapsed"},
        {"method": "el2n", "test_accuracy": None, "status": "diverged"},
        {"method": "random", "test_accuracy": 0.1, "status": "collapsed"},
    ]
    table = {r["method"]: r for r in summary.summary_table(rows, ("method",))}
    assert table["el2n"]["mean"] == pytest.approx(0.75)
    assert table["el2n"]["runs"] == 2 and table["el2n"]["left_out"] == 2
    assert table["random"]["mean"] is None and table["random"]["left_out"] == 1
    assert "| - |" in summary.markdown_table([table["random"]])


def test_result_rows_carry_status_and_keep_diverged_accuracy_empty():
    result = {
        "name": "x",
        "score": "el2n@1",
        "strategy": "hardest",
        "prune_fraction": 0.5,
        "offset": 0,
        "num_kept": 10,
        "label_noise": 0.0,
        "steps": 4,
        "status": ["ok", "diverged"],
        "test_accuracy": [0.8, None],
        "train_accuracy": [0.9, float("nan")],
    }
    rows = retrain.result_rows([result])
    assert [r["status"] for r in rows] == ["ok", "diverged"]
    assert rows[1]["test_accuracy"] is None


def test_score_training_that_has_not_learned_is_named_in_a_warning(monkeypatch):
    warnings = []
    monkeypatch.setattr(health.logging, "warning", lambda msg, *a: warnings.append(msg % a))
    labels = np.array([0, 0, 0, 1, 2, 1, 0, 2, 1, 0])  # majority share 0.5
    seen = np.ones((2, 10), np.int32)
    learned = np.zeros((2, 10), bool)
    learned[0, :9] = True  # seed 0: 0.9 correct at its last presentations
    learned[1, labels == 0] = True  # seed 1: predicts class 0 only, 0.5 correct
    stats = {"previous": learned, "seen": seen}
    acc = health.check_score_training(stats, labels, epoch=2)
    np.testing.assert_allclose(acc, [0.9, 0.5])
    assert len(warnings) == 1 and "seed 1 has not learned by epoch 2" in warnings[0]
    assert health.check_score_training(stats, labels, epoch=0).size == 0  # init: not checked
    stats["previous"][1] = learned[0]
    health.check_score_training(stats, labels, epoch=2)
    assert len(warnings) == 1


def test_score_summary_shows_the_finite_mean_and_counts_inf():
    per_seed = np.array([[1.0, np.inf, 3.0], [np.inf, np.inf, 5.0]])
    assert health.score_summary(per_seed) == "mean 3.0000 over 3 finite values, 3 +inf"
    only_inf = health.score_summary(np.full((2, 5), np.inf))
    assert only_inf == "no finite value, 10 +inf"


def test_five_example_run_warns_once_per_small_training_and_never_logs_nan(tmp_path, caplog):
    from datadiet_jax.pipeline import run
    from tests.conftest import smoke_config

    config = smoke_config(**{"data.num_train_examples": 5, "score.forgetting": True})
    with caplog.at_level("INFO"):
        results = run.run(config, str(tmp_path / "w"))
    messages = [r.getMessage() for r in caplog.records]
    small = [m for m in messages if "fewer than one batch" in m]
    # The score training, and each of the three retrainings (5, 2 and 2 examples).
    assert len(small) == 4, small
    assert any(m.startswith("The score training trains on 5 examples") for m in small)
    assert not [m for m in messages if re.search(r"\bnan\b", m.lower())], messages
    assert len(results["runs"]) == 3
