"""The retraining stage: fresh seeds on each kept subset, evaluated, with a health status.

Each run of the plan (`plan.kept_sets`) lands in `WORKDIR/retrain/<run>/`: `kept.npz`, `ckpt/`,
`metrics.jsonl` and `result.json`. A finished run (its `result.json` exists) is skipped.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from absl import logging

from datadiet_jax.pipeline import artifacts, health, input_pipeline, keys, loop, train


def retrain_stage(config, workdir: str, model, split, test_split, runs) -> list[dict]:
    """Trains R fresh seeds on each kept subset and evaluates them; returns one result per run.

    Each result records, per seed, the test accuracy and loss, how well the seed fits its kept
    examples at the end and at initialization, and its status (`health`): 'ok', 'collapsed' or
    'diverged'. `mean_test_accuracy` averages the 'ok' seeds only; `num_left_out` counts the rest.

    Args:
      config, workdir, model: the run's config, work directory and model.
      split, test_split: the training split (labels as trained on) and the test split.
      runs: the plan, `[(plan.PlannedRun, kept [M] int64)]`.
    """
    full_steps = config.train.num_epochs * input_pipeline.steps_per_epoch(
        split.num_examples, config.train.batch_size
    )
    augment = input_pipeline.augments(config.data, split.images.shape)
    results = []
    for i, (run, kept) in enumerate(runs):
        run_dir = os.path.join(workdir, "retrain", run.name)
        result_path = os.path.join(run_dir, "result.json")
        if os.path.exists(result_path):
            results.append(artifacts.read_json(result_path))
            continue
        logging.info("Retraining %d/%d: %s on %d examples", i + 1, len(runs), run.name, len(kept))
        artifacts.save_npz(os.path.join(run_dir, "kept.npz"), index=kept)
        steps = full_steps
        if config.retrain.budget == "epochs":
            steps = config.train.num_epochs * input_pipeline.steps_per_epoch(
                len(kept), config.train.batch_size
            )
        spec = loop.TrainSpec(
            train_cfg=config.train, num_seeds=config.retrain.num_seeds, seed=config.seed,
            purpose=keys.Purpose.RETRAIN, num_steps=steps, schedule_steps=steps,
            ckpt_dir=os.path.join(run_dir, "ckpt"), augment=augment, name=run.name,
        )  # fmt: skip
        state, stats, _ = loop.train_seeds(model, split, kept, spec)
        eval_args = dict(batch_size=config.train.eval_batch_size, seed_axis=config.train.seed_axis)
        acc, loss = train.evaluate(model, state, test_split, **eval_args)
        init_state = loop.initial_states(model, split, spec)
        fit = fit_check(model, init_state, state, split, kept, **eval_args)
        result = dataclasses.asdict(run)
        result.update(num_kept=len(kept), steps=steps)
        result.update(_health_fields(run.name, acc, loss, fit, stats["nonfinite_step"]))
        result["label_noise"] = config.data.label_noise.fraction
        artifacts.write_json(result_path, result)
        results.append(result)
    return results


def fit_check(model, init_state, final_state, split, kept, *, batch_size: int, seed_axis: str):
    """How well K seeds fit their kept examples at initialization and at the end (eval mode).

    Args:
      model: Flax module.
      init_state, final_state: stacked `TrainState`s [K, ...] at initialization and at the end.
      split: the training `data.Split` (with the labels the training used).
      kept: [M] int indices the seeds trained on (`fit_sample` of them are read).
      batch_size, seed_axis: as in `train.evaluate`.

    Returns:
      {'init': {'accuracy': [K], 'loss': [K]}, 'final': {...}, 'majority': float}, numpy arrays.
    """
    idx = health.fit_sample(kept)
    sub = dataclasses.replace(
        split,
        images=split.images[idx],
        labels=split.labels[idx],
        index=split.index[idx],
        clean_labels=split.clean_labels[idx],
        noisy_index=np.zeros((0,), np.int64),
    )
    out = {"majority": health.majority_share(sub.labels)}
    for when, state in (("init", init_state), ("final", final_state)):
        acc, loss = train.evaluate(model, state, sub, batch_size=batch_size, seed_axis=seed_axis)
        out[when] = {"accuracy": acc, "loss": loss}
    return out


def _health_fields(name: str, acc, loss, fit: dict, nonfinite_step) -> dict:
    """The result fields of K seeds: status, test and training metrics, and the healthy mean."""
    nonfinite = np.asarray(nonfinite_step).tolist()
    status = health.statuses(fit["init"], fit["final"], nonfinite, fit["majority"])
    ok = [s == health.OK for s in status]
    usable = [s != health.DIVERGED for s in status]
    for k, s in enumerate(status):
        if s == health.COLLAPSED:
            logging.warning(
                "%s: seed %d collapsed: training accuracy %.3f on its kept examples, %.3f at "
                "initialization, majority label %.3f; its result is marked 'collapsed'.",
                name, k, fit["final"]["accuracy"][k], fit["init"]["accuracy"][k], fit["majority"],
            )  # fmt: skip
    return dict(
        status=status,
        test_accuracy=[float(a) if u else None for a, u in zip(acc, usable, strict=True)],
        test_loss=[float(v) if u else None for v, u in zip(loss, usable, strict=True)],
        mean_test_accuracy=float(np.mean(acc[ok])) if any(ok) else None,
        num_left_out=len(status) - sum(ok),
        train_accuracy=fit["final"]["accuracy"].tolist(),
        train_loss=fit["final"]["loss"].tolist(),
        init_train_accuracy=fit["init"]["accuracy"].tolist(),
        init_train_loss=fit["init"]["loss"].tolist(),
        majority_share=fit["majority"],
        nonfinite_step=nonfinite,
    )


def result_rows(results: list[dict]) -> list[dict]:
    """One CSV row per (run, seed), with the seed's status ('ok', 'collapsed' or 'diverged').

    A diverged seed's test accuracy is empty; a collapsed seed's is kept, and its status says
    that means must leave it out (`health.healthy`).
    """
    keys = ("score", "strategy", "prune_fraction", "offset", "num_kept", "label_noise", "steps")
    rows = []
    for r in results:
        status = r.get("status") or [health.OK] * len(r["test_accuracy"])
        train_acc = r.get("train_accuracy") or [None] * len(r["test_accuracy"])
        for seed, acc in enumerate(r["test_accuracy"]):
            rows.append(
                {"run": r["name"], **{k: r.get(k) for k in keys}, "seed": seed,
                 "status": status[seed], "train_accuracy": train_acc[seed], "test_accuracy": acc}
            )  # fmt: skip
    return rows
