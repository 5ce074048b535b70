"""A run's per-example scores and kept sets as Parquet tables, for pandas and Hugging Face.

`write_parquet` writes into `WORKDIR/report/`:

  scores.parquet        one row per example, in the dataset's own order: index, tfds_id (when
                        the score files hold one), label (clean_label and noisy with label
                        noise, as in `score_export`), then per score file its seed mean
                        (`el2n@1`) and each seed's scores (`el2n@1_seed0`, ...), float32
  kept/<run>.parquet    one row per kept example of each retraining run: index, tfds_id,
                        label

The columns come from the same checked score files as `scores.csv`. pyarrow is imported only
here, when an export is asked for.

Usage:

    python -m datadiet_jax.report --workdir=runs/fm --export=parquet

    import pandas, datasets
    table = pandas.read_parquet("runs/fm/report/scores.parquet")
    ds = datasets.load_dataset("parquet", data_files="runs/fm/report/scores.parquet")["train"]
    my_hf_dataset.select(pandas.read_parquet("runs/fm/report/kept/el2n-1_hardest_f0.50.parquet")
                         ["index"])
"""

from __future__ import annotations

import io
import os

import numpy as np

from datadiet_jax.pipeline import artifacts, config_check, plan, retrain
from datadiet_jax.report import score_export
from datadiet_jax.training import files


def score_table(config, workdir: str, scores_config=None) -> dict[str, np.ndarray] | None:
    """The columns of `scores.parquet` ({name: [N] array}), or None before the run has written
    its labels or any score file."""
    labels = score_export.read_labels(workdir)
    spec = config_check.score_spec(scores_config or config)
    paths = score_export.score_files(spec, config.score.workdir or workdir)
    if labels is None or not paths:
        return None
    means = score_export.score_columns(paths, len(labels["labels"]))  # checked, same index
    table = {"index": means["index"].astype(np.int64)}
    if "tfds_id" in means:
        table["tfds_id"] = means["tfds_id"].astype(str)
    table["label"] = labels["labels"].astype(np.int64)
    if config.data.label_noise.fraction:
        noisy = np.zeros(len(table["index"]), np.bool_)
        noisy[labels["noisy_index"]] = True
        table["clean_label"], table["noisy"] = labels["clean_labels"].astype(np.int64), noisy
    for name, path in paths.items():
        per_seed = artifacts.load_scores(path)["per_seed"]
        if per_seed.ndim != 2:  # a features file: [K, N, D] is no column
            continue
        table[name] = np.asarray(means[name], np.float32)
        for k, row in enumerate(per_seed):
            table[f"{name}_seed{k}"] = np.asarray(row, np.float32)
    return table


def kept_tables(config, workdir: str, table: dict) -> dict[str, dict[str, np.ndarray]]:
    """{run name: columns index, tfds_id (when known), label} of each written kept set."""
    out = {}
    position = {int(i): p for p, i in enumerate(table["index"])}
    for run in plan.planned_runs(config.prune):
        kept, _ = retrain.read_kept(os.path.join(workdir, "retrain", run.name, "kept.npz"))
        if kept is None:
            continue
        rows = np.array([position[int(i)] for i in kept], np.int64)
        columns = {"index": np.asarray(kept, np.int64)}
        if "tfds_id" in table:
            columns["tfds_id"] = table["tfds_id"][rows]
        columns["label"] = table["label"][rows]
        out[run.name] = columns
    return out


def write_parquet(config, workdir: str, scores_config=None) -> list[str]:
    """Writes `scores.parquet` and `kept/<run>.parquet` of the run into `WORKDIR/report/`.

    Returns:
      The written paths (none before the run has written any score file).
    """
    table = score_table(config, workdir, scores_config)
    if table is None:
        return []
    out_dir = os.path.join(workdir, "report")
    paths = [os.path.join(out_dir, "scores.parquet")]
    _write(paths[0], table)
    for name, columns in kept_tables(config, workdir, table).items():
        paths.append(os.path.join(out_dir, "kept", f"{name}.parquet"))
        _write(paths[-1], columns)
    return paths


def _write(path: str, columns: dict[str, np.ndarray]) -> None:
    import pyarrow as pa  # only for the export
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    files.atomic_write_bytes(path, buf.getvalue())
