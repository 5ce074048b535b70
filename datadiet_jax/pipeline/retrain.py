"""The retraining stage: fresh seeds on each kept subset, evaluated, with a health status.

Each run of the plan (`plan.kept_sets`) lands in `WORKDIR/retrain/<run>/`: `kept.npz` (the kept
indices and what they and the training are made from, `fingerprint`), `ckpt/`, `metrics.jsonl` and
`result.json`. A finished run whose record matches is skipped; one whose kept indices or training
settings changed is trained again from scratch, with one line saying why. A damaged `kept.npz` or
`result.json` is refused with one line naming it: deleting it redoes that run only (`KEPT_FIX`,
`RESULT_FIX`). Runs of equal-size kept sets may train as one stacked training (`stacked`).

Usage:

    from datadiet_jax.pipeline import retrain
    runs = [(run, kept, fingerprint.kept_record(specs.prune, run, hashes, split.num_examples))
            for run, kept in plan.kept_sets(specs.prune, split, scores)]
    results = retrain.retrain_stage(specs.retrain, workdir, model, split, test_split, runs)
    rows = retrain.result_rows(results)          # one CSV row per (run, seed)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
from absl import logging

from datadiet_jax.pipeline import artifacts, fingerprint, interrupts, stacked
from datadiet_jax.pipeline.specs import RetrainSpec
from datadiet_jax.training import files, health, initial, loop, multihost, train

# What to do about a damaged file of a retraining: what deleting it redoes.
KEPT_FIX = (
    "delete it and rerun the same command: this run is selected and trained again from scratch"
)
RESULT_FIX = (
    "delete it and rerun the same command: this run is evaluated again from its last checkpoint"
)


def retrain_stage(spec: RetrainSpec, workdir: str, model, split, test_split, runs) -> list[dict]:
    """Trains R fresh seeds on each kept subset and evaluates them; returns one result per run.

    Runs of equal-size kept sets train as one stacked training when `spec.stack` says so
    (`stacked`), each ending as its own run would. Each result records, per seed, the
    test accuracy and loss, how well the seed fits its kept
    examples at the end and at initialization, and its status (`health`): 'ok', 'collapsed' or
    'diverged'. `mean_test_accuracy` averages the 'ok' seeds only; `num_left_out` counts the rest.

    Args:
      spec: the retrainings (R seeds, budget, stacking, training settings).
      workdir, model: the run's work directory and model.
      split, test_split: the training split (labels as trained on) and the test split.
      runs: the plan, `[(plan.PlannedRun, kept [M] int64, kept record)]`; the kept record is
        `fingerprint.kept_record` of the run (what its kept set is selected from).
    """
    results: list = [None] * len(runs)
    pending = []
    for i, (run, kept, kept_from) in enumerate(runs):
        run_dir = os.path.join(workdir, "retrain", run.name)
        made_from = {"kept": kept_from, "training": fingerprint.training_record(spec, kept)}
        if prepare_run_dir(run_dir, run.name, kept, made_from):
            results[i] = files.read_json(os.path.join(run_dir, "result.json"), fix=RESULT_FIX)
        else:
            pending.append((i, run, kept, run_dir, made_from))
    batches = (
        stacked.groups(spec, split.num_examples, pending)
        if stacked.enabled(spec)
        else [[item] for item in pending]
    )
    done = len(runs) - len(pending)
    for group in batches:
        names = ", ".join(item[1].name for item in group)
        with interrupts.stage(f"retraining {names}"):
            for _, run, kept, _, _ in group:
                health.warn_if_small(run.name, len(kept), spec.train_cfg.batch_size)
            _log_start(group, done, len(runs))
            if len(group) == 1:
                trained = [_train_one(spec, model, (split, test_split), group[0])]
            else:
                members = [(run, kept, made_from) for _, run, kept, _, made_from in group]
                trained = stacked.train_group(spec, workdir, model, split, members)
            for (i, run, kept, run_dir, made_from), one in zip(group, trained, strict=True):
                result = run_result(spec, model, (split, test_split), run, kept, one)
                result["made_from"] = made_from
                files.write_json(os.path.join(run_dir, "result.json"), result)
                results[i] = result
            done += len(group)
    return results


def _log_start(group: list, done: int, num_runs: int) -> None:
    """One line saying which runs of the plan train now."""
    names = ", ".join(item[1].name for item in group)
    if len(group) == 1:
        logging.info(
            "Retraining %d/%d: %s on %d examples",
            done + 1,
            num_runs,
            names,
            len(group[0][2]),
        )
    else:
        logging.info(
            "Retraining %d-%d/%d (stacked): %s on %d examples each",
            done + 1,
            done + len(group),
            num_runs,
            names,
            len(group[0][2]),
        )


def _train_one(spec: RetrainSpec, model, splits: tuple, item) -> tuple:
    """(init state, final state, non-finite steps, steps trained) of one pending run trained
    on its own.
    splits: (training split, test split); the test split gives the learning curve and the
    target accuracy's check (`spec.curve`, `spec.target_accuracy`)."""
    (split, test_split), (_, run, kept, run_dir, _) = splits, item
    evaluate = None
    if spec.curve or spec.target_accuracy > 0:
        args = dict(batch_size=spec.train_cfg.eval_batch_size, seed_axis=spec.train_cfg.seed_axis)
        evaluate = lambda state: train.evaluate(model, state, test_split, **args)[0]  # noqa: E731
    ckpt_dir = os.path.join(run_dir, "ckpt")
    train_spec = stacked.train_spec(spec, split, len(kept), ckpt_dir, run.name, evaluate=evaluate)
    state, stats, step = loop.fit(model, split, kept, train_spec)
    return initial.initial_states(model, split, train_spec), state, stats["nonfinite_step"], step


def run_result(spec: RetrainSpec, model, splits: tuple, run, kept, trained: tuple) -> dict:
    """The result of one run's R trained seeds: test metrics, the fit check and the health.

    Args:
      spec: the retrainings.
      model: the model.
      splits: (training split, test split).
      run: the `plan.PlannedRun`.
      kept: its [M] kept indices.
      trained: (init state, final state, non-finite steps, steps trained) of its R seeds.
    """
    split, test_split = splits
    init, state, nonfinite, steps = trained
    train_cfg = spec.train_cfg
    eval_args = dict(batch_size=train_cfg.eval_batch_size, seed_axis=train_cfg.seed_axis)
    acc, loss = train.evaluate(model, state, test_split, **eval_args)
    fit = fit_check(model, init, state, split, kept, **eval_args)
    result = dataclasses.asdict(run)
    # The steps trained: the budget's, or fewer for a pruned training by rounds or one that
    # reached its target accuracy.
    result.update(num_kept=len(kept), steps=steps)
    result.update(_health_fields(run.name, acc, loss, fit, nonfinite))
    result["label_noise"] = spec.label_noise
    return result


def prepare_run_dir(run_dir: str, name: str, kept: np.ndarray, made_from: dict) -> bool:
    """Readies `run_dir` for the run `name`; returns whether its finished result still stands.

    The record in `kept.npz` is compared with `made_from` (`{'kept': fingerprint.kept_record,
    'training': fingerprint.training_record}`): another kept set or other training settings (or a
    folder without a record) clear the folder, with one line saying why, so the run trains from
    scratch; new score hashes that select the same examples only update the records.
    """
    kept_path = os.path.join(run_dir, "kept.npz")
    result_path = os.path.join(run_dir, "result.json")
    old_kept, old = read_kept(kept_path)
    if old is None and os.path.isdir(run_dir) and os.listdir(run_dir):
        _clear(run_dir, name, ["it holds no record of what it was made from"])
    elif old is not None and fingerprint.changes(old["training"], made_from["training"]):
        common = len(np.intersect1d(old_kept, kept))
        _clear(run_dir, name, _reasons(old, made_from, common))
    elif old is not None and fingerprint.changes(old["kept"], made_from["kept"]):
        logging.info(
            "%s: %s, but it keeps the same examples; its training stands.",
            name,
            "; ".join(_reasons(old, made_from)),
        )
        _save_kept(kept_path, kept, made_from)
        if os.path.exists(result_path):
            result = files.read_json(result_path, fix=RESULT_FIX)
            files.write_json(result_path, result | {"made_from": made_from})
    if not os.path.exists(kept_path):
        _save_kept(kept_path, kept, made_from)
    return os.path.exists(result_path)


def read_kept(kept_path: str) -> tuple[np.ndarray | None, dict | None]:
    """The kept indices `[M]` of a `kept.npz` and its `made_from` record (None for what is
    missing).

    Raises:
      ValueError: one line naming a damaged file, and `KEPT_FIX`.
    """
    if not os.path.exists(kept_path):
        return None, None
    try:
        with np.load(kept_path, allow_pickle=False) as f:
            record = json.loads(str(f["made_from"])) if "made_from" in f else None
            return np.asarray(f["index"]), record
    except artifacts.LOAD_ERRORS as e:
        raise ValueError(
            f"Kept set {kept_path} is unreadable ({type(e).__name__}); {KEPT_FIX}."
        ) from None


def read_record(kept_path: str) -> dict | None:
    """The `made_from` record of a `kept.npz` (None when the file or its record is missing)."""
    return read_kept(kept_path)[1]


def _save_kept(path: str, kept: np.ndarray, made_from: dict) -> None:
    record = np.asarray(json.dumps(made_from, sort_keys=True))
    files.save_npz(path, index=np.asarray(kept, np.int64), made_from=record)


def _clear(run_dir: str, name: str, reasons: list[str]) -> None:
    logging.warning("Retraining %s again from scratch: %s.", name, "; ".join(reasons))
    with multihost.one_writer(run_dir) as writes:
        if writes:
            shutil.rmtree(run_dir)


def _reasons(old: dict, new: dict, common: int | None = None) -> list[str]:
    """What changed between two records, for people: a score file, a setting, the kept set."""
    out = []
    for key in fingerprint.changes(old["kept"], new["kept"]):
        part, _, rest = key.partition(".")
        if part == "scores":
            score = rest.split(".")[0]
            entry = new["kept"]["scores"].get(score) or old["kept"]["scores"].get(score)
            out.append(f"the score file {entry['file']} changed")
        elif rest in fingerprint.SELECTION_FIELDS:
            out.append(f"config.prune.{rest} changed")
    training = fingerprint.changes(old["training"], new["training"])
    if "kept_sha256" in training:
        out.append(
            f"its kept set changed ({old['training']['num_kept']} -> "
            f"{new['training']['num_kept']} examples, {common} in common)"
        )
    settings = [k for k in training if k not in ("kept_sha256", "num_kept")]
    if settings:
        out.append(
            f"its training settings changed ({', '.join('config.' + k for k in settings[:4])})"
        )
    return list(dict.fromkeys(out)) or ["its record changed"]


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
        inputs=split.inputs[idx],
        labels=split.labels[idx],
        index=split.index[idx],
        clean_labels=split.clean_labels[idx],
        noisy_index=np.zeros((0,), np.int64),
        tfds_id=None if split.tfds_id is None else split.tfds_id[idx],
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
                name,
                k,
                fit["final"]["accuracy"][k],
                fit["init"]["accuracy"][k],
                fit["majority"],
            )
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
                {
                    "run": r["name"],
                    **{k: r.get(k) for k in keys},
                    "seed": seed,
                    "status": status[seed],
                    "train_accuracy": train_acc[seed],
                    "test_accuracy": acc,
                }
            )
    return rows
