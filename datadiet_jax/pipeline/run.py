"""The data-diet pipeline as resumable stages: data -> scores -> pruning -> retraining -> results.

The orchestrator only: each stage is a module of its own and writes its output into the work
directory, skipping work that is already there, so a stopped run resumes where it stopped.

  WORKDIR/config.json                 the full config (a different config is refused)
  WORKDIR/label_noise.npz             noisy_index, labels, clean_labels
  WORKDIR/scores/<score>_epochNNN.npz per-seed [K, N] scores, mean, index, provenance
  WORKDIR/scores/train/               the K-seed score training: ckpt/, metrics.jsonl
  WORKDIR/retrain/<run>/              kept.npz, ckpt/, metrics.jsonl, result.json
  WORKDIR/results.json, results.csv   every retraining run (CSV: one row per seed)
"""

from __future__ import annotations

import os

from datadiet_jax import models
from datadiet_jax.pipeline import artifacts, config_check, data, plan, retrain, score_stage
from datadiet_jax.pipeline.config_base import config_to_dict


def run(config, workdir: str) -> dict:
    """Runs (or resumes) every stage; returns the results dict also written to results.json."""
    config_check.validate(config)
    data.get_builder(config.data.name, config.data.data_dir, config.data.download)
    split, test_split = data.load_splits(config.data)
    plan.check_windows(config, split.num_examples)
    artifacts.check_workdir(workdir, config_to_dict(config))
    noise_path = os.path.join(workdir, "label_noise.npz")
    if not os.path.exists(noise_path):
        artifacts.save_npz(noise_path, noisy_index=split.noisy_index, labels=split.labels,
                           clean_labels=split.clean_labels)  # fmt: skip
    model = models.build(config.model, split.num_classes)
    if config.score.workdir:
        score_files = score_stage.external_scores(config, split)
    else:
        score_files = score_stage.score_stage(config, workdir, model, split)
    scores = score_stage.pruning_scores(config, split, score_files)
    runs = plan.kept_sets(config, split, scores)
    results = retrain.retrain_stage(config, workdir, model, split, test_split, runs)
    out = {"workdir": os.path.abspath(workdir), "scores": score_files, "runs": results}
    artifacts.write_json(os.path.join(workdir, "results.json"), out)
    artifacts.write_csv(os.path.join(workdir, "results.csv"), retrain.result_rows(results))
    return out
