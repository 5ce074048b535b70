"""Files a run writes: score files with index and provenance (checked on load), and results.

Score files are `.npz` with `per_seed [K, N] float32`, `mean [N] float32`, `index [N] int64`
(dataset positions), `tfds_id [N] str` (each example's TFDS id, for TFDS sources only) and
`provenance` (a JSON string: dataset, split, N, label noise, data source, input kind, seeds, epoch,
model, config). `load_scores` refuses, in one line, a file that is unreadable, holds NaN, has the
wrong length or belongs to other data (or, unless transfer is allowed, another model or seed).
Every write is atomic (`training/files.py`), so a stopped run never leaves a half-written file.

Usage:

    from datadiet_jax.pipeline import artifacts
    artifacts.save_scores(path, per_seed, index, provenance)      # per_seed [K, N], index [N]
    scores = artifacts.load_scores(path, {"dataset": "fashion_mnist", "num_examples": N})
    scores["mean"], scores["provenance"]                           # [N] float32, dict
    results = artifacts.read_results(workdir)                      # WORKDIR/results.json
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
from absl import logging

from datadiet_jax.pipeline.config_base import ADDED_FIELDS
from datadiet_jax.scores import inputs
from datadiet_jax.training import files

# What to do about a damaged results.json: the last step of the run writes it again.
RESULTS_FIX = (
    "delete it and rerun the same command: the results are gathered again from the runs' "
    "result.json files"
)
# What reading a damaged .npz raises.
LOAD_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError)


def read_results(workdir: str) -> dict:
    """`WORKDIR/results.json`, with its score paths joined to `workdir`."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; run that work directory first.")
    out = files.read_json(path, fix=RESULTS_FIX)
    out["scores"] = {
        k: os.path.normpath(os.path.join(workdir, v)) for k, v in out["scores"].items()
    }
    return out


def save_scores(
    path: str, per_seed: np.ndarray, index: np.ndarray, provenance: dict, tfds_id=None
) -> None:
    """Saves a score file.

    Args:
      path: destination `.npz`.
      per_seed: [K, N] float32 scores of each seed, or [K, N, D] features of each seed (a
        features file; its `mean` is then [N, D]).
      index: [N] int64 dataset positions of the N examples.
      provenance: JSON-serializable dict (dataset, split, num_examples, label_noise, seeds, epoch,
        model, score, config).
      tfds_id: [N] str TFDS ids of the N examples, saved under `tfds_id`; None (a source without
        ids) leaves the key out.
    """
    per_seed = np.asarray(per_seed, np.float32)
    if per_seed.ndim not in (2, 3) or per_seed.shape[1] != len(index):
        raise ValueError(f"scores {per_seed.shape} do not match index of length {len(index)}")
    ids = {} if tfds_id is None else {"tfds_id": np.asarray(tfds_id, str)}
    if ids and ids["tfds_id"].shape != (len(index),):
        raise ValueError(f"tfds_id {ids['tfds_id'].shape} does not match index of {len(index)}")
    files.save_npz(
        path,
        per_seed=per_seed,
        mean=per_seed.mean(0),
        index=np.asarray(index, np.int64),
        provenance=np.asarray(json.dumps(provenance, sort_keys=True)),
        # 60,000 Fashion-MNIST ids took 13 MB as they are, 5x the scores; compressed, the whole
        # file took 2.7 MB (0.2 s).
        compressed=bool(ids),
        **ids,
    )


# The provenance fields that must agree for a score file to be used with a dataset.
MATCH_FIELDS = ("dataset", "split", "num_examples", "label_noise", "data_source", "inputs")
# What a file written before a field existed holds: TFDS data by name, images.
MATCH_DEFAULTS = {"data_source": None, "inputs": "images"}
# Fields that may differ only on purpose (`allow_transfer`): scores of another model or seed.
TRANSFER_FIELDS = ("model", "seed", "num_seeds")

# Score kinds whose files may hold +inf: forgetting gives +inf to never-learned examples.
_INF_KINDS = ("forgetting",)

# What to do about a refused score file, unless the caller knows better (`load_scores(fix=...)`).
DEFAULT_FIX = (
    "delete it and rerun the run that wrote it (its score stage recomputes it), or point "
    "config.score.workdir at a run with intact scores"
)


def load_scores(
    path: str, expect: dict | None = None, *, allow_transfer: bool = False, fix: str = DEFAULT_FIX
) -> dict:
    """Loads and checks a score file.

    Args:
      path: a file written by `save_scores`.
      expect: provenance values the file must match: every one of `MATCH_FIELDS` present in it
        always, and every one of `TRANSFER_FIELDS` present in it unless `allow_transfer`.
      allow_transfer: accept scores of another model, seed or number of seeds (with a warning
        naming what differs); `config.score.allow_transfer`.
      fix: what the message of a refused file tells the user to do (which file to delete, which
        run recomputes it); a file of another run is also described by its provenance.

    Returns:
      Dict with `per_seed [K, N]` (`[K, N, D]` in a features file), `mean [N]` (`[N, D]`),
      `index [N]`, `provenance` (dict), and `tfds_id [N]` when the file has it.

    Raises:
      ValueError: one-line message when the file is unreadable, is from another dataset, split,
        label-noise setting or N (or, without `allow_transfer`, another model or seed), has the
        wrong length or holds NaN scores (or infinite ones, except +inf forgetting scores).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Score file {path} does not exist; run the score stage first.")
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {
                k: np.asarray(f[k])
                for k in ("per_seed", "mean", "index", "tfds_id")
                if k in f.files or k != "tfds_id"
            }
            provenance = json.loads(str(f["provenance"]))
    except LOAD_ERRORS as e:
        raise ValueError(f"Score file {path} is unreadable ({type(e).__name__}); {fix}.") from None
    out["provenance"] = provenance
    n = len(out["index"])
    shape = out["per_seed"].shape
    if len(shape) not in (2, 3) or shape[1] != n or out["mean"].shape != shape[1:]:
        raise ValueError(
            f"Score file {path} is corrupt: {shape[1] if len(shape) > 1 else shape} scores for "
            f"{n} indices (per_seed {shape}); {fix}."
        )
    bad_mask = inputs.invalid_scores(out["per_seed"])
    if provenance.get("score") not in _INF_KINDS:
        bad_mask |= np.isposinf(out["per_seed"])
    if bad_mask.any():
        bad = np.flatnonzero(bad_mask.reshape(shape[0], n, -1).any(axis=(0, 2)))[:5]
        raise ValueError(
            f"Score file {path} holds NaN or infinite scores (e.g. examples {bad.tolist()}); {fix}."
        )
    expect = expect or {}
    owner = describe_run(provenance)
    for key in MATCH_FIELDS:
        have = provenance.get(key, MATCH_DEFAULTS.get(key))
        if key in expect and have != expect[key]:
            raise ValueError(
                f"Score file {path} is for {key}={have!r}, but this run has "
                f"{key}={expect[key]!r}: it belongs to {owner}; {fix}."
            )
    if "num_examples" in expect and n != expect["num_examples"]:
        raise ValueError(
            f"Score file {path} has {n} scores; this run has {expect['num_examples']}: it belongs "
            f"to {owner}; {fix}."
        )
    differ = [
        f"{key}={provenance.get(key)!r} (this run: {expect[key]!r})"
        for key in TRANSFER_FIELDS
        if key in expect and provenance.get(key) != expect[key]
    ]
    if differ and not allow_transfer:
        raise ValueError(
            f"Score file {path} is from another run: {', '.join(differ)}; set "
            "--config.score.allow_transfer=True to use it on purpose, or "
            f"{fix[0].lower()}{fix[1:]}."
        )
    if differ:
        logging.warning("Transferring scores of %s: %s", path, ", ".join(differ))
    return out


def describe_run(provenance: dict) -> str:
    """The run a score file comes from, in words: 'a run of fashion_mnist:train (N=128), model
    small_cnn, seed 0, 2 seeds, epoch 1'."""
    p = provenance
    noise = p.get("label_noise")
    noise_text = f", label noise {noise.get('fraction')}" if isinstance(noise, dict) else ""
    return (
        f"a run of {p.get('dataset')}:{p.get('split')} (N={p.get('num_examples')}{noise_text}), "
        f"model {p.get('model')}, seed {p.get('seed')}, {p.get('num_seeds')} seeds, epoch "
        f"{p.get('epoch')}"
    )


def diff_keys(a, b, prefix: str = "") -> set[str]:
    """The dotted keys whose values differ between two nested dicts. A key that one side lacks
    and the other holds at its default, a field added since (`config_base.ADDED_FIELDS`), does
    not differ: a record written before the field existed reads as its default."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            key = f"{prefix}{k}"
            if (k in a) != (k in b) and key in ADDED_FIELDS:
                if (a[k] if k in a else b[k]) == ADDED_FIELDS[key]:
                    continue
            out |= diff_keys(a.get(k), b.get(k), f"{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}
