"""A run stopped in the middle of a stage: one `error:` line on stderr, and no traceback.

- A model that fails only at its fifth training call (a host callback raising, as a model
  checking its inputs on the host does) ends the entry point with the stage's line and the
  model's own message.
- A full disk met by orbax's checkpoint writer (an `OSError(ENOSPC)` raised in its writing
  thread) ends it with the full-disk line only; freeing space (the error gone) and rerunning
  resumes the run to the uninterrupted run's results.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from datadiet_jax.pipeline import interrupts, run
from tests.conftest import SMOKE_ARGS
from tests.pipeline.test_fingerprints import smoke_config
from tests.references import ROOT

# The model's own message, raised in its fifth train-mode call.
BROKEN = "FailingNet: input batch 5 holds a value it cannot take"


class FailingNet(nn.Module):
    """Dense on flattened inputs, whose train-mode calls are counted on the host; the fifth
    raises `BROKEN` (in the middle of the score training: 4 steps of 2 seeds)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        if train:
            jax.debug.callback(_count_training_call, x.sum())
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


_CALLS = []


def _count_training_call(total):
    _CALLS.append(total)
    if len(_CALLS) == 5:
        raise ValueError(BROKEN)


def _raise_broken(x):
    raise ValueError(BROKEN)


def _python(code, *args):
    """`python -c code ARGS` from the repository root (stderr captured)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


# The entry point, as `python -m datadiet_jax.main` runs it.
MAIN = (
    "from absl import app; from datadiet_jax import main; "
    "app.run(main.main, flags_parser=main.parse_flags)"
)


def _one_error_line(stderr):
    """The only `error:` line of `stderr`, which ends it; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr[-3000:]
    return errors[0]


def test_model_failing_mid_stage_gives_the_stage_line_with_its_own_message(tmp_path):
    model = "--config.model.name=tests.pipeline.test_stage_errors:FailingNet"
    proc = _python(MAIN, *SMOKE_ARGS, model, f"--workdir={tmp_path}/w")
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert line == f"error: score training stopped: ValueError: {BROKEN}"
    assert "callback failed" not in proc.stderr  # JAX's own report of it stays out


def test_error_line_words_each_kind_of_error(tmp_path):
    workdir = str(tmp_path)
    with_stage = RuntimeError(
        "INTERNAL: CpuCallback error: Traceback (most recent call last):\n"
        "  File \"model.py\", line 3, in cb\nKeyError: 'pixels'"
    )
    with pytest.raises(RuntimeError) as raised:
        with interrupts.stage("retraining full"):
            raise with_stage
    assert interrupts.error_line(raised.value, workdir) == (
        "retraining full stopped: KeyError: 'pixels'"
    )
    with pytest.raises(TypeError) as raised:  # the innermost stage is named
        with interrupts.stage("pruning"), interrupts.stage("scoring (el2n at epoch 1)"):
            raise TypeError("apply() got an unexpected keyword\nargument 'train'")
    assert interrupts.error_line(raised.value, workdir) == (
        "scoring (el2n at epoch 1) stopped: TypeError: apply() got an unexpected keyword "
        "argument 'train'"
    )
    assert interrupts.error_line(RuntimeError("a bug"), workdir) is None  # its traceback shows
    out = jax.ShapeDtypeStruct((), np.float32)
    failing = jax.jit(lambda x: jax.pure_callback(_raise_broken, out, x))
    with pytest.raises(Exception) as raised:  # JAX wraps it in its own runtime error
        with interrupts.stage("scoring (grand at epoch 0)"):
            failing(np.float32(1.0))
    assert interrupts.error_line(raised.value, workdir) == (
        f"scoring (grand at epoch 0) stopped: ValueError: {BROKEN}"
    )
    full = ValueError(f"RESOURCE_EXHAUSTED: write failed: {os.strerror(errno.ENOSPC)}")
    assert interrupts.error_line(full, workdir).startswith("the disk is full (no space left")


# The entry point with orbax's array writer failing as on a full disk, in its writing thread.
FULL_DISK = """
import errno, os
from orbax.checkpoint._src.serialization import serialization

async def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

serialization.async_serialize_from_host = no_space
""" + MAIN.replace("; ", "\n")


def test_full_disk_in_orbax_threads_is_one_line_and_the_rerun_resumes(smoke_run, tmp_path):
    reference, _ = smoke_run
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    shutil.rmtree(os.path.join(workdir, "retrain", "full"))  # its checkpoints are written again
    os.remove(os.path.join(workdir, "results.json"))
    proc = _python(FULL_DISK, *SMOKE_ARGS, f"--workdir={workdir}")
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert line.startswith(f"error: the disk is full (no space left to write in {workdir})")
    python_errors = re.findall(r"^E\d{4} .*\.py:\d+\].*$", proc.stderr, re.MULTILINE)
    assert python_errors == [] and "_SignalingThread" not in proc.stderr  # orbax's threads
    results = run.run(smoke_config(), workdir)  # space freed: the same command resumes
    with open(os.path.join(reference, "results.json")) as f:
        expected = {r["name"]: r["test_accuracy"] for r in json.load(f)["runs"]}
    assert {r["name"]: r["test_accuracy"] for r in results["runs"]} == expected
    assert np.isfinite(results["runs"][0]["test_loss"]).all()
