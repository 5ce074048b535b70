"""Which exact method computes a model's GraNd: fast-rule sites, or plain `vmap(grad)`.

Three methods (`METHODS`) give the same exact numbers at different costs:

- 'linen_sites': the rules at Linen module calls (`linen_sites`, module interception), every
  other param by `vmap(grad)` restricted to it;
- 'jaxpr_sites': the rules at equations of the model's flat jaxpr (`jaxpr_sites`), which also see
  params used outside modules with a rule (a LayerNorm scale, a position embedding, a class
  token, an embedding lookup), the rest by `vmap(grad)`;
- 'vmap_grad': `vmap(grad)` of every param.

`sites_method` picks the site finder: Linen models use 'linen_sites' unless the jaxpr leaves fewer
params to the fallback; other models have only 'jaxpr_sites'. The sites are not always faster:
fallback params still need a per-example backward pass down to the deepest of them, and a Dense
layer over T positions costs its rule as much as `vmap(grad)` pays (`T * I * O`, or
`T^2 * (I + O)` by the Gram identity), while convolutions, which `vmap(grad)` runs one example
at a time on CPU, gain most. So the first call of a model and shapes on an array of at least
`MIN_BATCHES` batches races both compiled programs on its own first batches (`Race`): they take
turns, batch by batch, every result kept in the scores (both are exact, so the batches agree
with either program's to float rounding), each one's first run (its compilation) untimed, then
`REPEATS` timed runs of each (on CPU the guard's run of batch 0 is the sites' untimed first run);
the rest of the call, and later calls with the same signature (`scores/decisions.py`), use the
faster, and the choice is logged once. A shorter call or a
stream does not race: it uses the decision made earlier in the process, else the sites.

Usage:

    from datadiet_jax.scores.pergrad import method as method_lib
    method = method_lib.sites_method(linen, form.logits, one, images)  # one seed's variables
    counts = method_lib.coverage(method, form.logits, one, images)  # {kind: n, 'fallback': n}
    race = method_lib.Race({method: fn, "vmap_grad": vmap_fn})
    for args in batches:  # (variables, images, labels, mask) of each batch, on the devices
        result = race.run(args) if race.winner is None else race.programs[race.winner](*args)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import jax
from absl import logging

from datadiet_jax.scores.pergrad import jaxpr_sites, linen_norms

SITES_METHODS = ("linen_sites", "jaxpr_sites")
METHODS = (*SITES_METHODS, "vmap_grad")
REPEATS = 3  # timed runs of each program, interleaved; the best of each is compared
MIN_BATCHES = 2 * (1 + REPEATS)  # the batches a race of two programs scores; shorter calls skip it


def coverage(method: str, apply: Callable, variables, images, exclude=()) -> dict[str, int]:
    """Parameter counts on each fast-rule kind and on the `vmap(grad)` fallback.

    Args:
      method: one of SITES_METHODS.
      apply: `(params, state, images [B, ...]) -> logits [B, C]` of one model (no seed axis).
      variables: `{'params': ..., 'state': ...}` of one model.
      images: [B, ...] array or ShapeDtypeStruct.
      exclude: site keys left to the fallback.
    Returns:
      {kind: parameter count, ..., 'fallback': parameter count}.
    """
    if method == "linen_sites":
        linen_apply = lambda v, x: apply(v["params"], v["state"], x)  # noqa: E731
        return linen_norms.coverage(linen_apply, variables, images, exclude)
    params, state = variables["params"], variables["state"]
    leaves = jax.tree.leaves(params)
    sites, rest, _ = jaxpr_sites.find_sites(apply, params, state, images, exclude)
    counts: dict[str, int] = {}
    for s in sites:
        counts[s.kind] = counts.get(s.kind, 0) + sum(leaves[i].size for i in s.leaves)
    counts["fallback"] = sum(leaves[i].size for i in rest)
    return counts


def sites_method(linen: bool, apply: Callable, variables, images, sharded: bool = False) -> str:
    """The site finder of a model: 'linen_sites' or 'jaxpr_sites' (see the module docstring).

    Args:
      linen: whether the model is a Flax Linen module (`model_form.LinenModel`).
      apply, variables, images: as in `coverage`.
      sharded: whether the scores run inside `shard_map` (a mesh), where Linen models keep
        module interception (the flat jaxpr is traced outside the mesh's varying axes).
    """
    if not linen:
        return "jaxpr_sites"
    if sharded:
        return "linen_sites"
    linen = coverage("linen_sites", apply, variables, images)["fallback"]
    if not linen:
        return "linen_sites"
    jaxpr = coverage("jaxpr_sites", apply, variables, images)["fallback"]
    method = "jaxpr_sites" if jaxpr < linen else "linen_sites"
    logging.info(
        "GraNd: %s (fallback params: %d by module interception, %d by the jaxpr)",
        method,
        linen,
        jaxpr,
    )
    return method


def fastest(seconds: Mapping[str, float]) -> str:
    """The name with the fewest seconds (the first one on a tie)."""
    return min(seconds, key=seconds.get)


class Race:
    """Times compiled programs on successive real batches, every batch's result kept.

    The programs take turns (the one with the fewest runs next, in the given order), each run
    waited for. Each program's first run (compilation, warm-up) is untimed; once each has had
    `repeats` timed runs, the best run of each counts and `winner` is `fastest` of them. Other
    processes' load falls on all of them alike.

    Args:
      programs: {name: fn}, fn(*args) -> arrays, all computing the same values.
      repeats: timed runs of each (default `REPEATS`).
      warm: names whose untimed first run happened before the race (their compilation).
    Attributes:
      winner: the fastest name once the race is over, else None.
      best: {name: best timed seconds}.
    """

    def __init__(self, programs: Mapping[str, Callable], repeats: int | None = None, warm=()):
        self.programs = dict(programs)
        self.repeats = REPEATS if repeats is None else int(repeats)
        # A program in `warm` has had its untimed first run (e.g. the guard's run of batch 0).
        self.warm = frozenset(warm)
        self.runs = {name: int(name in self.warm) for name in self.programs}
        self.best = dict.fromkeys(self.programs, math.inf)
        self.spent = dict.fromkeys(self.programs, 0.0)  # every second, compilation included
        self.winner: str | None = None

    def run(self, args):
        """Runs the next program on `args` (already on the devices) and returns its result."""
        name = min(self.runs, key=self.runs.get)
        jax.block_until_ready(args)
        start = time.perf_counter()
        result = jax.block_until_ready(self.programs[name](*args))
        seconds = time.perf_counter() - start
        if self.runs[name]:
            self.best[name] = min(self.best[name], seconds)
        self.runs[name] += 1
        self.spent[name] += seconds
        if min(self.runs.values()) > self.repeats:
            self.winner = fastest(self.best)
        return result

    def timed_runs(self) -> int:
        """The runs timed so far (first runs excluded)."""
        return sum(max(0, n - 1) for n in self.runs.values())

    def overhead(self) -> float:
        """Seconds beyond what the winner would have taken on the others' batches: their runs
        (compilation included) less the winner's best time for each; 0 before a winner."""
        if self.winner is None:
            return 0.0
        per_batch = self.best[self.winner]
        return sum(
            max(0.0, self.spent[n] - (self.runs[n] - (n in self.warm)) * per_batch)
            for n in self.programs
            if n != self.winner
        )
