"""Progress in a notebook (`scores/notebook_logs.py`): the notebook helpers, called without
`app.run` or any absl setting, log progress with a rate and an ETA, and no orbax lines."""

import os
import re
import subprocess
import sys

from tests.references import ROOT

SCRIPT = """
import sys
import flax.linen as nn
import numpy as np
from absl import logging
if sys.argv[2] == "warning":
    logging.set_verbosity(logging.WARNING)  # the user's own setting is kept
from datadiet_jax.scores import progress
progress.EVERY_S = 0.0  # a line at every step: the run is short
from datadiet_jax import grand_scores, pruned_dataset, split_from_arrays, train_seeds

class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))

rng = np.random.default_rng(0)
x = rng.integers(0, 255, (64, 8, 8, 1)).astype(np.uint8)
y = (np.arange(64) % 3).astype(np.int32)
trained = train_seeds(Linear(), (x, y), num_seeds=2, num_epochs=3, batch_size=16,
                      workdir=sys.argv[1])
grand_scores(trained.model, trained.variables, x.astype(np.float32), y, batch_size=16)
for batch in pruned_dataset(split_from_arrays(x, y), np.arange(32), batch_size=16,
                            num_epochs=2):
    pass
"""


def _notebook(tmp_path, verbosity="default"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-c", SCRIPT, str(tmp_path / "ckpts"), verbosity]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(tmp_path / "ckpts" / "ckpt")  # checkpoints were saved (orbax ran)
    return proc.stderr


def test_notebook_helpers_show_progress_with_rate_and_eta_and_no_orbax_lines(tmp_path):
    stderr = _notebook(tmp_path)
    rate_eta = r"[\d.]+ examples/s, ETA \d+s"
    assert re.search(rf"train_seeds: step \d+/12, {rate_eta} \(epoch", stderr), stderr[-2000:]
    assert re.search(rf"grand: example \d+/64, {rate_eta} x 2 seeds", stderr), stderr[-2000:]
    assert re.search(rf"pruned_dataset: step \d+/4, {rate_eta} batches", stderr), stderr[-2000:]
    assert "train_seeds: 12 steps" in stderr  # the closing line
    quiet = ("orbax", "checkpoint", "Checkpoint", "Created directory")
    noisy = [ln for ln in stderr.splitlines() if any(word in ln for word in quiet)]
    assert not noisy, noisy[:5]


def test_a_verbosity_the_user_set_is_kept(tmp_path):
    stderr = _notebook(tmp_path, "warning")
    assert "examples/s" not in stderr and "orbax" not in stderr
