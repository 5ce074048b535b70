"""Tracking: scalars and histograms of a run's trainings and scores, for TensorBoard and programs.

A `Tracker` writes each record to every configured writer: 'tensorboard' (event files under
`<root>/tensorboard/<run>/`, one TensorBoard run per training, read with
`tensorboard --logdir <root>/tensorboard`) and 'jsonl' (one JSON line per record in
`<root>/records.jsonl`). Another back-end (W&B, MLflow, trackio) is one more class with the
same three methods in `WRITERS`, imported in its constructor, so that it is needed only when
configured. Only process 0 of a multi-process job writes (`multihost.is_writer`); the others get
a tracker that writes nothing.

The pipeline opens one tracker per run (`session`, from `config.track`); the K-seed loop and the
score stage write to the open one (`current`), which is a no-op tracker outside a session, so
code that trains or scores without the pipeline (a notebook) writes nothing. Tracking reads
values the run has computed anyway: it changes no other output of a run.

Record names: the K-seed loop writes `loss/seed<k>`, `accuracy/seed<k>`, `learning_rate` and
`examples_per_second` at each epoch end (step = the training step); the score stage writes the
histograms `<score>/seed<k>` and `<score>/mean` at step = the score's epoch, and
`examples_per_second/<score>`.

Usage:

    from datadiet_jax.training import tracking
    with tracking.session("WORKDIR/tracking", ("tensorboard", "jsonl")):
        tracking.current().scalars("scores/train", 10, {"loss/seed0": 0.3})
        tracking.current().histogram("scores/train", 1, "el2n/mean", scores)   # [N]
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import numpy as np

from datadiet_jax.training import multihost

# Bins of each histogram (equal widths between the values' minimum and maximum).
HISTOGRAM_BINS = 30


def histogram(values, bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(edges [bins + 1], counts [bins]) of the finite `values` (any shape); +inf (a score that
    is never learned) and NaN are left out."""
    values = np.asarray(values, np.float64).ravel()
    counts, edges = np.histogram(values[np.isfinite(values)], bins=bins)
    return edges, counts


class _JsonlWriter:
    """One JSON line per record in `<root>/records.jsonl`."""

    def __init__(self, root: str):
        self.root, self.path = root, os.path.join(root, "records.jsonl")

    def _append(self, record: dict) -> None:
        os.makedirs(self.root, exist_ok=True)  # at the first record, not before
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def scalars(self, run: str, step: int, values: dict) -> None:
        self._append({"run": run, "step": step, "scalars": values})

    def histogram(self, run: str, step: int, name: str, edges, counts) -> None:
        record = {"run": run, "step": step, "histogram": name}
        self._append(record | {"edges": edges.tolist(), "counts": counts.tolist()})

    def close(self) -> None:
        pass


class _TensorBoardWriter:
    """TensorBoard event files, one folder per run, through TensorFlow's summary ops (the
    `tensorboard` package is not needed to write them, only to view them)."""

    def __init__(self, root: str):
        import tensorflow as tf  # the pipeline's dependency; never imported by the library
        from tensorflow.core.framework import summary_pb2

        self.tf, self.root, self.writers = tf, os.path.join(root, "tensorboard"), {}
        data = summary_pb2.SummaryMetadata.PluginData
        self.meta = {
            p: summary_pb2.SummaryMetadata(plugin_data=data(plugin_name=p))
            for p in ("scalars", "histograms")
        }

    def _writer(self, run: str):
        if run not in self.writers:
            self.writers[run] = self.tf.summary.create_file_writer(os.path.join(self.root, run))
        return self.writers[run]

    def scalars(self, run: str, step: int, values: dict) -> None:
        tf = self.tf
        with self._writer(run).as_default():
            for name, value in values.items():
                tensor = tf.constant(value, tf.float32)
                tf.summary.write(name, tensor, step=step, metadata=self.meta["scalars"])

    def histogram(self, run: str, step: int, name: str, edges, counts) -> None:
        # TensorBoard's histogram layout: [bins, 3] rows of (left edge, right edge, count).
        table = np.stack([edges[:-1], edges[1:], counts], axis=1).astype(np.float64)
        with self._writer(run).as_default():
            self.tf.summary.write(name, table, step=step, metadata=self.meta["histograms"])

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


WRITERS = {
    "tensorboard": _TensorBoardWriter,
    "jsonl": _JsonlWriter,
}


def check_writers(writers) -> None:
    """Raises ValueError naming `config.track.writers` when a name is not in `WRITERS`."""
    unknown = [w for w in writers if w not in WRITERS]
    if unknown:
        raise ValueError(
            f"config.track.writers names {unknown}; use names of {sorted(WRITERS)}, or () to "
            "track nothing."
        )


class Tracker:
    """Sends each record to its writers (none: a tracker that writes nothing).

    Args:
      root: the tracking folder (`WORKDIR/tracking`).
      writers: names of `WRITERS`.
      write: whether this process writes (process 0 of a job). `active` is the same on every
        process, so values that need every process to fetch them are fetched by all.
    """

    def __init__(self, root: str = "", writers=(), *, write: bool = True):
        check_writers(writers)
        self.active = bool(writers)
        self.workdir = os.path.dirname(os.path.abspath(root)) if root else ""
        self.writers = [WRITERS[name](root) for name in writers] if write else []

    def run_name(self, folder: str) -> str:
        """The name of a training whose files are in `folder`: its path relative to the work
        directory ('scores/train', 'retrain/<run>'), or the folder's own name outside it."""
        rel = os.path.relpath(os.path.abspath(folder), self.workdir or os.sep)
        return os.path.basename(folder.rstrip("/")) if rel.startswith("..") else rel

    def scalars(self, run: str, step: int, values: dict) -> None:
        """Writes the scalars `{name: float}` of training `run` (e.g. 'scores/train') at `step`."""
        values = {k: float(v) for k, v in values.items()}
        for writer in self.writers:
            writer.scalars(run, int(step), values)

    def histogram(self, run: str, step: int, name: str, values) -> None:
        """Writes the histogram of `values` (any shape, e.g. [N] scores) as `name` at `step`."""
        if self.writers:
            edges, counts = histogram(values)
            for writer in self.writers:
                writer.histogram(run, int(step), name, edges, counts)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


_OPEN: list[Tracker] = []


def current() -> Tracker:
    """The tracker of the open `session`, else one that writes nothing."""
    return _OPEN[-1] if _OPEN else Tracker()


@contextlib.contextmanager
def session(root: str, writers) -> Iterator[Tracker]:
    """Opens the tracker of a run for the `with` block (process 0 writes; the others and
    `writers=()` get one that writes nothing) and closes its files at the end."""
    tracker = Tracker(root, writers, write=multihost.is_writer())
    _OPEN.append(tracker)
    try:
        yield tracker
    finally:
        _OPEN.remove(tracker)
        tracker.close()
