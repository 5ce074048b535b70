"""The per-example scores of a run as one CSV: one row per example, in the dataset's own order.

Columns:
  index        the example's position in the TFDS split (the score files' `index`)
  tfds_id      the example's TFDS id, when the score files hold a `tfds_id` array
  label        the training label the scores were computed with (label_noise.npz `labels`)
  clean_label  with label noise only: the label before the noise
  noisy        with label noise only: 1 for the examples chosen for the noise (`noisy_index`); a
               permuted label can land on its own class, so the flipped ones are those whose label
               differs from clean_label
  <score>      one column per score file, its mean over the seeds, named as the config names it
               ('el2n@1', 'grand@0', 'forgetting', 'aum')

Rows keep the order of the score files (the dataset's own, never re-sorted). Every score file
passes `artifacts.load_scores`' checks first (readable, no NaN, as many scores as labels).

Usage:

    from datadiet_jax.report import run_summary, score_export
    config = run_summary.read_config("runs/fashion_mnist")
    score_export.write_scores_csv(config, "runs/fashion_mnist", "out/scores.csv")
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from datadiet_jax.pipeline import artifacts, config_check, score_stage
from datadiet_jax.pipeline.specs import ScoreSpec
from datadiet_jax.training import files


def score_files(spec: ScoreSpec, workdir: str) -> dict[str, str]:
    """{score name: path} of the score files of the run in `workdir` that exist, in config order.

    Args:
      spec: the score stage of the run that computed the scores (`config_check.score_spec` of
        its config).
      workdir: its work directory.
    """
    wanted = score_stage.wanted_files(spec, workdir)
    return {name: path for name, (_, _, path) in wanted.items() if os.path.isfile(path)}


def read_labels(workdir: str) -> dict[str, np.ndarray] | None:
    """`WORKDIR/label_noise.npz` as {'labels' [N], 'clean_labels' [N], 'noisy_index' [M]} int
    arrays, or None before the run has written it."""
    path = os.path.join(workdir, "label_noise.npz")
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as f:
        return {k: np.asarray(f[k]) for k in ("labels", "clean_labels", "noisy_index")}


def score_columns(files: dict[str, str], num_examples: int) -> dict[str, np.ndarray]:
    """The checked score files as columns.

    Args:
      files: {score name: path} (`score_files`).
      num_examples: N, the number of training labels the scores must match.

    Returns:
      {'index': [N] int64, 'tfds_id': [N] str (only when the files hold one), score name: [N]
      float32 mean over the seeds}.

    Raises:
      ValueError: one line when a file is refused by `artifacts.load_scores` (unreadable, NaN,
        wrong length) or the files index different examples.
    """
    columns: dict[str, np.ndarray] = {}
    first = None
    for name, path in files.items():
        loaded = artifacts.load_scores(path, {"num_examples": num_examples})
        if first is None:
            first = path
            columns["index"] = loaded["index"]
        elif not np.array_equal(loaded["index"], columns["index"]):
            raise ValueError(
                f"Score files {first} and {path} index different examples; delete the one that "
                "does not belong to this run and rerun it."
            )
        ids = _tfds_ids(path, loaded)
        if ids is not None and "tfds_id" not in columns:
            columns["tfds_id"] = ids
        elif ids is not None and not np.array_equal(ids, columns["tfds_id"]):
            raise ValueError(f"Score files {first} and {path} hold different tfds_id arrays.")
        columns[name] = loaded["mean"]
    return columns


def _tfds_ids(path: str, loaded: dict) -> np.ndarray | None:
    """The `[N]` str TFDS ids of a score file, or None when it holds none."""
    ids = loaded.get("tfds_id")
    if ids is None:
        try:
            with np.load(path, allow_pickle=False) as f:
                ids = f.get("tfds_id")
                ids = None if ids is None else np.asarray(ids)
        except ValueError:
            raise ValueError(f"Score file {path} holds an unreadable tfds_id array.") from None
    if ids is None:
        return None
    ids = np.asarray(ids)
    if ids.shape != loaded["index"].shape:
        raise ValueError(
            f"Score file {path} holds {ids.size} tfds ids for {loaded['index'].size} examples; "
            f"{artifacts.DEFAULT_FIX}."
        )
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in ids.tolist()])


def score_rows(columns: dict[str, np.ndarray], labels: dict[str, np.ndarray], noisy: bool):
    """The CSV rows: one dict per example, in the order of `columns['index']`.

    Args:
      columns: `score_columns` output.
      labels: `read_labels` output, in the same (dataset) order.
      noisy: whether the run used label noise (adds clean_label and noisy).
    """
    n = len(columns["index"])
    table = {"index": columns["index"].tolist()}
    if "tfds_id" in columns:
        table["tfds_id"] = columns["tfds_id"].tolist()
    table["label"] = labels["labels"].tolist()
    if noisy:
        chosen = np.zeros(n, np.int64)
        chosen[labels["noisy_index"]] = 1
        table["clean_label"] = labels["clean_labels"].tolist()
        table["noisy"] = chosen.tolist()
    for name, values in columns.items():
        if name not in ("index", "tfds_id"):
            table[name] = [f"{v:.9g}" for v in values.tolist()]  # round-trips float32
    return [dict(zip(table, cells, strict=True)) for cells in zip(*table.values(), strict=True)]


def write_scores_csv(config, workdir: str, path: str, scores_config=None) -> str | None:
    """Writes the per-example scores CSV of the run in `workdir` to `path`, atomically.

    Args:
      config: the run's config.
      workdir: its work directory (label_noise.npz).
      path: the CSV to write.
      scores_config: the config of the run in `config.score.workdir` when the scores come from
        there (its score files are read); None: this run's own.

    Returns:
      `path`, or None when the run has not written its labels or any score file yet.
    """
    labels = read_labels(workdir)
    source = config.score.workdir or workdir
    paths = score_files(config_check.score_spec(scores_config or config), source)
    if labels is None or not paths:
        logging.info("No per-example scores in %s yet; %s not written.", source, path)
        return None
    columns = score_columns(paths, len(labels["labels"]))
    noisy = bool(config.data.label_noise.fraction)
    files.write_csv(path, score_rows(columns, labels, noisy))
    return path
