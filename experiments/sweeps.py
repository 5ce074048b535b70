"""Sweeps shared by the figure scripts: items of runs, their configs, the runner, their results.

The scales (paper, cpu, smoke) are `configs/studies/`. A sweep is data: a list of items, each a
name plus flattened config overrides (`{'prune.strategy': 'offset', ...}`) applied to the scale's
base config. Every item runs as its own `datadiet_jax.pipeline.run.run` in
`RUNS/<scale>/<item name>`, so a finished item is skipped by
`run.run` and an interrupted one resumes. Item names are derived from their content, so two
figures that need the same run (the score runs, the full-data and random baselines) share one
work directory and train it once: two figure scripts started at once work side by side where
their items differ, and one waits for the other where they share one (`workdir.hold`).

Score runs are score-only (no pruning fractions, no baselines): one per (scale, label-noise
level). Every training item points `config.score.workdir` at the score run of its noise level, and
`run.run` checks the score files against its own data (dataset, split, label noise, N) before it
trains.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import types
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from configs.studies.scales import Scale, get_scale
from datadiet_jax.pipeline import artifacts, config_check, data, plan, retrain, run, score_stage
from datadiet_jax.pipeline import workdir as workdir_lib
from datadiet_jax.report import protocol
from datadiet_jax.training import files


def noise_tag(noise: float) -> str:
    """'noise00', 'noise10', ...: the label-noise percentage in item names."""
    return f"noise{round(100 * float(noise)):02d}"


def item(name: str, kind: str, noise: float, overrides: Mapping | None = None) -> dict:
    """A sweep item: {'name', 'kind' ('score' or 'train'), 'noise', 'overrides'}."""
    return {"name": name, "kind": kind, "noise": float(noise), "overrides": dict(overrides or {})}


def score_item(noise: float) -> dict:
    """The score-only run of one label-noise level (scores, no pruning, no baselines)."""
    prune = {"prune.scores": (), "prune.fractions": ()}
    prune |= {"prune.full_baseline": False, "prune.random_baseline": False}
    return item(f"scores_{noise_tag(noise)}", "score", noise, prune)


def training_item(
    name: str,
    noise: float,
    *,
    strategy: str = "hardest",
    scores: Sequence[str] = (),
    fractions: Sequence[float] = (),
    offsets: Sequence[int] = (0,),
    full: bool = False,
    random: bool = False,
) -> dict:
    """A retraining run on the scores of the score run of `noise`.

    Args:
      name: item name; the noise tag is appended ('baselines' -> 'baselines_noise00').
      noise: label-noise fraction.
      strategy: pruning strategy of `scores` (see `datadiet_jax.pruning.STRATEGIES`).
      scores: score names, e.g. ('el2n@1',); empty for baseline-only items.
      fractions: pruned fractions (of the scores and of the random baseline).
      offsets: windows of the 'offset' strategy (numbers of hardest examples skipped).
      full: train the full-data baseline.
      random: train a random subset at each fraction.

    Returns:
      The item.
    """
    overrides = {
        "prune.strategy": strategy,
        "prune.scores": tuple(scores),
        "prune.fractions": tuple(float(f) for f in fractions),
        "prune.offsets": tuple(int(o) for o in offsets),
        "prune.full_baseline": bool(full),
        "prune.random_baseline": bool(random),
    }
    return item(f"{name}_{noise_tag(noise)}", "train", noise, overrides)


def fig2_prune_fraction(scale: Scale) -> float:
    """The pruned fraction whose window keeps `fig2_keep_fraction` of the examples."""
    return round(1.0 - scale.fig2_keep_fraction, 6)


def baseline_item(scale: Scale, noise: float) -> dict:
    """Full data and a random subset of Figure 2's size at one noise level, shared by both
    figures (Figure 1 adds random subsets of its other fractions)."""
    fraction = fig2_prune_fraction(scale)
    return training_item("baselines", noise, fractions=(fraction,), full=True, random=True)


def make_config(scale: Scale, it: Mapping, runs_dir: str) -> ml_collections.ConfigDict:
    """The full config of an item: base config, noise level, its overrides, its score run."""
    config = scale.base_config()
    config.data.label_noise.fraction = float(it["noise"])
    if it["noise"]:
        config.update_from_flattened_dict(dict(scale.noisy_overrides))
    if it["kind"] == "train":  # an item may name another score run in its overrides
        config.score.workdir = workdir(runs_dir, scale, score_item(it["noise"]))
    config.update_from_flattened_dict(dict(it["overrides"]))
    return config


def workdir(runs_dir: str, scale: Scale, it: Mapping) -> str:
    """RUNS/<scale>/<item name>."""
    return os.path.join(runs_dir, scale.name, it["name"])


def num_train_examples(config) -> int:
    """N of a config: `data.num_train_examples`, or the size of the dataset's train split."""
    if config.data.num_train_examples:
        return int(config.data.num_train_examples)
    builder = data.get_builder(config.data.name, config.data.data_dir, config.data.download)
    return int(builder.info.splits["train"].num_examples)


def offsets_for(fractions: Sequence[float], num_examples: int) -> tuple[int, ...]:
    """Offsets floor(f * N) (a window of round((1 - f) * N) then still fits), without repeats."""
    return tuple(sorted({int(np.floor(float(f) * num_examples + 1e-9)) for f in fractions}))


def _shape_only(config, num_examples: int):
    # The score-file checks read only the split's name, split and size.
    return types.SimpleNamespace(name=config.data.name, split="train", num_examples=num_examples)


def check_sweep(scale: Scale, items: Sequence[Mapping], runs_dir: str) -> None:
    """Refuses a sweep with a bad config or an empty or out-of-range window, before any training.

    Raises:
      ValueError: naming the item and the problem.
    """
    names = [it["name"] for it in items]
    if len(set(names)) != len(names):
        raise ValueError(f"Sweep items repeat names {names}; give every item its own name.")
    for it in items:
        config = make_config(scale, it, runs_dir)
        try:
            specs = config_check.validate(config)
            plan.check_windows(specs.prune, num_train_examples(config))
        except ValueError as e:
            raise ValueError(f"Sweep item {it['name']}: {e}") from None


def check_score_files(scale: Scale, items: Sequence[Mapping], runs_dir: str) -> None:
    """Checks that every training item's score files exist and match its data, before training.

    Raises:
      ValueError: a score file is for another dataset, split, label-noise setting or N.
      FileNotFoundError: a score file is missing.
    """
    for it in items:
        if it["kind"] != "train":
            continue
        config = make_config(scale, it, runs_dir)
        specs = config_check.validate(config)
        split = _shape_only(config, num_train_examples(config))
        score_stage.external_scores(specs.score, specs.prune, split)


def enable_compilation_cache(runs_dir: str) -> None:
    """Caches compiled XLA programs in RUNS/.jax_cache unless a cache is configured already.

    Every retraining of a sweep compiles the same step function; the cache turns its second and
    later compilations into a lookup (about 6 s each on a CPU).
    """
    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update(
        "jax_compilation_cache_dir", os.path.abspath(os.path.join(runs_dir, ".jax_cache"))
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_sweep(scale: Scale, items: Sequence[Mapping], runs_dir: str) -> dict[str, dict]:
    """Runs (or resumes, or skips) every item: the score runs first, then the training runs.

    Every item's config and windows are checked before the first run, and every training item's
    score files before the first retraining.

    Args:
      scale: the scale.
      items: sweep items from `score_item` / `training_item`.
      runs_dir: root of the work directories.

    Returns:
      {item name: results dict of `run.run`}.
    """
    check_sweep(scale, items, runs_dir)
    score_items = [it for it in items if it["kind"] == "score"]
    train_items = [it for it in items if it["kind"] != "score"]
    results = {}
    for i, it in enumerate(score_items + train_items):
        if it is (train_items or [None])[0]:
            check_score_files(scale, train_items, runs_dir)
        start = time.time()
        logging.info("Item %d/%d: %s", i + 1, len(items), it["name"])
        results[it["name"]] = _run_item(
            make_config(scale, it, runs_dir), workdir(runs_dir, scale, it)
        )
        logging.info("Item %s done in %.1f s", it["name"], time.time() - start)
    return results


def _run_item(config, item_dir: str) -> dict:
    """`run.run`, except that a finished run whose inputs are unchanged (`run.is_current`) is
    read back without loading data. Another figure working in the same folder is waited for."""
    if run.is_current(config, item_dir):
        logging.info("Finished already: %s", item_dir)
        return files.read_json(os.path.join(item_dir, "results.json"))
    return run.run(config, item_dir, wait=True)


@contextlib.contextmanager
def study_workdir(item_dir: str, saved: Mapping):
    """Holds a study's work directory for the block (waiting for another figure working there)
    and records or checks its settings `saved` (`workdir.check_config`)."""
    workdir_lib.check_writable(item_dir)
    with workdir_lib.hold(item_dir, wait=True):
        workdir_lib.check_config(item_dir, json.loads(json.dumps(saved, default=list)))
        yield


def load_results(scale: Scale, it: Mapping, runs_dir: str) -> dict:
    """The saved `results.json` of an item, its score paths joined to its work directory."""
    return artifacts.read_results(workdir(runs_dir, scale, it))


def seed_rows(scale: Scale, it: Mapping, results: Mapping) -> list[dict]:
    """One row per (retraining run, seed) of an item's saved results."""
    rows = []
    for row in retrain.result_rows(results["runs"]):
        row = {"scale": scale.name, "item": it["name"], **row}
        row["score"] = row["score"] or ""
        row["noise_fraction"] = row.pop("label_noise")
        rows.append(row)
    return rows


def run_and_collect(scale_name, runs_dir: str, out_dir: str, fig: str, sweep_fn, collect_fn):
    """Runs (or resumes) a figure's sweep and writes its CSV (OUT/<fig>.csv).

    Returns:
      (scale, items, rows, csv_path).
    """
    scale = get_scale(scale_name)
    items = sweep_fn(scale)
    start = time.time()
    run_sweep(scale, items, runs_dir)
    logging.info("%s sweep (%s) done in %.1f s", fig, scale.name, time.time() - start)
    rows = collect_fn(scale, items, runs_dir)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, f"{fig}.csv")
    files.write_csv(csv_path, rows)
    return scale, items, rows, csv_path


def protocol_section(
    scale: Scale, it: Mapping, runs_dir: str, score_items: Sequence[Mapping] = ()
) -> tuple[str, list[dict]]:
    """The protocol section of a sweep's summary (`report.protocol`): the retraining of
    training item `it` and the scoring cost of each of `score_items`, labelled by its name."""
    config = make_config(scale, it, runs_dir)
    fields = protocol.fields(config, num_train_examples(config))
    score_dirs = {s["name"]: workdir(runs_dir, scale, s) for s in score_items}
    return protocol.section(fields, score_dirs)


def columns_first(rows, columns) -> list[dict]:
    """`rows` with `columns` first, in that order, then each row's other keys (CSV layout)."""
    first = list(columns)
    return [{k: r[k] for k in first} | {k: v for k, v in r.items() if k not in first} for r in rows]


def train_dirs(scale: Scale, items, runs_dir: str) -> dict[str, str]:
    """{item name: work directory} of a sweep's training items."""
    return {it["name"]: workdir(runs_dir, scale, it) for it in items if it["kind"] == "train"}
