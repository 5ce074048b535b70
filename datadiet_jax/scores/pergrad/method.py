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
at a time on CPU, gain most. So a call on an array of at least `MIN_BATCHES` batches times both
compiled programs on its first batch (`choose`) and keeps the faster, logging the choice once; a
shorter call or a stream keeps the sites (a stream's scores stay bit-identical to the same
examples given as an array).

Usage:

    from datadiet_jax.scores.pergrad import method as method_lib
    method = method_lib.sites_method(linen, form.logits, one, images)  # one seed's variables
    counts = method_lib.coverage(method, form.logits, one, images)  # {kind: n, 'fallback': n}
    best, first_result = method_lib.choose({method: fn, "vmap_grad": vmap_fn}, args)
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
MIN_BATCHES = 8  # calls of fewer batches keep the sites' plan untimed


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


def faster(programs: Mapping[str, Callable], args, repeats: int = REPEATS):
    """Times each compiled program on the same arguments; returns the fastest.

    Every program runs once untimed (compilation, warm-up), then `repeats` times each,
    interleaved, so load from other processes falls on all of them alike; the best run counts.

    Args:
      programs: {name: fn}, fn(*args) -> arrays.
      args: the arguments of every program (e.g. the first batch).
    Returns:
      (name of the fastest, {name: best seconds}, {name: the first run's result}).
    """
    results = {name: jax.block_until_ready(fn(*args)) for name, fn in programs.items()}
    best = dict.fromkeys(programs, math.inf)
    for _ in range(repeats):
        for name, fn in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.get), best, results


def choose(programs: Mapping[str, Callable], args) -> tuple[str, object]:
    """`faster`, logged once: (the fastest program's name, its result on `args`).

    Args:
      programs: {method: compiled batch program}, the plan's first and 'vmap_grad'.
      args: the first batch's arguments.
    """
    best, seconds, results = faster(programs, args)
    logging.info(
        "GraNd: first batch (compiled, best of %d) %s; using %s for this call.",
        REPEATS,
        ", ".join(f"{m} {t:.4g} s" for m, t in seconds.items()),
        best,
    )
    return best, results[best]
