"""Stopped, killed and concurrent runs of the entry point, and work directories it cannot use.

Every stopped run is resumed with the same command and must end with the same files as the one
uninterrupted run of the suite (`smoke_run`), byte for byte.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from datadiet_jax.pipeline import workdir as workdir_lib
from tests.conftest import SMOKE_ARGS, run_main, run_outputs
from tests.references import ROOT


def _start(workdir):
    cmd = [sys.executable, "-m", "datadiet_jax.main", *SMOKE_ARGS, f"--workdir={workdir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def _stop_at(workdir, pattern, signum, timeout=300):
    """Starts a run, sends `signum` once a log line matches `pattern`; returns (rc, stderr)."""
    proc = _start(workdir)
    seen, deadline = [], time.time() + timeout
    for line in proc.stderr:
        seen.append(line)
        if re.search(pattern, line):
            proc.send_signal(signum)
            break
        assert time.time() < deadline, "".join(seen[-20:])
    else:
        raise AssertionError(f"the run ended before {pattern!r}:\n" + "".join(seen[-30:]))
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + rest


def _resume(workdir):
    proc = run_main(*SMOKE_ARGS, f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _assert_same_outputs(workdir, reference):
    got, want = run_outputs(workdir), run_outputs(reference)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, differ


def test_stopped_at_every_stage_then_resumed_gives_the_same_files(smoke_run, tmp_path):
    """Ctrl-C, SIGTERM and SIGKILL spread over the stages of one run, each followed by a rerun of
    the same command that is stopped again, then one that finishes."""
    reference, _ = smoke_run
    workdir = str(tmp_path / "w")
    stops = [
        (r"score training: step|Wrote grand scores at epoch 0", signal.SIGINT, "score training"),
        (r"el2n: \d+ examples", signal.SIGKILL, None),  # scoring at epoch 1
        (r"Retraining 2/3", signal.SIGTERM, "retraining el2n-1_hardest_f0.50"),
        (r"random_subset_f0\.50: \d+ steps .* in ", signal.SIGKILL, None),  # then the results
    ]
    for pattern, signum, stage in stops:
        rc, stderr = _stop_at(workdir, pattern, signum)
        if signum == signal.SIGKILL:
            assert rc == -signal.SIGKILL, stderr[-3000:]
            continue
        errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
        assert rc == 128 + signum, stderr[-3000:]  # 130 for SIGINT, 143 for SIGTERM
        assert "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr[-3000:]
        assert errors == [f"error: interrupted during {stage}; rerun the same command to resume"], (
            stderr[-3000:]
        )
    _resume(workdir)
    _assert_same_outputs(workdir, reference)


def test_second_process_on_one_workdir_exits_at_once(smoke_run, tmp_path):
    reference, _ = smoke_run
    workdir = str(tmp_path / "w")
    first = _start(workdir)
    lock = os.path.join(workdir, workdir_lib.LOCK_NAME)
    deadline = time.time() + 120
    while not (os.path.exists(lock) and open(lock).read().strip() == str(first.pid)):
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    start = time.time()
    second = run_main(*SMOKE_ARGS, f"--workdir={workdir}")
    assert second.returncode != 0 and time.time() - start < 60
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and f"in use by process {first.pid}" in errors[0], second.stderr[-2000:]
    assert "--workdir" in errors[0] and "Traceback" not in second.stderr
    assert "Retraining" not in second.stderr and "score training" not in second.stderr
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    _assert_same_outputs(workdir, reference)


def test_wait_holds_until_the_other_process_is_done(tmp_path):
    holder = _hold_in_child(tmp_path, 1.5)
    held_at = time.time()
    with pytest.raises(workdir_lib.WorkdirBusy, match=f"in use by process {holder.pid}"):
        with workdir_lib.hold(str(tmp_path)):
            pass
    with workdir_lib.hold(str(tmp_path), wait=True):
        waited = time.time() - held_at  # the holder keeps the lock for 1.5 s after 'held'
        assert open(tmp_path / workdir_lib.LOCK_NAME).read().strip() == str(os.getpid())
    assert waited > 1.0
    holder.wait()


@pytest.fixture
def unwritable(tmp_path):
    """A folder no process can write to, root included (immutable, or read-only for others)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    yield str(folder)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def _bad_workdir_error(workdir, *overrides):
    start = time.time()
    proc = run_main(*SMOKE_ARGS, f"--workdir={workdir}", *overrides)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "score training" not in proc.stderr
    assert time.time() - start < 60
    return errors[0]


def test_workdir_that_is_a_file_or_unwritable_gets_one_line(tmp_path, unwritable):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    assert "is a file" in _bad_workdir_error(a_file)
    assert a_file.read_text() == "keep me"
    line = _bad_workdir_error(unwritable)
    assert "not writable" in line and unwritable in line and "--workdir" in line
    line = _bad_workdir_error(os.path.join(unwritable, "run"))
    assert f"its parent {unwritable}" in line


def test_download_into_an_unwritable_data_dir_gets_one_line(tmp_path, unwritable):
    line = _bad_workdir_error(
        tmp_path / "w",
        "--config.data.name=mnist",
        "--config.data.download=True",
        f"--config.data.data_dir={unwritable}",
    )
    assert "Data directory" in line and "not writable" in line and "data_dir" in line
    assert not os.path.exists(tmp_path / "w")


def _hold_in_child(folder, seconds):
    """A child process that holds `folder`'s lock for `seconds` after printing 'held'."""
    code = (
        "import sys, time\nfrom datadiet_jax.pipeline import workdir\n"
        "with workdir.hold(sys.argv[1]):\n    print('held', flush=True)\n"
        "    time.sleep(float(sys.argv[2]))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "held"
    return child


def test_figure_sweeps_wait_for_a_shared_run_instead_of_refusing(tmp_path, caplog):
    from datadiet_jax.pipeline import data
    from experiments import sweeps
    from tests.conftest import smoke_config

    item_dir = tmp_path / "shared_item"
    config = smoke_config(**{"prune.strategy": "offset", "prune.offsets": (1000,)})
    # The run loads its data before it takes the lock: load them once here (TensorFlow's import,
    # TFDS), so that the run reaches the lock while the child still holds it.
    data.load_splits(config.data)
    child = _hold_in_child(item_dir, 1.5)
    start = time.time()
    # A window past N fails after the lock was taken.
    with caplog.at_level("INFO"), pytest.raises(ValueError, match="offset window"):
        sweeps._run_item(config, str(item_dir))
    assert time.time() - start > 1.0
    assert any(f"Waiting for process {child.pid}" in r.getMessage() for r in caplog.records)
    child.wait()
