"""Files the trainer and the stages write: atomic, and from process 0 of a multi-process job.

Every write goes to a temporary file in the same folder and is renamed into place, so a stopped
run never leaves a half-written file (appended logs, `append_line`, excepted); in a job of several
processes, process 0 writes and the others wait (`multihost.one_writer`). A file damaged later
(a disk fault, a copy cut short, a log line cut by a crash) is refused on reading with one line
naming it and what to do.

Usage:

    from datadiet_jax.training import files
    files.write_json(path, {"accuracy": 0.9})
    files.append_line(metrics_path, json.dumps(record))      # one JSON line per record
    files.save_npz(path, features=x, index=idx)
    files.read_json(path)      # a damaged file: ValueError naming it and what to do
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


# What to do about a damaged file, unless its reader knows better.
DEFAULT_FIX = "delete it and rerun the same command: the stage that wrote it is redone"


def read_json(path: str, fix: str = DEFAULT_FIX):
    """The JSON value in `path`.

    Raises:
      ValueError: one line naming the file, when it is damaged (cut short, not JSON), and `fix`.
    """
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({_json_error(e)}); {fix}.") from None


def read_jsonl(path: str, fix: str = DEFAULT_FIX) -> list:
    """The records of a file of one JSON value per line (blank lines skipped; [] when missing).

    Raises:
      ValueError: one line naming the file and its first damaged line, and `fix`.
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    out = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(json.loads(line.decode()))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                where = f"line {number}: {_json_error(e)}"
                raise ValueError(f"{path} is damaged ({where}); {fix}.") from None
    return out


def _json_error(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    return "not UTF-8 text"


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
