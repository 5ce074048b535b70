"""What each stage output was made from, so a rerun redoes exactly the stages whose inputs changed.

- A kept set (`retrain/<run>/kept.npz`) records the content hash of every score file it was
  selected from and the selection settings (`kept_record`).
- A retraining (`kept.npz` again, and its `result.json`) records the hash of its kept indices and
  the training settings (`training_record`). A rerun whose kept indices or training settings
  differ trains that run again from scratch; one whose scores changed but that still selects the
  same examples keeps its training and records the new score hashes.
- The results table (`results.json`) records every retraining's record and the score hashes, so
  that a finished run can be recognised without loading data (`run.is_current`).

Hashes are SHA-256 hex digests: of a file's bytes, or of an array's dtype, shape and bytes.

Usage:

    from datadiet_jax.pipeline import fingerprint
    hashes = fingerprint.score_hashes({"el2n@1": path}, workdir)   # {name: {'file', 'sha256'}}
    record = fingerprint.training_record(specs.retrain, kept)      # kept [M] int64
    fingerprint.changes(old_record, record)     # e.g. ['kept_sha256']; [] when unchanged
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from datadiet_jax.pipeline import artifacts, plan
from datadiet_jax.pipeline.config_base import NEUTRAL_FIELDS

if TYPE_CHECKING:
    from datadiet_jax.pipeline.specs import PruneSpec, RetrainSpec

# The config sections that decide a retraining, besides its kept set.
TRAINING_SECTIONS = ("data", "model", "train", "retrain")
# The `config.prune` (and `specs.PruneSpec`) fields that decide a kept set, besides its score,
# strategy and fraction.
SELECTION_FIELDS = ("num_score_seeds", "ccs_beta")


def file_sha256(path: str) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """The SHA-256 hex digest of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def score_hashes(score_files: Mapping[str, str], workdir: str) -> dict[str, dict]:
    """{score name: {'file': path relative to `workdir`, 'sha256': digest}}."""
    return {
        name: {"file": os.path.relpath(path, workdir), "sha256": file_sha256(path)}
        for name, path in sorted(score_files.items())
    }


def kept_record(spec: PruneSpec, run, scores: Mapping[str, dict], num_examples: int) -> dict:
    """What the kept set of `run` (a `plan.PlannedRun`) is selected from.

    Args:
      spec: the plan's selection settings.
      run: the planned run.
      scores: `score_hashes` of the run's score files (only `run.score`'s entry is recorded).
      num_examples: N of the training split.
    """
    names = [run.score, *plan.strategy_inputs(spec, run.strategy)]
    used = {name: scores[name] for name in names if name in scores}
    selection = {
        "score": run.score,
        "strategy": run.strategy,
        "prune_fraction": run.prune_fraction,
        "offset": run.offset,
        "seed": spec.seed,
        "num_examples": num_examples,
    }
    if run.score not in (None, "random"):
        selection |= {k: getattr(spec, k) for k in SELECTION_FIELDS}
    return {"scores": used, "selection": selection}


def training_record(spec: RetrainSpec, kept: np.ndarray) -> dict:
    """What a retraining is made from: its kept indices' hash and the training settings
    (`spec.settings`)."""
    return {
        "kept_sha256": array_sha256(np.asarray(kept, np.int64)),
        "num_kept": len(kept),
        "seed": spec.seed,
        **copy.deepcopy(spec.settings),
    }


def changes(old: Mapping | None, new: Mapping) -> list[str]:
    """The dotted keys whose values differ ('kept_sha256', 'retrain.num_seeds',
    'scores.el2n@1.sha256'), less `config_base.NEUTRAL_FIELDS`; ['(no record)'] when there is
    no old record."""
    if old is None:
        return ["(no record)"]
    # A record written while a field that changes no result was still recorded (e.g.
    # train.eval_batch_size) still stands.
    differ = artifacts.diff_keys(_plain(old), _plain(new))
    return sorted(k for k in differ if k not in NEUTRAL_FIELDS)


def _plain(obj):
    """`obj` as JSON would read it back (tuples become lists), so records compare as saved."""
    return json.loads(json.dumps(obj, sort_keys=True))
