"""Tracking (`training/tracking.py`): TensorBoard event files and JSON lines read back, the K-seed
loop's scalars against an independent numpy reference, process 0 alone writing."""

import glob
import json
import os

import flax.linen as nn
import numpy as np
import pytest

from tests.conftest import smoke_config, tiny_spec, train_cfg
from tests.references import make_split


def tensorboard_values(folder):
    """{(tag, step): value} of every event file under `folder` (scalars as floats, histograms as
    their [bins, 3] tables), read with TensorFlow's own event reader."""
    import tensorflow as tf

    out = {}
    for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
        run = os.path.relpath(os.path.dirname(path), folder)
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                out[(run, value.tag, event.step)] = array if array.ndim else float(array)
    return out


def jsonl_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_tracker_writes_scalars_and_histograms_to_both_writers(tmp_path):
    from datadiet_jax.training import tracking

    root = str(tmp_path / "tracking")
    values = np.concatenate([np.arange(31), [np.inf, np.nan]])  # 30 bins of width 1
    with tracking.session(root, ("tensorboard", "jsonl")) as tracker:
        tracker.scalars("scores/train", 7, {"loss/seed0": 0.25, "learning_rate": 0.1})
        tracker.histogram("scores", 1, "el2n/mean", values)
    records = jsonl_records(os.path.join(root, "records.jsonl"))
    assert records[0] == {
        "run": "scores/train",
        "step": 7,
        "scalars": {"loss/seed0": 0.25, "learning_rate": 0.1},
    }
    # The last bin holds its right edge; +inf and NaN are left out.
    assert records[1]["histogram"] == "el2n/mean" and records[1]["counts"] == [1] * 29 + [2]
    np.testing.assert_allclose(records[1]["edges"], np.arange(31))
    events = tensorboard_values(os.path.join(root, "tensorboard"))
    assert events[("scores/train", "loss/seed0", 7)] == 0.25
    assert events[("scores/train", "learning_rate", 7)] == pytest.approx(0.1)
    table = events[("scores", "el2n/mean", 1)]  # rows (left edge, right edge, count)
    np.testing.assert_allclose(table[:, 0], np.arange(30))
    np.testing.assert_array_equal(table[:, 2], [1] * 29 + [2])


def test_only_process_zero_writes(tmp_path, monkeypatch):
    from datadiet_jax.training import multihost, tracking

    monkeypatch.setattr(multihost, "is_writer", lambda: False)
    with tracking.session(str(tmp_path / "tracking"), ("tensorboard", "jsonl")) as tracker:
        assert tracker.active  # the same on every process: values are fetched by all
        tracker.scalars("train", 1, {"loss/seed0": 1.0})
        tracker.histogram("scores", 1, "el2n/mean", np.ones(4))
    assert not os.path.exists(tmp_path / "tracking")
    assert not tracking.current().active  # outside a session nothing is tracked


def test_unknown_writer_is_one_line_naming_the_setting():
    from datadiet_jax.pipeline import config_check

    with pytest.raises(ValueError, match=r"config.track.writers names \['tensorbord'\]"):
        config_check.validate(smoke_config(**{"track.writers": ("tensorbord",)}))


class Linear(nn.Module):
    """No BatchNorm or Dropout: train-mode logits are the eval-mode logits."""

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_fit_tracks_each_seeds_loss_and_accuracy_per_epoch(tmp_path):
    from datadiet_jax.training import loop, tracking

    split = make_split(n=64, hw=8)
    kept = np.arange(0, 64, 2)  # 32 examples: 2 steps of 16 per epoch
    # Learning rate 0: the parameters stay at their init, so each epoch's accuracy is that of
    # the init on the kept examples, computed here with numpy.
    cfg = train_cfg(learning_rate=0.0)
    spec = tiny_spec(tmp_path / "train" / "ckpt", train_cfg=cfg, num_steps=4, schedule_steps=4)
    with tracking.session(str(tmp_path / "tracking"), ("tensorboard", "jsonl")):
        state, _, _ = loop.fit(Linear(), split, kept, spec)
    dense = state.params["Dense_0"]
    x = np.asarray(split.model_inputs())[kept].reshape(len(kept), -1)
    logits = (
        np.einsum("nd,kdc->knc", x, np.asarray(dense["kernel"]))
        + np.asarray(dense["bias"])[:, None]
    )
    accuracy = (logits.argmax(-1) == split.labels[kept]).mean(axis=1)  # [K]

    records = jsonl_records(tmp_path / "tracking" / "records.jsonl")
    metrics = jsonl_records(tmp_path / "train" / "metrics.jsonl")
    assert [r["step"] for r in records] == [m["step"] for m in metrics] == [2, 4]
    events = tensorboard_values(str(tmp_path / "tracking" / "tensorboard"))
    for record, line in zip(records, metrics, strict=True):
        assert record["run"] == "train"
        values = record["scalars"]
        for k in range(2):
            assert values[f"loss/seed{k}"] == line["loss"][k]
            assert values[f"accuracy/seed{k}"] == pytest.approx(accuracy[k])
        assert values["learning_rate"] == 0.0 and values["examples_per_second"] > 0
        for name, value in values.items():
            assert events[("train", name, record["step"])] == pytest.approx(value, rel=1e-6)
