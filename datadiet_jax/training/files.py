"""Files the trainer and the stages write: atomic, and from process 0 of a multi-process job.

Every write goes to a temporary file in the same folder and is renamed into place, so a stopped
run never leaves a half-written file; in a job of several processes, process 0 writes and the
others wait (`multihost.one_writer`).

Usage:

    from datadiet_jax.training import files
    files.write_json(path, {"accuracy": 0.9})
    files.append_line(metrics_path, json.dumps(record))      # one JSON line per record
    files.save_npz(path, features=x, index=idx)
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile

import numpy as np

from datadiet_jax.training import multihost


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Writes `payload` to `path` atomically (temp file + rename in the same folder); in a
    job of several processes, process 0 writes and the others wait (`multihost.one_writer`)."""
    with multihost.one_writer(path) as writes:
        if writes:
            _atomic_write(path, payload)


def append_line(path: str, line: str) -> None:
    """Appends `line` and a newline to `path` (process 0 of a multi-process job)."""
    with multihost.one_writer(path) as writes:
        if writes:
            with open(path, "a") as f:
                f.write(line + "\n")


def _atomic_write(path: str, payload: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_csv(path: str, rows: list[dict]) -> None:
    """Writes dict rows as CSV (columns: union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def save_npz(path: str, *, compressed: bool = False, **arrays) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
