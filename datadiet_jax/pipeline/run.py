"""The data-diet pipeline as resumable stages: data -> scores -> pruning -> retraining -> results.

The orchestrator only: each stage is a module of its own and writes its output into the work
directory, skipping work that is already there and still made from the same inputs
(`fingerprint`), so a stopped run resumes where it stopped and a changed input redoes the stages
after it. One process works in a work directory at a time (`workdir.hold`).

  WORKDIR/config.json                 the full config (a different score stage is refused)
  WORKDIR/label_noise.npz             noisy_index, labels, clean_labels
  WORKDIR/scores/<score>_epochNNN.npz per-seed [K, N] scores, mean, index, provenance
  WORKDIR/scores/train/               the K-seed score training: ckpt/, metrics.jsonl
  WORKDIR/retrain/<run>/              kept.npz (with its record), ckpt/, metrics.jsonl, result.json
  WORKDIR/tracking/                   TensorBoard event files, records.jsonl (`config.track`)
  WORKDIR/results.json, results.csv   every retraining run (CSV: one row per seed); the paths in
                                      results.json are relative to the work directory; its
                                      'environment': the processor and XLA_FLAGS (`machine`)

Usage:

    from configs import fashion_mnist
    from datadiet_jax.pipeline import run
    config = fashion_mnist.get_config("smoke")
    results = run.run(config, "runs/smoke")      # also written to runs/smoke/results.json
    run.is_current(config, "runs/smoke")         # True: finished, inputs unchanged
"""

from __future__ import annotations

import os

from datadiet_jax import models
from datadiet_jax.pipeline import (
    artifacts,
    config_check,
    data,
    fingerprint,
    interrupts,
    machine,
    plan,
    retrain,
    score_stage,
)
from datadiet_jax.pipeline import workdir as workdir_lib
from datadiet_jax.pipeline.config_base import NEUTRAL_FIELDS, config_to_dict
from datadiet_jax.scores import model_form
from datadiet_jax.training import files, initial, tracking


def run(config, workdir: str, *, wait: bool = False) -> dict:
    """Runs (or resumes) every stage; returns the results dict also written to results.json.

    The config is validated once into the stages' specs (`config_check.validate`); the stages
    see those, never the whole config.

    Args:
      config: the run's config.
      workdir: its work directory.
      wait: wait for another process working in `workdir` to finish (the figure sweeps) instead
        of refusing at once.
    """
    specs = config_check.validate(config)
    workdir_lib.check_writable(workdir)
    with interrupts.stage("data loading"):  # bad data fail here, before anything is written
        split, test_split = data.load_splits(config.data)
    model = models.build(config.model, split.num_classes)  # a model that does not fit: here too
    model_form.check_outputs(model, initial.sample_input(split), split.num_classes)
    track = tracking.session(os.path.join(workdir, "tracking"), config_check.track_writers(config))
    with workdir_lib.hold(workdir, wait=wait), interrupts.stage("setting up"), track:
        workdir_lib.check_config(workdir, config_to_dict(config))
        plan.check_windows(specs.prune, split.num_examples)
        noise_path = os.path.join(workdir, "label_noise.npz")
        if not os.path.exists(noise_path):
            files.save_npz(
                noise_path,
                noisy_index=split.noisy_index,
                labels=split.labels,
                clean_labels=split.clean_labels,
            )
        if specs.score.source_workdir:
            score_files = score_stage.external_scores(specs.score, specs.prune, split)
        else:
            with interrupts.stage("score training"):
                score_files = score_stage.score_stage(specs.score, workdir, model, split)
        with interrupts.stage("pruning"):
            scores = score_stage.pruning_scores(specs.score, specs.prune, split, score_files)
            hashes = fingerprint.score_hashes(score_files, workdir)
            seconds: dict = {}
            runs = [
                (run, kept, fingerprint.kept_record(specs.prune, run, hashes, split.num_examples))
                for run, kept in plan.kept_sets(specs.prune, split, scores, seconds)
            ]
            files.write_json(os.path.join(workdir, "selection_seconds.json"), seconds)
        results = retrain.retrain_stage(specs.retrain, workdir, model, split, test_split, runs)
        with interrupts.stage("writing results"):
            out = {
                "scores": {name: entry["file"] for name, entry in hashes.items()},
                "made_from": {"scores": hashes},
                "environment": machine.environment(),  # this process's processor and XLA_FLAGS
                "runs": results,
            }
            files.write_csv(os.path.join(workdir, "results.csv"), retrain.result_rows(results))
            files.write_json(os.path.join(workdir, "results.json"), out)
    return out


def is_current(config, workdir: str) -> bool:
    """Whether `workdir` holds the finished run of `config` whose inputs are unchanged: the same
    config (`config_base.NEUTRAL_FIELDS` may differ), its results written last, every score file
    and retraining result as recorded there. Reads only small files and hashes the score files
    (no data, no JAX)."""
    config_path = os.path.join(workdir, "config.json")
    results_path = os.path.join(workdir, "results.json")
    if not (os.path.exists(results_path) and os.path.exists(config_path)):
        return False
    recorded = files.read_json(config_path, fix=workdir_lib.CONFIG_FIX)
    if artifacts.diff_keys(recorded, config_to_dict(config)) - set(NEUTRAL_FIELDS):
        return False
    results = files.read_json(results_path, fix=artifacts.RESULTS_FIX)
    if "made_from" not in results:  # written before records existed
        return False
    for entry in results["made_from"]["scores"].values():
        path = os.path.join(workdir, entry["file"])
        if not os.path.exists(path) or fingerprint.file_sha256(path) != entry["sha256"]:
            return False
    for result in results["runs"]:
        path = os.path.join(workdir, "retrain", result["name"], "result.json")
        if not os.path.exists(path) or files.read_json(path, fix=retrain.RESULT_FIX) != result:
            return False
    return True
