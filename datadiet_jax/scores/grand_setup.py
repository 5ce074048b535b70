"""GraNd's method for one call: the site finder, the first-batch guard and the faster program.

`plan` returns the call's `programs.Runner`. Made once per signature in a process
(`decisions.py`): the site finder (`pergrad/method.py`), the guard's verdict on its layer rules
on the first batch of every seed (`check_rules`, `pergrad/guard.py`; rerun per call when the
values hid a site from it), and, on the first array of enough batches, the race of the sites'
program against `vmap(grad)` on the call's own first batches (`pergrad.method.Race`), whose
results are kept and whose winner scores the rest and every later call. The guard's first-batch
result is reused where it can be.

Usage:

    runner, setup_seconds = grand_setup.plan(form, seed_axis, place, variables, placed, head, total)
    for i, batch in enumerate(batches):  # head first; total: N, or None for a stream
        scores, per_site = runner(i, batch)
    setup_seconds += runner.overhead()  # the race's extra seconds
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from datadiet_jax.scores import decisions, programs
from datadiet_jax.scores import model_form as model_form_lib
from datadiet_jax.scores.pergrad import guard
from datadiet_jax.scores.pergrad import method as method_lib


class Checked(NamedTuple):
    """The guard's outcome: `exclude` (site keys for the exact fallback), `first` (the first
    batch's result to reuse, or None), `trusted` (every passed site was judged, so the verdict
    holds at other values) and `first_seconds` (the run of the program that gave `first`)."""

    exclude: frozenset
    first: object
    trusted: bool
    first_seconds: float


def check_rules(model, method, seed_axis, place, variables, placed, first_batch) -> Checked:
    """Checks GraNd's layer rules on the first batch of every seed (see `pergrad/guard.py`).

    Args:
      model: the `ModelForm`; method: the site finder (`pergrad.method.SITES_METHODS`);
      seed_axis: a resolved mode; place: the call's `sharding.Placement`; variables: the
      stacked `{'params', 'state'}` as given (host); placed: the same on the devices;
      first_batch: the call's first padded batch `(images, labels, mask, count)`.
    Returns:
      `Checked(exclude, first, trusted, first_seconds)`.
    """
    start = time.perf_counter()
    decisions.count("guards")
    x, y, mask, count = first_batch
    on_cpu = jax.default_backend() == "cpu"  # XLA:CPU float32 dots are float32 at any precision
    with contextlib.nullcontext() if on_cpu else jax.default_matmul_precision("highest"):
        program = programs.batch_program(model, "grand", seed_axis, place.mesh, method=method)
        result = jax.block_until_ready(program(placed, place.put(x), place.put(y), place.put(mask)))
        first_seconds = time.perf_counter() - start
        idx = guard.checked_examples(place.fetch(result[0]), count)
        fast = {key: place.fetch(v)[:, idx] for key, v in result[1].items()}
    if not fast:  # no layer has a fast rule: nothing to check
        return Checked(frozenset(), result if on_cpu else None, True, first_seconds)
    exact_fn = programs.exact_program(model, method)
    num_seeds = len(next(iter(fast.values())))
    per_seed = (jax.tree.map(lambda v, k=k: v[k], variables) for k in range(num_seeds))
    exclude, unjudged = guard.verdict(
        exact_fn, fast, per_seed, jnp.asarray(x[idx]), jnp.asarray(y[idx]), positions=idx
    )
    logging.info(
        "grand guard: %d layers x %d seeds checked on %d examples in %.1f s; %d to the "
        "fallback; %s",
        len(fast),
        num_seeds,
        len(idx),
        time.perf_counter() - start,
        len(exclude),
        "rerun per call: gradients too small to judge " + ", ".join(sorted(map(str, unjudged))[:5])
        if unjudged
        else "kept for later calls of this model and shapes",
    )
    first = result if on_cpu and not exclude else None
    return Checked(exclude, first, not unjudged, first_seconds)


def _sites(model, variables, head, place) -> str:
    """The site finder of the call's model (`pergrad.method.sites_method`)."""
    decisions.count("site_finders")
    one = jax.tree.map(lambda v: v[0], variables)
    spec = jax.ShapeDtypeStruct(head[0].shape, head[0].dtype)
    linen = isinstance(model, model_form_lib.LinenModel)
    return method_lib.sites_method(linen, model.logits, one, spec, sharded=place.mesh is not None)


def plan(model, seed_axis, place, variables, placed, head, total):
    """GraNd's runner for this call, and the seconds of its fixed costs paid here.

    Args: as `check_rules`, with `head` the first batch and `total` the number of examples
      (None for a stream).
    Returns:
      (a `programs.Runner` of the call's batches, the seconds spent on the site finder and the
      guard, less the guard's run of a first batch the runner reuses).
    """
    start = time.perf_counter()
    sig = decisions.signature(model, placed, head[0], seed_axis, place.mesh)
    known = decisions.grand(sig)
    if known is None:
        known = decisions.GrandDecision(_sites(model, variables, head, place), frozenset(), False)
    checked = None
    if not known.trusted and known.method != "vmap_grad":  # vmap(grad) uses no rule
        checked = check_rules(model, known.sites, seed_axis, place, variables, placed, head)
        kept = known.method if checked.exclude == known.exclude else None
        known = decisions.GrandDecision(known.sites, checked.exclude, checked.trusted, kept)
        decisions.record_grand(sig, known)
    first = None if checked is None else checked.first
    setup = time.perf_counter() - start - (0.0 if first is None else checked.first_seconds)
    left = None if total is None else -(-total // len(head[0])) - (first is not None)
    return _runner(model, seed_axis, place, placed, known, first, left, sig), setup


def _runner(model, seed_axis, place, placed, known, first, left, sig) -> programs.Runner:
    """The runner of `known`'s method; a race when none is decided and `left` batches (None:
    a stream) are enough for one."""

    def program(method):
        exclude = frozenset() if method == "vmap_grad" else known.exclude
        return programs.batch_program(model, "grand", seed_axis, place.mesh, exclude, method)

    # The guard's run of the first batch, when reused, is the sites program's untimed first run.
    warm = (known.sites,) if first is not None else ()
    if known.method is not None or left is None or left + len(warm) < method_lib.MIN_BATCHES:
        return programs.Runner(place, placed, program(known.method or known.sites), first=first)
    decisions.count("races")
    race = method_lib.Race({m: program(m) for m in (known.sites, "vmap_grad")}, warm=warm)

    def on_winner(name):
        decisions.count("timed_runs", race.timed_runs())
        decisions.record_grand(sig, dataclasses.replace(known, method=name))
        logging.info(
            "GraNd: %s raced on the first batches (compilation left out, best of %d each): %s; "
            "using %s from now on for this model, its shapes and batch size.",
            " and ".join(race.programs),
            race.repeats,
            ", ".join(f"{m} {t:.4g} s" for m, t in race.best.items()),
            name,
        )
        return race.programs[name]

    return programs.Runner(place, placed, first=first, race=race, on_winner=on_winner)
