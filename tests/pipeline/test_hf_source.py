"""Hugging Face and Arrow input: a DatasetDict saved to disk through the smoke pipeline's command
line (scores and labels in the dataset's row order, the docs' `Dataset.select(kept)` snippet),
parquet and arrow files read in row order, and one line for each kind of bad input."""

import json
import os
import re

import datasets
import numpy as np
import pandas as pd
import pytest

from datadiet_jax.pipeline import artifacts, data
from datadiet_jax.pipeline.config_base import config_to_dict
from tests.conftest import ROOT, run_main, smoke_config
from tests.pipeline.test_sources import refused

NUM_TRAIN, NUM_TEST, HW = 160, 100, 16
FEATURES = datasets.Features(
    {
        "img": datasets.Image(),
        "target": datasets.ClassLabel(num_classes=3),
        "serial": datasets.Value("int64"),
        "text": datasets.Value("string"),
    }
)


def _images(n, seed):
    """Learnable 16x16 grayscale images (the class sets the brightness) and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    noise = rng.integers(0, 60, (n, HW, HW))
    return (noise + 80 * labels[:, None, None]).astype(np.uint8), labels


def _dataset(n, seed):
    x, y = _images(n, seed)
    rows = {"img": list(x), "target": y, "serial": np.arange(n), "text": ["a"] * n}
    return datasets.Dataset.from_dict(rows, features=FEATURES), x, y


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """(folder of a DatasetDict saved with save_to_disk, {split: (images, labels)})."""
    folder = str(tmp_path_factory.mktemp("hf") / "my_hf")
    train, x, y = _dataset(NUM_TRAIN, 0)
    test, xt, yt = _dataset(NUM_TEST, 1)
    datasets.DatasetDict(train=train, test=test).save_to_disk(folder)
    return folder, {"train": (x, y), "test": (xt, yt)}


def hf_config(path, **overrides):
    keys = {"data.image_key": "img", "data.label_key": "target"}
    return smoke_config(**{"data.name": "hf", "data.hf.train": path, **keys, **overrides})


def _docs_snippet(title):
    """The first python block after the heading `title` of docs/your_model_and_data.md."""
    with open(os.path.join(ROOT, "docs", "your_model_and_data.md")) as f:
        page = f.read()
    section = page[page.index(title) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_a_saved_dataset_dict_runs_the_smoke_pipeline_in_row_order(hf_dir, tmp_path):
    folder, arrays = hf_dir
    workdir = str(tmp_path / "runs" / "hf")
    proc = run_main(
        "--config=configs/fashion_mnist.py:smoke",
        f"--workdir={workdir}",
        "--config.data.name=hf",
        f"--config.data.hf.train={folder}",
        "--config.data.image_key=img",
        "--config.data.label_key=target",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, y = arrays["train"]
    with np.load(os.path.join(workdir, "label_noise.npz")) as f:
        np.testing.assert_array_equal(f["labels"], y[:128])  # the rows' own labels, in order
    s = artifacts.load_scores(os.path.join(workdir, "scores", "el2n_epoch001.npz"))
    np.testing.assert_array_equal(s["index"], np.arange(128))
    assert s["mean"].shape == (128,) and "tfds_id" not in s
    source = s["provenance"]["data_source"]
    assert (source["kind"], source["path"], source["split"]) == ("huggingface", folder, "train")
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert all(r["status"] == ["ok"] for r in results["runs"])

    # The docs' snippet, run where its relative paths lead to this run and this dataset.
    os.makedirs(tmp_path / "data")
    os.symlink(folder, tmp_path / "data" / "my_hf")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = {}
        exec(_docs_snippet("## A Hugging Face dataset"), namespace)
    finally:
        os.chdir(cwd)
    kept = namespace["kept"]
    assert len(kept) == 64 and np.all(np.diff(kept) > 0)
    pruned = datasets.load_from_disk(str(tmp_path / "data" / "my_hf_pruned"))
    assert pruned["serial"][:] == kept.tolist()
    np.testing.assert_array_equal(np.asarray(pruned["target"][:]), y[kept])


def test_parquet_files_of_features_keep_their_row_order(tmp_path):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(150, 6)), rng.integers(0, 5, 150)
    # Two files of the training split, read in sorted order (a glob), one of the test split.
    pd.DataFrame({"x": list(x[:75]), "y": y[:75]}).to_parquet(tmp_path / "train-0.parquet")
    pd.DataFrame({"x": list(x[75:140]), "y": y[75:140]}).to_parquet(tmp_path / "train-1.parquet")
    pd.DataFrame({"x": list(x[140:]), "y": y[140:]}).to_parquet(tmp_path / "test.parquet")
    overrides = {"data.hf.test": str(tmp_path / "test.parquet"), "data.num_test_examples": 0}
    keys = {"data.image_key": "x", "data.label_key": "y"}
    config = hf_config(str(tmp_path / "train-*.parquet"), **overrides, **keys)
    train, test = data.load_splits(config.data)
    np.testing.assert_array_equal(train.inputs, x[:128].astype(np.float32))
    np.testing.assert_array_equal(train.labels, y[:128])
    np.testing.assert_array_equal(test.inputs, x[140:].astype(np.float32))
    assert train.kind == "features" and train.num_classes == max(y[:128].max(), y[140:].max()) + 1
    np.testing.assert_allclose(train.mean, x[:128].mean(0), rtol=1e-5, atol=1e-6)
    assert train.source["split"] is None and train.source["path"].endswith("train-*.parquet")


def test_parquet_and_arrow_images_are_decoded_in_row_order(tmp_path):
    train, x, y = _dataset(140, 2)
    test, xt, yt = _dataset(100, 3)
    train.select(range(70)).to_parquet(str(tmp_path / "train-0.parquet"))
    train.select(range(70, 140)).to_parquet(str(tmp_path / "train-1.parquet"))
    test.save_to_disk(str(tmp_path / "test"))
    overrides = {"data.hf.test": str(tmp_path / "test" / "*.arrow"), "data.num_train_examples": 0}
    tr, te = data.load_splits(hf_config(str(tmp_path / "train-*.parquet"), **overrides).data)
    np.testing.assert_array_equal(tr.inputs, x[..., None])
    np.testing.assert_array_equal(tr.labels, y)
    np.testing.assert_array_equal(te.inputs, xt[..., None])
    np.testing.assert_array_equal(te.labels, yt)
    assert tr.num_classes == 3 and tr.kind == "images"
    np.testing.assert_allclose(tr.mean, [x.mean() / 255], rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"data.hf.train": "/nowhere/my_hf"}, FileNotFoundError, "hf.train='/nowhere/my_hf' does"),
        ({"data.hf.train": None}, ValueError, "set --config.data.hf.train to a save_to_disk"),
        ({"data.image_key": "pixels"}, ValueError, r"image_key='pixels' is not a column of .*"),
        ({"data.image_key": "text"}, ValueError, "image_key='text' .* is <U1 .*, not images"),
        ({"data.label_key": "text"}, ValueError, "holds strings; .*class_encode_column"),
        ({"data.label_key": "img"}, ValueError, r"holds uint8 \(16, 16, 1\) per row, not one"),
        ({"data.hf.test_split": "val"}, ValueError, r"no split 'val' \(it has \['test', 'train'\]"),
        ({"data.name": "mnist"}, ValueError, "set --config.data.name=hf to read it"),
    ],
)
def test_bad_input_is_one_line_naming_the_setting(hf_dir, tmp_path, overrides, error, match):
    refused(hf_config(hf_dir[0], **overrides), tmp_path, error, match)


def test_a_folder_or_files_of_one_split_need_the_test_split(hf_dir, tmp_path):
    datasets.load_from_disk(hf_dir[0])["train"].save_to_disk(str(tmp_path / "one"))
    config = hf_config(str(tmp_path / "one"))
    refused(config, tmp_path, ValueError, "holds one split .* set --config.data.hf.test to")
    refused(hf_config(str(tmp_path)), tmp_path, FileNotFoundError, "save_to_disk did not write")


def test_token_ids_from_dataset_folders_and_ragged_rows(tmp_path):
    rng = np.random.default_rng(5)
    ids, y = rng.integers(0, 50, (30, 7)), rng.integers(0, 2, 30)
    features = datasets.Features(
        {"ids": datasets.Sequence(datasets.Value("int32")), "label": datasets.Value("int64")}
    )
    for split, rows in (("train", slice(0, 20)), ("test", slice(20, 30))):
        part = {"ids": ids[rows].tolist(), "label": y[rows]}
        datasets.Dataset.from_dict(part, features=features).save_to_disk(str(tmp_path / split))
    sizes = {"data.num_train_examples": 0, "data.num_test_examples": 0}
    config = smoke_config(
        **{"data.name": "hf", "data.hf.train": str(tmp_path / "train"), **sizes},
        **{"data.hf.test": str(tmp_path / "test"), "data.image_key": "ids"},
    )
    train, test = data.load_splits(config.data)
    assert train.kind == "tokens" and train.inputs.dtype == np.int32
    np.testing.assert_array_equal(train.inputs, ids[:20])
    np.testing.assert_array_equal(test.inputs, ids[20:])
    np.testing.assert_array_equal(test.labels, y[20:])
    ragged = {"ids": [[1, 2, 3], [4, 5]] * 10, "label": [0, 1] * 10}
    datasets.Dataset.from_dict(ragged, features=features).save_to_disk(str(tmp_path / "ragged"))
    config.data.hf.train = str(tmp_path / "ragged")
    refused(config, tmp_path, ValueError, "holds rows of different shapes; pad its rows")


def test_a_work_directory_from_before_data_hf_resumes_as_the_same_run():
    new = config_to_dict(smoke_config())
    old = json.loads(json.dumps(new))
    del old["data"]["hf"]  # config.json of a run written before the field existed
    assert artifacts.diff_keys(old, new) == set()
    old["data"]["hf"] = dict(new["data"]["hf"], train="/elsewhere")
    assert artifacts.diff_keys(old, new) == {"data.hf.train"}
