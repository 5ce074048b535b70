"""The whole smoke pipeline as one job of 2 processes (JAX's distributed runtime, 4 simulated CPU
devices each, gloo collectives): one process killed in the score stage, then both rerun, it
ends with the results of the suite's single-process, single-device run (`smoke_run`).

The score training runs on a {'seed': 2, 'data': 4} mesh (the two seeds on the two processes),
the retrainings (one seed) on {'seed': 1, 'data': 8} (each batch split over both processes).
Within tolerance means: every score file's per-seed scores within 1e-5 of their largest value
(sums in another order; measured 2e-6), the forgetting counts and every kept set exactly, test
accuracies within one test example of 100 (measured equal).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from tests.conftest import SMOKE_ARGS
from tests.references import ROOT, cpu_devices_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_job(workdir):
    port, env = _free_port(), dict(cpu_devices_env(4), PYTHONUNBUFFERED="1")
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "datadiet_jax.main",
                *SMOKE_ARGS,
                f"--workdir={workdir}",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _finish(procs, timeout=400):
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return logs


def _kill_one_at(workdir, pattern, timeout=300):
    """Starts the job and SIGKILLs process 1 once its log matches `pattern`; process 0, left
    waiting for it in a collective, is killed too (as a cluster's launcher does)."""
    procs, seen = _start_job(workdir), []
    deadline = time.time() + timeout
    for line in procs[1].stderr:
        seen.append(line)
        if re.search(pattern, line):
            procs[1].send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline, "".join(seen[-20:])
    else:
        raise AssertionError(f"process 1 ended before {pattern!r}:\n" + "".join(seen[-30:]))
    procs[1].wait(timeout=60)
    try:
        procs[0].wait(timeout=5)
    except subprocess.TimeoutExpired:
        procs[0].kill()
    procs[0].communicate(timeout=60)
    return "".join(seen)


def _scores(workdir):
    out = {}
    for name in sorted(os.listdir(os.path.join(workdir, "scores"))):
        if name.endswith(".npz"):
            with np.load(os.path.join(workdir, "scores", name)) as f:
                out[name] = {k: f[k] for k in f.files}
    return out


def test_two_process_pipeline_killed_and_rerun_ends_with_the_single_process_results(
    smoke_run, tmp_path
):
    reference, _ = smoke_run
    workdir = str(tmp_path / "job")
    # Killed after the score training's last checkpoint and its first score file.
    first = _kill_one_at(workdir, r"Wrote el2n scores at epoch 1")
    assert "score training: training on a mesh {'seed': 2, 'data': 4}" in first
    assert not os.path.exists(os.path.join(workdir, "scores", "aum_epoch001.npz"))

    logs = _finish(_start_job(workdir))
    assert all("Results:" in log for log in logs), [log[-3000:] for log in logs]
    for log in logs:  # both restored the sharded checkpoint and redid only the missing work
        assert re.search(r"Resumed \S+/scores/train/ckpt at step 4/4", log), log[-3000:]
        assert "Wrote el2n scores" not in log and "Wrote aum scores at epoch 1" in log
        assert "full: training on a mesh {'seed': 1, 'data': 8}" in log

    got, want = _scores(workdir), _scores(reference)
    assert sorted(got) == sorted(want)
    for name, ref in want.items():
        np.testing.assert_array_equal(got[name]["index"], ref["index"], name)
        x, y = got[name]["per_seed"], ref["per_seed"]
        if name.startswith("forgetting"):
            np.testing.assert_array_equal(x, y, name)
        else:
            scale = np.max(np.abs(y))
            assert scale > 0 and np.max(np.abs(x - y)) <= 1e-5 * scale, (name, scale)
    runs = {r["name"]: r for r in json.load(open(os.path.join(workdir, "results.json")))["runs"]}
    want_runs = json.load(open(os.path.join(reference, "results.json")))["runs"]
    assert sorted(runs) == sorted(r["name"] for r in want_runs)
    for ref in want_runs:
        run = runs[ref["name"]]
        with np.load(os.path.join(workdir, "retrain", ref["name"], "kept.npz")) as f:
            kept = f["index"]
        with np.load(os.path.join(reference, "retrain", ref["name"], "kept.npz")) as f:
            np.testing.assert_array_equal(kept, f["index"], ref["name"])
        assert run["status"] == ref["status"] == ["ok"], run
        np.testing.assert_allclose(run["test_accuracy"], ref["test_accuracy"], atol=0.011)
    # One writer: every epoch's metrics line is there once.
    with open(os.path.join(workdir, "scores", "train", "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == sorted(set(steps)), steps


def test_a_job_on_a_work_directory_in_use_stops_at_once_in_every_process(tmp_path):
    from datadiet_jax.pipeline import workdir as workdir_lib

    workdir = str(tmp_path / "busy")
    with workdir_lib.hold(workdir):
        procs = _start_job(workdir)
        logs = _finish(procs, timeout=180)
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 1 and f"is in use by process {os.getpid()}" in log, log[-3000:]
    assert os.listdir(workdir) == [".lock"]  # nothing written
