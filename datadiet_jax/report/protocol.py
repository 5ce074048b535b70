"""The protocol of a study, the first section of its summary: how its numbers were trained.

Results tables of data pruning disagree on the points a reader needs to compare them: whether a
pruned training keeps the full data's number of steps or its number of epochs (so it trains
fewer steps), the batch size, how long a full training is, how many seeds a point averages, and
what the scores cost. Every study summary opens with these, read from the study's config and,
for the scoring cost, from its score run's recorded times.

- Retraining budget (`config.retrain.budget`): 'steps' is fixed steps, every retraining trains
  as many steps as a full-data training (`train.num_epochs` epochs of ceil(N / batch_size)
  steps, `training.input_pipeline.steps_per_epoch`) whatever it keeps; 'epochs' is fixed epochs,
  `train.num_epochs` epochs of the kept set, so a pruned training trains fewer steps.
- Scoring cost: the score run's K-seed training up to its last score epoch plus the computation
  of every score it writes, as a share of one full training of one seed, both timed in the
  score run itself (`methods.training_seconds`, `methods.score_seconds`, `methods.cost_row`: the
  basis of the methods benchmark's per-method costs). A run that recorded no epoch times gets
  the share of its training epochs instead, without the computation, and says so.

Usage:

    from datadiet_jax.report import protocol, summary
    fields = protocol.fields(config, num_examples=10_000)     # a study's retraining config
    section = protocol.section(fields, score_dirs={"score run": "runs/cpu/scores_noise00"})
    summary.write_summary("out/fig1_summary.md", "Figure 1", [section, *sections])

A study script built on `experiments/sweeps.py` gets the same section in one call, from the
config of one of its training items and the work directories of its score items:
`sweeps.protocol_section(scale, training_item, runs_dir, [score_item])`. A study without
retraining (its own K-seed training, Figures 3 and 4) passes `fields(config, n,
retraining=False)` and describes that training with `section(..., training="...")`. Sections
are (heading, table) pairs, so the protocol is the first of the sections a summary writer takes
(`summary.write_summary`, `methods.write_summary`, `speedup_summary.write_summary`).
"""

from __future__ import annotations

from collections.abc import Mapping

from absl import logging

from datadiet_jax.pipeline import config_check
from datadiet_jax.report import methods, run_summary
from datadiet_jax.training import input_pipeline

HEADING = "Protocol"

# How each `config.retrain.budget` is named in tables.
BUDGETS = {"steps": "fixed steps", "epochs": "fixed epochs"}


def fields(config, num_examples: int, *, retraining: bool = True) -> dict:
    """The protocol of a study's trainings, from its config.

    Args:
      config: the study's config (`ml_collections.ConfigDict`, or one read from `config.json`):
        `train.num_epochs`, `train.batch_size`, `retrain.budget`, `retrain.num_seeds`.
      num_examples: N, the full training set's size.
      retraining: False for a study that retrains nothing.

    Returns:
      {'budget': `retrain.budget` ('' without retraining), 'protocol': 'fixed steps',
      'fixed epochs' or 'no retraining', 'num_examples': N, 'batch_size': B, 'num_epochs': E
      (of a full-data training), 'steps_per_epoch': ceil(N / B), 'num_steps': E * ceil(N / B),
      'retrain_seeds': R per point (0 without retraining)}.

    Raises:
      ValueError: an unknown `retrain.budget`.
    """
    budget = str(config.retrain.budget) if retraining else ""
    if retraining and budget not in BUDGETS:
        raise ValueError(f"config.retrain.budget {budget!r} is not one of {sorted(BUDGETS)}.")
    batch_size, num_epochs = int(config.train.batch_size), int(config.train.num_epochs)
    steps_per_epoch = input_pipeline.steps_per_epoch(int(num_examples), batch_size)
    return {
        "budget": budget,
        "protocol": BUDGETS[budget] if retraining else "no retraining",
        "num_examples": int(num_examples),
        "batch_size": batch_size,
        "num_epochs": num_epochs,
        "steps_per_epoch": steps_per_epoch,
        "num_steps": num_epochs * steps_per_epoch,
        "retrain_seeds": int(config.retrain.num_seeds) if retraining else 0,
    }


def score_run_cost(score_dir: str) -> dict:
    """What a score run cost, as a share of one full training of one seed.

    Args:
      score_dir: the score run's work directory (its `config.json`, `scores/train/metrics.jsonl`
        and `scores/timings.jsonl`).

    Returns:
      {'basis': 'measured' (recorded times) or 'epochs' (no epoch times recorded: the epoch
      share, the computation left out), 'score_seeds': K, 'train_epochs': epochs the score
      stage trained, 'num_epochs': of a full training, 'cost_k_seeds': the K-seed run,
      'cost_one_seed': the same per score seed}.
    """
    config = run_summary.read_config(score_dir)
    _, train_epochs = config_check.score_epochs(config)
    num_seeds, num_epochs = int(config.score.num_seeds), int(config.train.num_epochs)
    out = dict(score_seeds=num_seeds, train_epochs=train_epochs, num_epochs=num_epochs)
    try:
        timing = methods.training_seconds(score_dir)
    except ValueError as e:
        logging.warning("Scoring cost of %s from its epochs only: %s", score_dir, e)
        share = train_epochs / num_epochs
        return out | dict(basis="epochs", cost_k_seeds=num_seeds * share, cost_one_seed=share)
    computed = sum(methods.score_seconds(score_dir).values())
    row = methods.cost_row(
        "score run",
        train_epochs=train_epochs,
        compute_seconds=computed,
        num_epochs=num_epochs,
        timing=timing,
    )
    return out | dict(
        basis="measured", cost_k_seeds=row["cost_k_seeds"], cost_one_seed=row["cost_one_seed"]
    )


def cost_text(cost: Mapping) -> str:
    """A `score_run_cost` as one table cell."""
    k, epochs = cost["score_seeds"], f"{cost['train_epochs']} of {cost['num_epochs']} epochs"
    if cost["basis"] == "measured":
        return (
            f"{cost['cost_one_seed']:.3f} of one full training per score seed, "
            f"{cost['cost_k_seeds']:.3f} for its K={k} seeds ({epochs} of training and the "
            "computation of every score, timed in the score run)"
        )
    return (
        f"{cost['cost_one_seed']:.3f} of one full training per score seed, "
        f"{cost['cost_k_seeds']:.3f} for its K={k} seeds ({epochs}; no recorded times, so the "
        "share of training epochs, the score computation not counted)"
    )


def rows(protocol: Mapping, costs: Mapping[str, Mapping] | None = None, training: str = ""):
    """The protocol table: one {'setting', 'value'} row per field.

    Args:
      protocol: `fields`.
      costs: {label: `score_run_cost`} of the study's score runs (none: no row).
      training: what the study trains, for a study without retraining.

    Returns:
      list of {'setting': str, 'value': str}.
    """
    p = protocol
    full = f"{p['num_epochs']} epochs x {p['steps_per_epoch']} steps = {p['num_steps']} steps"
    if p["budget"] == "steps":
        budget = f"fixed steps: every retraining trains the full data's {p['num_steps']} steps"
    elif p["budget"] == "epochs":
        budget = (
            f"fixed epochs: every retraining trains {p['num_epochs']} epochs of its kept set "
            f"(ceil(kept / {p['batch_size']}) steps each; rounds of a pruning schedule), fewer "
            "steps when pruned"
        )
    budget = f"{budget} (retrain.budget={p['budget']})" if p["budget"] else "none"
    table = [
        ("retraining budget", budget),
        ("training", training),
        ("training examples N", str(p["num_examples"])),
        ("full-data training", full),
        ("batch size", str(p["batch_size"])),
        ("retraining seeds per point", str(p["retrain_seeds"]) if p["retrain_seeds"] else ""),
    ]
    table += [(f"scoring cost ({label})", cost_text(c)) for label, c in (costs or {}).items()]
    return [{"setting": k, "value": v} for k, v in table if v]


def section(
    protocol: Mapping, score_dirs: Mapping[str, str] | None = None, training: str = ""
) -> tuple[str, list[dict]]:
    """The protocol as a summary section, ('Protocol', `rows`), for `summary.write_summary`.

    Args:
      protocol: `fields`.
      score_dirs: {label: work directory} of the study's score runs, whose costs are listed.
      training: what the study trains, for a study without retraining.
    """
    costs = {label: score_run_cost(d) for label, d in (score_dirs or {}).items()}
    return HEADING, rows(protocol, costs, training)
