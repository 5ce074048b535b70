"""Shared test setup: quiet TensorFlow, a persistent XLA cache, fixtures and small helpers.

The tests are grouped the way the code is (scores/, pipeline/, report/, dynamics/,
experiments/); the independent references they compare against live in `tests/references.py`.
Nothing here imports the pipeline at import time: the score tests also run where ml_collections
and TensorFlow are absent.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compiled XLA programs are cached on disk and shared by the test processes and the subprocesses
# they start (the entry point and figure scripts compile the same small programs many times).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import csv  # noqa: E402
import glob  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from tests.references import ROOT, make_split  # noqa: E402


@pytest.fixture
def synthetic_split():
    return make_split()


def train_cfg(**kw):
    """The base `config.train` with batch 16 and a checkpoint every epoch, updated by `kw`."""
    from datadiet_jax.pipeline.config_base import base_config

    cfg = base_config().train
    cfg.batch_size = 16
    cfg.checkpoint_every_epochs = 1
    cfg.update(kw)
    return cfg


def tiny_spec(ckpt_dir, **kw):
    """The `TrainSpec` of `train_tiny`: 2 seeds, 12 steps of 16, unless `kw` says otherwise."""
    from datadiet_jax.training import loop

    args = dict(
        train_cfg=train_cfg(),
        num_seeds=2,
        seed=0,
        purpose=1,
        num_steps=12,
        schedule_steps=12,
        ckpt_dir=str(ckpt_dir),
        augment=False,
    )
    args.update(kw)
    return loop.TrainSpec(**args)


def tiny_model(split):
    from datadiet_jax import models

    return models.get_model("small_cnn", split.num_classes, width=4)


def train_tiny(split, ckpt_dir, *, hooks=None, init_state=None, **kw):
    """`loop.fit` of a width-4 small CNN with `tiny_spec(ckpt_dir, **kw)`."""
    from datadiet_jax.training import loop

    spec = tiny_spec(ckpt_dir, **kw)
    return loop.fit(tiny_model(split), split, split.index, spec, hooks=hooks, init_state=init_state)


def read_rows(path):
    """The rows of a CSV file, as dicts."""
    with open(path) as f:
        return list(csv.DictReader(f))


def snapshot(runs_dir, scale="smoke"):
    """{path: (mtime_ns, size)} of every file under RUNS/<scale>/ (proves nothing was rewritten)."""
    out = {}
    for path in glob.glob(os.path.join(runs_dir, scale, "**", "*"), recursive=True):
        if os.path.isfile(path) and os.path.basename(path) != ".lock":  # the lock names its PID
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
    return out


def figure_dirs(tmp_path_factory, name):
    """(runs, out) folders under a fresh temporary root, with the figures' XLA cache enabled."""
    from experiments import sweeps  # imported lazily: score tests run without ml_collections

    root = tmp_path_factory.mktemp(name)
    runs, out = str(root / "runs"), str(root / "out")
    sweeps.enable_compilation_cache(runs)
    return runs, out


@pytest.fixture(scope="session")
def smoke_figures(tmp_path_factory):
    """(runs, out) of the smoke-scale figures, shared by every figure test module, so that the
    runs the figures share (the clean score run, the full and random baselines) train once per
    suite."""
    return figure_dirs(tmp_path_factory, "figures")


def smoke_config(**overrides):
    """The smoke-scale Fashion-MNIST small-CNN config with flattened `overrides`."""
    from datadiet_jax.pipeline.config_base import base_config, smoke

    config = smoke(base_config())
    config.data.name = "fashion_mnist"
    config.model.name = "small_cnn"
    config.update_from_flattened_dict(overrides)
    return config


def split_shape(n=128):
    """What score files record of a split: its name, split, size and normalization."""
    import types

    return types.SimpleNamespace(
        name="fashion_mnist", split="train", num_examples=n, mean=[0.286], std=[0.353]
    )


def restore_checkpoint(model, split, spec, step):
    """The stacked state a training of `spec` saved at `step` (its checkpoint, read back)."""
    from datadiet_jax.training import checkpoints, initial, k_step

    template = initial.initial_states(model, split, spec)
    ckpts = checkpoints.Checkpoints(spec.ckpt_dir)
    width = initial.num_outputs(model, split) if spec.dynamics_window else 0
    stats = k_step.init_stats(
        spec.num_seeds, split.num_examples, num_classes=width, dynamics_window=spec.dynamics_window
    )
    state, _ = ckpts.restore(step, template, stats)
    ckpts.close()
    return state


SMOKE_ARGS = ("--config=configs/fashion_mnist.py:smoke",)


def run_main(*args, timeout=600):
    """The entry point in a subprocess: `python -m datadiet_jax.main ARGS` (stderr captured)."""
    cmd = [sys.executable, "-m", "datadiet_jax.main", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(workdir, finished process) of one uninterrupted entry-point run of the smoke config,
    shared by the tests that compare against it or build on its scores; none may change it."""
    workdir = str(tmp_path_factory.mktemp("smoke_run") / "run")
    proc = run_main(*SMOKE_ARGS, f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, proc


def run_outputs(workdir):
    """{path relative to `workdir`: bytes} of every result a run writes: its config, label noise,
    score files, kept sets, retraining results and results tables (not checkpoints or logs)."""
    patterns = (
        "config.json",
        "label_noise.npz",
        "scores/*.npz",
        "retrain/*/kept.npz",
        "retrain/*/result.json",
        "results.json",
        "results.csv",
    )
    out = {}
    for pattern in patterns:
        for path in glob.glob(os.path.join(workdir, pattern)):
            with open(path, "rb") as f:
                out[os.path.relpath(path, workdir)] = f.read()
    return out


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups the tests for `pytest -n N --dist loadgroup` (`make test`): the users of a
    session-wide run (`smoke_run`, `smoke_figures`) in one group each, every other module in its
    own, so that each shared run and module fixture is made once, by one worker."""
    groups = {}
    for item in items:
        names = item.fixturenames
        group = (
            "smoke_run"
            if "smoke_run" in names
            else "figures"
            if "smoke_figures" in names
            else item.module.__name__
        )
        item.add_marker(pytest.mark.xdist_group(group))
        groups[item.nodeid] = group
    # The shared runs' groups, the largest, first: the workers take groups in this order, so
    # the small modules fill in at the end instead of one large group running alone.
    items.sort(key=lambda item: groups[item.nodeid] not in ("smoke_run", "figures"))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook; the suite also runs without it
def pytest_xdist_node_collection_finished(node, ids):
    """Stops a `--dist loadgroup` run whose test ids came back without their groups: every
    shared run would then be made once per worker, the suite taking minutes longer."""
    if node.config.getvalue("dist") == "loadgroup" and ids and not any("@" in i for i in ids):
        pytest.exit(
            "pytest-xdist's --dist loadgroup put no group in the test ids (a pytest version "
            "that drops them); install the versions of constraints.txt (make install).",
            returncode=3,
        )
