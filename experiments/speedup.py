"""Time to accuracy of pruning during training: test accuracy against wall-clock seconds and
examples seen, every schedule against the full data and static prune-then-retrain.

  python -m experiments.speedup --scale=cpu    # or: make reproduce-speedup [SCALE=paper|smoke]

Every arm trains R seeds for `train.num_epochs` epochs or rounds (`retrain.budget='epochs'`, so
a pruned training ends early) and logs each seed's test accuracy after every one
(`retrain.curve=True`): the full data; InfoBatch, RS2, SeTa and prune and continue
(`config.train.prune`) at two levels each; and static pruning, the hardest examples by the EL2N
scores of one short score run, retrained for as many epochs of the kept set. A static arm's
cost starts with the score run's: its training seconds (`scores/train/metrics.jsonl`), its
scoring seconds (`scores/timings.jsonl`) and the selection (`selection_seconds.json`), its steps
and its presentations. Seconds are those the runs record for their training steps: evaluation,
checkpoints and data loading are left out, and the first epoch of each process includes its
compilation.

Scales (`configs/studies/speedup.py`):
  paper: CIFAR-10, ResNet18, 200 epochs, 3 seeds, EL2N at epoch 20 (GPU).
  cpu: Fashion-MNIST (first 10,000 training images), small CNN, 6 epochs, 3 seeds, EL2N
    after epoch 1: 11 trainings and one 1-epoch score run.
  smoke: 256 examples, 2 epochs, 2 seeds, one level per kind, for tests.

Outputs: OUT/speedup.{png,pdf} (test accuracy against seconds and against examples seen, the
seeds' mean with their min-max range), OUT/speedup.csv (one row per arm, seed and epoch) and
OUT/speedup_summary.md (the protocol, `report.protocol`; then steps and wall time saved against
the full data, final accuracy, the cost at the full data's accuracy).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import app, logging

from configs.studies import speedup as study
from configs.studies.scales import Scale, scale_settings
from datadiet_jax.report import methods as methods_report
from datadiet_jax.report import speedup as report
from datadiet_jax.report import speedup_summary
from datadiet_jax.training import files
from experiments import cli, sweeps

CSV_COLUMNS = (
    "arm",
    "kind",
    "level",
    "seed",
    "epoch",
    "steps",
    "examples",
    "seconds",
    "test_accuracy",
    "status",
    "score_steps",
    "score_examples",
    "score_seconds",
    "scale",
)
SCORE_ITEM = "speedup_scores_noise00"


def speedup_scale(scale_name: str | Scale) -> Scale:
    """The scale with the study's base config (its N, seeds, score run and budget)."""
    scale, settings = scale_settings(scale_name, study.SPEEDUP_SCALES, "The speedup study")
    return dataclasses.replace(scale, base_config=lambda: settings.base_config(scale))


def _settings(scale: Scale) -> study.SpeedupScale:
    return study.SPEEDUP_SCALES[scale.name]


def arm_item(arm: study.Arm, score_epoch: int) -> dict:
    """The training item of one arm: the full data with the arm's schedule, or the static
    arm's hardest-EL2N subset (no full-data baseline)."""
    name = f"speedup_{arm.name}"
    if arm.kind == study.STATIC:
        return sweeps.training_item(
            name, 0.0, scores=(f"el2n@{score_epoch}",), fractions=(arm.level,)
        )
    it = sweeps.training_item(name, 0.0, full=True)
    if arm.kind != study.FULL:
        it["overrides"]["train.prune.schedule"] = arm.kind
        it["overrides"].update({f"train.prune.{k}": v for k, v in arm.settings.items()})
    return it


def sweep(scale: Scale, runs_dir: str) -> list[dict]:
    """The study's score run, then one training item per arm, each pointing at that score run
    (only the static arms read its files)."""
    settings = _settings(scale)
    score = sweeps.score_item(0.0) | {"name": SCORE_ITEM}
    own_scores = {"score.workdir": sweeps.workdir(runs_dir, scale, score)}
    items = [score]
    for arm in settings.arms:
        it = arm_item(arm, settings.score_epoch)
        it["overrides"].update(own_scores)
        items.append(it | {"arm": arm})
    return items


def score_cost(score_dir: str, num_examples: int) -> dict:
    """What the score run cost: {'steps', 'examples' (presentations per seed), 'seconds'}.

    Seconds are its training epochs' (`scores/train/metrics.jsonl`), its scores' computation
    (the last record of each score, `scores/timings.jsonl`) and the selections
    (`selection_seconds.json` of the static items, added by `collect`).
    """
    lines = files.read_jsonl(
        os.path.join(score_dir, "scores", "train", "metrics.jsonl"), fix=methods_report.LOG_FIX
    )
    if not lines:
        raise ValueError(f"{score_dir} records no score training (scores/train/metrics.jsonl).")
    epochs = _last_per_epoch(lines)
    seconds = sum(float(r["seconds"]) for r in epochs)
    seconds += sum(methods_report.score_seconds(score_dir).values())
    last = epochs[-1]
    examples = int(round(float(last["epoch"]) * num_examples))
    return {"steps": int(last["step"]), "examples": examples, "seconds": seconds}


def _last_per_epoch(lines: list[dict]) -> list[dict]:
    """One metrics line per epoch, the last written (a resumed training may log one twice)."""
    by_epoch = {round(float(r["epoch"]), 6): r for r in lines}
    return [by_epoch[e] for e in sorted(by_epoch)]


def arm_rows(arm: study.Arm, run_dir: str, result: dict, cost: dict) -> list[dict]:
    """One row per (seed, epoch) of one arm's training, its cost cumulative and starting from
    `cost` ({'steps', 'examples', 'seconds'} of what came before it: the score run, or 0)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    lines = _last_per_epoch(files.read_jsonl(path, fix=methods_report.LOG_FIX))
    seconds = cost["seconds"] + np.cumsum([float(r["seconds"]) for r in lines])
    rows = []
    for seed, status in enumerate(result["status"]):
        for line, total in zip(lines, seconds, strict=True):
            rows.append(
                {
                    "arm": arm.name,
                    "kind": arm.kind,
                    "level": arm.level,
                    "seed": seed,
                    "epoch": line["epoch"],
                    "steps": cost["steps"] + int(line["step"]),
                    "examples": cost["examples"] + int(line["examples"][seed]),
                    "seconds": round(float(total), 3),
                    "test_accuracy": line["test_accuracy"][seed],
                    "status": status,
                    "score_steps": cost["steps"],
                    "score_examples": cost["examples"],
                    "score_seconds": round(cost["seconds"], 3),
                }
            )
    return rows


def collect(scale: Scale, items, runs_dir: str) -> list[dict]:
    """One row per (arm, seed, epoch) of every arm's saved runs."""
    num_examples = sweeps.num_train_examples(scale.base_config())
    score_dir = sweeps.workdir(runs_dir, scale, {"name": SCORE_ITEM})
    score = score_cost(score_dir, num_examples)
    none = {"steps": 0, "examples": 0, "seconds": 0.0}
    rows = []
    for it in items:
        if it["kind"] != "train":
            continue
        arm, item_dir = it["arm"], sweeps.workdir(runs_dir, scale, it)
        (result,) = sweeps.load_results(scale, it, runs_dir)["runs"]
        cost = none
        if arm.kind == study.STATIC:
            selected = files.read_json(os.path.join(item_dir, "selection_seconds.json"))
            cost = score | {"seconds": score["seconds"] + sum(selected.values())}
        run_dir = os.path.join(item_dir, "retrain", result["name"])
        rows += arm_rows(arm, run_dir, result, cost)
    return sweeps.columns_first([r | {"scale": scale.name} for r in rows], CSV_COLUMNS)


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the sweep, then writes the figure, the CSV and the summary.

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path]}.
    """
    scale = speedup_scale(scale_name)
    items = sweep(scale, runs_dir)
    start = time.time()
    sweeps.run_sweep(scale, items, runs_dir)
    logging.info("Speedup sweep (%s) done in %.1f s", scale.name, time.time() - start)
    rows = collect(scale, items, runs_dir)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "speedup.csv")
    files.write_csv(csv_path, rows)
    figure = report.plot_speedup(rows, os.path.join(out_dir, "speedup"))
    summary_path = speedup_summary.write_summary(
        os.path.join(out_dir, "speedup_summary.md"),
        f"Pruning during training ({scale.name}): time and examples to accuracy",
        speedup_summary.summary_rows(rows),
        sweeps.protocol_section(scale, items[1], runs_dir, items[:1]),
    )
    return {"figure": figure, "csv": [csv_path], "summary": [summary_path]}


def main(argv):
    cli.main(argv, "Speedup", reproduce)


if __name__ == "__main__":
    app.run(main)
