"""The retraining plan: every run a config asks for, enumerated once, and the examples each keeps.

`planned_runs(config.prune)` lists the runs from the config alone, in plan order: the full-data
baseline, then per pruned fraction each score (and each offset of the 'offset' strategy)
followed by the random baseline of that fraction; `kept_sets` later gives each its kept indices.
Run names are also their folders under `WORKDIR/retrain/`:
`<score>_<strategy>_f<fraction>[_o<offset>]` (`el2n-1_hardest_f0.50`, `el2n-1_offset_f0.60_o25`),
`random_subset_f<fraction>` and `full`. The fraction has two decimals when they are exact and its
shortest exact repr otherwise (`f0.304`), so distinct fractions never share a folder; a plan
whose runs would share one is refused.

Usage:

    from datadiet_jax.pipeline import plan
    runs = plan.planned_runs(config.prune)       # [PlannedRun('full', None, 'full', 0.0), ...]
    for run, kept in plan.kept_sets(specs.prune, split, {"el2n@1": el2n.mean(0)}):
        print(run.name, len(kept))               # kept: [M] int64 dataset indices
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from datadiet_jax.scores import pruning

if TYPE_CHECKING:
    from datadiet_jax.pipeline.specs import PruneSpec


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One retraining run.

    name: its name and folder; score: the score that prunes ('el2n@1'), 'random' for the random
    baseline, None for the full data; strategy: a `pruning.STRATEGIES` name, or 'full';
    prune_fraction: the share of the examples removed; offset: hardest examples skipped
    ('offset' strategy; 0 otherwise).
    """

    name: str
    score: str | None
    strategy: str
    prune_fraction: float
    offset: int = 0


def fraction_tag(fraction: float) -> str:
    """The pruned fraction in run names: two decimals when they are exact ('0.50', '0.30'),
    else the shortest repr that gives the float back ('0.304'), so distinct fractions never
    share a run directory."""
    f = float(fraction)
    two = f"{f:.2f}"
    return two if float(two) == f else repr(f)


def run_name(score: str, strategy: str, fraction: float, offset: int = 0) -> str:
    """The name of one pruned run: run_name('el2n@1', 'hardest', 0.5) == 'el2n-1_hardest_f0.50';
    the 'offset' strategy adds its offset ('_o25')."""
    name = f"{re.sub(r'[^a-z0-9]+', '-', score)}_{strategy}_f{fraction_tag(fraction)}"
    return f"{name}_o{offset}" if strategy == "offset" else name


def planned_runs(prune_cfg) -> list[PlannedRun]:
    """Every retraining run of a config, in plan order (no data needed).

    Args:
      prune_cfg: `config.prune` (full_baseline, strategy, offsets, fractions, scores,
        random_baseline).
    """
    runs = [PlannedRun("full", None, "full", 0.0)] if prune_cfg.full_baseline else []
    strategy = prune_cfg.strategy
    offsets = prune_cfg.offsets if strategy == "offset" else (0,)
    for f in prune_cfg.fractions:
        for score in prune_cfg.scores:
            for offset in offsets:
                name = run_name(score, strategy, f, offset)
                runs.append(PlannedRun(name, score, strategy, f, offset))
        if prune_cfg.random_baseline:
            runs.append(PlannedRun(run_name("random", "subset", f), "random", "random", f))
    return runs


def check_unique(runs: Sequence[PlannedRun]) -> None:
    """Refuses a plan whose runs would share a folder."""
    names = [run.name for run in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"Retraining runs share the names {repeated}, so they would share a run directory; "
            "remove the repeated values from config.prune.fractions/scores/offsets."
        )


def check_windows(spec: PruneSpec, num_examples: int) -> None:
    """Refuses offsets and fractions that leave an empty or out-of-range window, before training."""
    if spec.strategy == "offset":
        for f in spec.fractions:
            num_keep = pruning.num_to_keep(num_examples, f)
            for offset in spec.offsets:
                pruning.check_window(num_examples, offset, num_keep)


def strategy_inputs(spec: PruneSpec, strategy: str) -> list[str]:
    """The files a strategy reads besides its score: the features of the feature selectors
    (`spec.features`), the mean prediction of 'dual_sampling' ('mean_prob')."""
    names = [spec.features] if strategy in pruning.FEATURE_STRATEGIES else []
    return names + (["mean_prob"] if strategy == "dual_sampling" else [])


def select_run(
    spec: PruneSpec, run: PlannedRun, split, scores: Mapping[str, np.ndarray]
) -> np.ndarray:
    """The sorted `[M] int64` dataset indices `run` trains on.

    Args:
      spec: the plan's selection settings (seed, features, CCS beta).
      run: a planned run.
      split: the training `data.Split` (labels for the class-balanced strategies, N).
      scores: {score name: [N] scores that prune} for every score of the plan.
    """
    if run.strategy == "full":
        return split.index.copy()
    if run.strategy == "random":
        return pruning.kept_indices(
            None,
            "random",
            prune_fraction=run.prune_fraction,
            seed=spec.seed,
            num_examples=split.num_examples,
        )
    options = {}
    score = scores[run.score]
    if run.strategy in pruning.FEATURE_STRATEGIES:
        options["features"] = scores[spec.features]
        if np.ndim(score) == 3:  # 'features@E' as the run's score: the features alone
            score = None
    if run.strategy == "dual_sampling":
        options["mean_probs"] = scores["mean_prob"]
    return pruning.kept_indices(
        score,
        run.strategy,
        prune_fraction=run.prune_fraction,
        labels=split.labels,
        seed=spec.seed,
        offset=run.offset,
        beta=spec.ccs_beta,
        **options,
    )


def kept_sets(
    spec: PruneSpec, split, scores: Mapping[str, np.ndarray], seconds: dict | None = None
) -> list[tuple[PlannedRun, np.ndarray]]:
    """The plan with its kept indices: [(PlannedRun, kept [M] int64)] in plan order.

    `seconds`, when given, receives {run name: wall seconds of its selection}.
    """
    out = []
    for run in spec.runs:
        start = time.perf_counter()
        out.append((run, select_run(spec, run, split, scores)))
        if seconds is not None:
            seconds[run.name] = round(time.perf_counter() - start, 4)
    return out
