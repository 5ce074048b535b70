"""Damaged files of a run: one line naming the file and what to do, and that advice works.

Each case damages one file of a copy of the suite's finished smoke run (cut short, as a full
disk or a copy cut short leaves it), checks the one-line refusal, then follows its advice
(delete the file, rerun) and checks that exactly the stage it names is redone and that the run
ends with the uninterrupted run's results.
"""

import glob
import json
import os
import shutil

import pytest

from datadiet_jax.pipeline import interrupts, run
from tests.conftest import SMOKE_ARGS, run_main
from tests.pipeline.test_fingerprints import (  # noqa: F401 (trainings: a fixture)
    EL2N_RUN,
    smoke_config,
    trainings,
)


def _cut_short(path):
    """Truncates `path` to about half its size, in the middle of a line."""
    with open(path, "r+b") as f:
        data = f.read()
        keep = len(data) // 2
        while b"\n" in data[keep - 2 : keep + 1]:  # not at a line's end
            keep -= 1
        f.truncate(keep)


def _copy(smoke_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(smoke_run[0], workdir)
    return workdir


def _accuracies(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return {r["name"]: r["test_accuracy"] for r in json.load(f)["runs"]}


# (file under the run's folder, what deleting it redoes, the trainings that rerun then).
CASES = {
    "kept.npz": ("selected and trained again from scratch", [EL2N_RUN]),
    "result.json": ("evaluated again from its last checkpoint", []),
    "metrics.jsonl": ("goes on from its last checkpoint", []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_damaged_run_file_is_one_line_and_deleting_it_redoes_that_run_only(
    smoke_run,
    tmp_path,
    trainings,  # noqa: F811
    name,
):
    workdir = _copy(smoke_run, tmp_path)
    path = os.path.join(workdir, "retrain", EL2N_RUN, name)
    if name == "metrics.jsonl":  # read when its training resumes: the run has no result yet
        os.remove(os.path.join(workdir, "retrain", EL2N_RUN, "result.json"))
    _cut_short(path)
    with pytest.raises(ValueError) as refused:
        run.run(smoke_config(), workdir)
    message = str(refused.value)
    assert "\n" not in message and path in message and "delete it" in message
    assert CASES[name][0] in message
    assert interrupts.error_line(refused.value, workdir) == message  # main prints it as it is
    os.remove(path)
    run.run(smoke_config(), workdir)
    assert trainings == CASES[name][1]
    assert _accuracies(workdir) == _accuracies(smoke_run[0])


def test_damaged_results_and_config_files_name_themselves(smoke_run, tmp_path):
    workdir = _copy(smoke_run, tmp_path)
    for name in ("results.json", "config.json"):
        path = os.path.join(workdir, name)
        shutil.copy(path, path + ".bak")
        _cut_short(path)
        with pytest.raises(ValueError, match="is damaged") as refused:
            run.is_current(smoke_config(), workdir)
        assert str(refused.value).startswith(f"{path} is damaged (not valid JSON: ")
        assert "delete it and rerun the same command" in str(refused.value)
        os.replace(path + ".bak", path)
    assert run.is_current(smoke_config(), workdir)


def test_unreadable_checkpoints_give_one_line_and_deleting_them_retrains_that_run(
    smoke_run, tmp_path
):
    """Every checkpoint of an unfinished retraining damaged: the entry point prints one line
    naming the folder (no orbax or event-loop tracebacks); deleting that folder retrains it."""
    workdir = _copy(smoke_run, tmp_path)
    run_dir = os.path.join(workdir, "retrain", EL2N_RUN)
    os.remove(os.path.join(run_dir, "result.json"))
    os.remove(os.path.join(workdir, "results.json"))
    chunks = glob.glob(os.path.join(run_dir, "ckpt", "*", "default", "d", "*"))
    assert len(chunks) >= 2  # the latest two steps
    for chunk in chunks:
        _cut_short(chunk)
    proc = run_main(*SMOKE_ARGS, f"--workdir={workdir}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    ckpt = os.path.join(run_dir, "ckpt")
    steps = sorted(int(step) for step in os.listdir(ckpt) if step.isdigit())
    assert errors == [
        f"error: No readable checkpoint in {ckpt} (steps {steps}); delete that directory to "
        "restart this training from the beginning."
    ]
    assert proc.stderr.rstrip().endswith(errors[0])
    shutil.rmtree(ckpt)
    run.run(smoke_config(), workdir)
    assert _accuracies(workdir) == _accuracies(smoke_run[0])


def test_damaged_logs_read_by_the_report_name_themselves(smoke_run, tmp_path):
    from datadiet_jax.report import methods

    workdir = _copy(smoke_run, tmp_path)
    assert methods.training_seconds(workdir)["num_seeds"] == 2
    for name, read in (
        ("train/metrics.jsonl", methods.training_seconds),
        ("timings.jsonl", methods.score_seconds),
    ):
        path = os.path.join(workdir, "scores", name)
        _cut_short(path)
        with pytest.raises(ValueError) as refused:
            read(workdir)
        message = str(refused.value)
        assert message.startswith(f"{path} is damaged (line ") and "\n" not in message
        assert "delete it and rerun that run's command" in message


def test_unreadable_score_training_checkpoint_is_one_line_and_deleting_it_redoes_the_scores(
    smoke_run,
    tmp_path,
    trainings,  # noqa: F811
):
    workdir = _copy(smoke_run, tmp_path)
    score_file = os.path.join(workdir, "scores", "el2n_epoch001.npz")
    os.remove(score_file)  # recomputed from the score training's checkpoint of epoch 1
    ckpt = os.path.join(workdir, "scores", "train", "ckpt")
    for chunk in glob.glob(os.path.join(ckpt, "*", "default", "d", "*")):
        _cut_short(chunk)
    with pytest.raises(ValueError) as refused:
        run.run(smoke_config(), workdir)
    message = str(refused.value)
    assert message.startswith(f"No readable checkpoint in {ckpt} (steps [")
    assert "delete that directory" in message and "\n" not in message
    shutil.rmtree(ckpt)
    run.run(smoke_config(), workdir)
    assert trainings == ["score training"]  # the score stage only: the retrainings stand
    with (
        open(score_file, "rb") as new,
        open(score_file.replace(workdir, smoke_run[0]), "rb") as old,
    ):
        assert new.read() == old.read()
    assert _accuracies(workdir) == _accuracies(smoke_run[0])
