"""`python -m datadiet_jax.report --export=parquet`: the per-example table and the kept sets,
read back by pandas and by Hugging Face `datasets`, against the run's score and kept files."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np

from tests.references import ROOT


def test_parquet_export_loads_in_pandas_and_datasets_with_the_score_files_columns(
    smoke_run, tmp_path
):
    import datasets
    import pandas

    workdir = str(tmp_path / "run")
    shutil.copytree(smoke_run[0], workdir, ignore=shutil.ignore_patterns(".lock"))
    cmd = [sys.executable, "-m", "datadiet_jax.report", f"--workdir={workdir}", "--export=parquet"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = os.path.join(workdir, "report", "scores.parquet")
    table = pandas.read_parquet(path)
    hf = datasets.load_dataset("parquet", data_files=path, cache_dir=str(tmp_path / "hf"))["train"]
    assert hf.column_names == list(table.columns) and hf.num_rows == len(table) == 128
    labels = np.load(os.path.join(workdir, "label_noise.npz"))["labels"]
    el2n = np.load(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    np.testing.assert_array_equal(table["index"], el2n["index"])
    np.testing.assert_array_equal(table["tfds_id"], el2n["tfds_id"].astype(str))
    np.testing.assert_array_equal(table["label"], labels)
    np.testing.assert_array_equal(hf["label"], labels)
    names = {"el2n@1": "el2n_epoch001", "grand@0": "grand_epoch000", "aum": "aum_epoch001"}
    for name, stem in names.items():
        saved = np.load(os.path.join(workdir, "scores", f"{stem}.npz"))
        np.testing.assert_array_equal(table[name].to_numpy(), saved["mean"])
        np.testing.assert_array_equal(np.asarray(hf[name], np.float32), saved["mean"])
        for k in range(2):
            np.testing.assert_array_equal(table[f"{name}_seed{k}"], saved["per_seed"][k])
    kept_files = glob.glob(os.path.join(workdir, "retrain", "*", "kept.npz"))
    assert len(kept_files) == 3
    for kept_path in kept_files:
        name = kept_path.split(os.sep)[-2]
        kept = np.load(kept_path)["index"]
        out = os.path.join(workdir, "report", "kept", f"{name}.parquet")
        got = pandas.read_parquet(out)
        np.testing.assert_array_equal(got["index"], kept)
        np.testing.assert_array_equal(got["label"], labels[kept])
        ds = datasets.load_dataset("parquet", data_files=out, cache_dir=str(tmp_path / "hf"))
        assert ds["train"]["index"] == kept.tolist()
