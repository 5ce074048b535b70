"""What a rerun may change: the fields that change no result (`config_base.NEUTRAL_FIELDS`).

A copy of the suite's finished smoke run, with its score files and results removed, is resumed
with other evaluation and scoring batch sizes: nothing trains again, and the scores and results
come out as the uninterrupted run's.
"""

import glob
import json
import os
import shutil

import numpy as np
import pytest

from datadiet_jax.pipeline import config_check, fingerprint, run
from datadiet_jax.pipeline import workdir as workdir_lib
from datadiet_jax.pipeline.config_base import NEUTRAL_FIELDS, config_to_dict
from tests.pipeline.test_fingerprints import smoke_config, trainings  # noqa: F401 (a fixture)

# Batch sizes that divide neither N=128 training nor 100 test examples (the smoke config's are
# 64 and 100): the last batch is padded differently.
NEW_BATCHES = {"train.eval_batch_size": 7, "score.batch_size": 48}


def test_other_eval_and_score_batch_sizes_resume_with_equal_scores_and_results(
    smoke_run,
    tmp_path,
    trainings,  # noqa: F811
):
    reference, _ = smoke_run
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    scores = os.path.join(workdir, "scores")
    score_files = sorted(glob.glob(f"{scores}/el2n_*.npz") + glob.glob(f"{scores}/grand_*.npz"))
    assert len(score_files) == 3  # el2n@1, grand@0, grand@1: recomputed from the checkpoints
    for path in [*score_files, *glob.glob(os.path.join(workdir, "retrain", "*", "result.json"))]:
        os.remove(path)
    os.remove(os.path.join(workdir, "results.json"))
    config = smoke_config(**NEW_BATCHES)
    results = run.run(config, workdir)
    assert trainings == []  # scored and evaluated again from the checkpoints, nothing trained
    for path in score_files:
        with np.load(path) as new, np.load(path.replace(workdir, reference)) as old:
            # Float rounding is all a scoring batch size may change (48: bitwise equal here).
            np.testing.assert_allclose(new["per_seed"], old["per_seed"], rtol=1e-6, atol=0)
            np.testing.assert_array_equal(new["index"], old["index"])
    old_runs = {
        r["name"]: r for r in json.load(open(os.path.join(reference, "results.json")))["runs"]
    }
    assert len(results["runs"]) == 3
    for new in results["runs"]:
        old = old_runs[new["name"]]
        for key in ("test_accuracy", "train_accuracy", "init_train_accuracy", "status"):
            assert new[key] == old[key], (new["name"], key)  # counts: exactly equal
        for key in ("test_loss", "train_loss", "init_train_loss"):
            np.testing.assert_allclose(new[key], old[key], rtol=1e-6, err_msg=key)
    recorded = json.load(open(os.path.join(workdir, "config.json")))
    assert recorded["train"]["eval_batch_size"] == 7 and recorded["score"]["batch_size"] == 48
    assert run.is_current(config, workdir)
    assert run.is_current(smoke_config(), workdir)  # the batch sizes are no part of its identity


def test_neutral_fields_are_accepted_and_every_other_field_is_refused(tmp_path):
    workdir = str(tmp_path / "w")
    config = smoke_config()
    workdir_lib.check_config(workdir, config_to_dict(config))
    open(os.path.join(workdir, "label_noise.npz"), "w").close()  # a run with an output
    changed = smoke_config(
        **NEW_BATCHES,
        **{"train.seed_axis": "map", "train.checkpoint_every_epochs": 5, "train.mesh": "off"},
    )
    assert workdir_lib.check_config(workdir, config_to_dict(changed)) == sorted(
        [*NEW_BATCHES, "train.seed_axis", "train.checkpoint_every_epochs", "train.mesh"]
    )
    for field, value in (("train.batch_size", 16), ("score.num_seeds", 3), ("seed", 1)):
        with pytest.raises(ValueError, match=f"differs in {field}\\)"):
            workdir_lib.check_config(workdir, config_to_dict(smoke_config(**{field: value})))


def test_a_training_record_that_holds_a_neutral_field_still_stands():
    """A record written while train.eval_batch_size was recorded (work directories of earlier
    versions) matches a config with another value: the retraining is not redone."""
    kept = np.arange(9)
    config = smoke_config()
    old = fingerprint.training_record(config_check.retrain_spec(config), kept)
    for field in NEUTRAL_FIELDS:
        section, name = field.split(".")
        if section in old:
            old[section][name] = config[section][name]  # as an earlier version recorded it
    assert "eval_batch_size" in old["train"] and "seed_axis" in old["train"]
    new = fingerprint.training_record(config_check.retrain_spec(smoke_config(**NEW_BATCHES)), kept)
    assert "eval_batch_size" not in new["train"]
    assert fingerprint.changes(old, new) == []
    other = config_check.retrain_spec(smoke_config(**{"train.learning_rate": 0.5}))
    assert fingerprint.changes(old, fingerprint.training_record(other, kept)) == [
        "train.learning_rate"
    ]
