"""Builds the real TFDS `fashion_mnist` dataset from Debian's `dataset-fashion-mnist` files.

Debian ships the original IDX files, but they are recompressed, so TFDS's checksum check rejects
them as a download or `manual_dir`. Instead the registered `fashion_mnist` builder is run with its
split generators pointed at the local files: its own `_generate_examples` parses them, and the
result is the ordinary TFDS dataset (same name, version, features and example order), loadable with
`tfds.load("fashion_mnist")` with no network. `make data` runs it.

Usage:

    python -m datadiet_jax.pipeline.prepare_data
    python -m datadiet_jax.pipeline.prepare_data --data_dir=DIR --source_dir=IDX_FOLDER
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import types

from absl import app, flags, logging

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
_FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_NUM_EXAMPLES = {"train": 60_000, "test": 10_000}


def prepare_fashion_mnist(data_dir: str | None = None, source_dir: str = DEBIAN_DIR) -> str:
    """Writes TFDS `fashion_mnist` into `data_dir` from the IDX files in `source_dir`.

    Args:
      data_dir: TFDS data directory; None means TFDS's default (`$TFDS_DATA_DIR` or
        `~/tensorflow_datasets`).
      source_dir: folder with the four `*-idx?-ubyte.gz` files.

    Returns:
      The builder's data directory. Does nothing when the dataset is already there.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    if builder.is_prepared():
        logging.info("fashion_mnist already prepared in %s", builder.data_dir)
        return builder.data_dir
    missing = [f for f in _FILES.values() if not os.path.exists(os.path.join(source_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} not found in {source_dir}; install them with "
            f"`apt-get install {DEBIAN_PACKAGE}` or let TFDS download fashion_mnist on a machine "
            "with internet."
        )
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for key, name in _FILES.items():
            paths[key] = os.path.join(tmp, name[: -len(".gz")])
            with (
                gzip.open(os.path.join(source_dir, name), "rb") as src,
                open(paths[key], "wb") as dst,
            ):
                shutil.copyfileobj(src, dst)

        def split_generators(self, dl_manager):
            del self, dl_manager  # The files are local; nothing is downloaded.
            return [
                tfds.core.SplitGenerator(
                    name=split,
                    gen_kwargs=dict(
                        num_examples=_NUM_EXAMPLES[split],
                        data_path=paths[f"{split}_data"],
                        label_path=paths[f"{split}_labels"],
                    ),
                )
                for split in ("train", "test")
            ]

        builder._split_generators = types.MethodType(split_generators, builder)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    logging.info("Prepared fashion_mnist in %s", builder.data_dir)
    return builder.data_dir


_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS default).")
_SOURCE_DIR = flags.DEFINE_string("source_dir", DEBIAN_DIR, "Folder with the IDX .gz files.")


def main(argv):
    del argv
    prepare_fashion_mnist(_DATA_DIR.value, _SOURCE_DIR.value)


if __name__ == "__main__":
    app.run(main)
