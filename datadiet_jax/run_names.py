"""Names of the retraining runs, which are also their folders under `WORKDIR/retrain/`.

`<score>_<strategy>_f<fraction>[_o<offset>]` (`el2n-1_hardest_f0.50`, `el2n-1_offset_f0.60_o25`),
`random_subset_f<fraction>` and `full`. The fraction has two decimals when they are exact and
its shortest exact repr otherwise (`f0.304`), so distinct fractions never share a folder; a plan
whose runs would share one is refused.
"""

from __future__ import annotations

import re


def fraction_tag(fraction: float) -> str:
    """The pruned fraction in run names: two decimals when they are exact ('0.50', '0.30'),
    else the shortest repr that gives the float back ('0.304'), so distinct fractions never
    share a run directory."""
    f = float(fraction)
    two = f"{f:.2f}"
    return two if float(two) == f else repr(f)


def run_name(score: str | None, strategy: str, fraction: float) -> str:
    """The name of one run, e.g. run_name('el2n@1', 'hardest', 0.5) == 'el2n-1_hardest_f0.50'."""
    base = "full" if score is None else f"{re.sub(r'[^a-z0-9]+', '-', score)}_{strategy}"
    return base if score is None and strategy == "full" else f"{base}_f{fraction_tag(fraction)}"


def plan_names(config) -> list[str]:
    """Names of the retraining runs of a config, in plan order (no data needed)."""
    names = ["full"] if config.prune.full_baseline else []
    strategy = config.prune.strategy
    offsets = config.prune.offsets if strategy == "offset" else (0,)
    for f in config.prune.fractions:
        for name in config.prune.scores:
            for offset in offsets:
                suffix = f"_o{offset}" if strategy == "offset" else ""
                names.append(run_name(name, strategy, f) + suffix)
        if config.prune.random_baseline:
            names.append(run_name("random", "subset", f))
    return names


def check_unique(names: list[str]) -> None:
    """Refuses a plan whose runs would share a folder."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"Retraining runs share the names {repeated}, so they would share a run directory; "
            "remove the repeated values from config.prune.fractions/scores/offsets."
        )
