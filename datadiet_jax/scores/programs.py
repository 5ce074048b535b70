"""The compiled batch programs of the scores, cached per model form, kind, seed axis and mesh,
and the `Runner` that feeds a call's batches to them.

A program maps `(variables [K, ...], images [B, ...], labels [B], mask [B])` to
`([K, B] float32 scores, {site key: [K, B]} GraNd per-site squared norms)`; the kind is 'grand'
or a logit score of `uncertainty.LOGIT_SCORES` ('el2n', 'loss', ...). The K seeds run inside the
jit (`seed_axis.over_seeds`); GraNd's per-seed work is the method's (`pergrad/method.py`):
module interception for Linen, the jaxpr for the others, or `vmap(grad)`.

Usage:

    fn = programs.batch_program(form, "grand", "unroll", exclude=frozenset(), method=None)
    scores, per_site = fn(variables, images, labels, mask)
    run = programs.Runner(placement, variables, fn)
    scores, per_site = run(0, (images, labels, mask, count))  # host batch, put on the devices
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from datadiet_jax.scores import batch_check, decisions, uncertainty
from datadiet_jax.scores import model_form as model_form_lib
from datadiet_jax.scores import seed_axis as seed_axis_lib
from datadiet_jax.scores.pergrad import fallback, guard, jaxpr_norms, linen_norms


def linen_apply(form: model_form_lib.ModelForm):
    """`(variables {'params', 'state'}, images) -> logits`, the form `linen_norms` expects."""
    return lambda v, images: form.logits(v["params"], v["state"], images)


def _per_seed_scores(model, kind, method, exclude, variables, images, labels, mask):
    """Scores of one model on one batch. images: [B, ...], labels/mask: [B].

    model: a `model_form.ModelForm`; variables: one seed's `{'params', 'state'}`.
    method: GraNd's method (`pergrad.method.METHODS`); exclude: GraNd layers (site keys) the guard
    sent to the exact fallback.
    Returns ([B] float32 scores, {site key: [B]} GraNd per-layer squared norms; {} for EL2N).
    """
    if kind in uncertainty.LOGIT_SCORES:  # one forward pass: EL2N, the loss, the uncertainties
        logits = model.logits(variables["params"], variables["state"], images)
        return uncertainty.LOGIT_SCORES[kind](logits, labels), {}
    if method == "linen_sites":
        return linen_norms.norms_and_site_sq_norms(
            linen_apply(model), variables, images, labels, mask, exclude=exclude
        )
    if method == "vmap_grad":
        exact = fallback.pure_leaf_sq_norms(model.logits, variables, images, labels)
        return jnp.sqrt(sum(exact.values()) * fallback.example_weights(labels, mask)), {}
    return jaxpr_norms.norms_and_site_sq_norms(
        model.logits, variables, images, labels, mask, exclude=exclude
    )


def _batch_scores(per_seed, seed_axis, variables, images, labels, mask):
    """Scores of K stacked models on one batch -> ([K, B] float32, {site key: [K, B]}).

    seed_axis (see `seed_axis.resolve`): 'unroll' runs the seeds one after another inside the
    jit (the CPU default; a `lax.map` loop ran ResNet18 about 2x slower than separate calls);
    'vmap' batches the seeds (the GPU/TPU default); 'map' loops with `lax.map`.
    """
    if jax.tree.leaves(variables)[0].shape[0] == 1:  # one seed: no loop or batching needed
        one = jax.tree.map(lambda v: v[0], variables)
        return jax.tree.map(lambda a: a[None], per_seed(one, images, labels, mask))
    return seed_axis_lib.over_seeds(lambda v: per_seed(v, images, labels, mask), seed_axis)(
        variables
    )


def _build(model, kind, seed_axis, mesh, exclude=frozenset(), method=None):
    method = method or default_method(model)

    def local(variables, images, labels, mask):
        per_seed = functools.partial(_per_seed_scores, model, kind, method, exclude)
        return _batch_scores(per_seed, seed_axis, variables, images, labels, mask)

    if mesh is None:
        return jax.jit(local)
    from datadiet_jax.scores import sharding

    return sharding.shard_scores_fn(local, mesh)


_build_cached = functools.lru_cache(maxsize=32)(_build)


def _cached(build, cached, *args):
    try:
        return cached(*args)
    except TypeError:  # an unhashable module: build it for this call only
        return build(*args)


def default_method(model: model_form_lib.ModelForm) -> str:
    """GraNd's site finder when none was chosen: module interception for Linen, else the jaxpr."""
    return "linen_sites" if isinstance(model, model_form_lib.LinenModel) else "jaxpr_sites"


def batch_program(
    model: model_form_lib.ModelForm,
    kind: str,
    seed_axis: str,
    mesh=None,
    exclude=frozenset(),
    method=None,
):
    """The jitted batch function of a score, cached across calls.

    Args:
      model: a `model_form.ModelForm`; kind: 'el2n' or 'grand'; seed_axis: a resolved mode;
      mesh: a ('seed', 'data') mesh or None; exclude: GraNd site keys left to the fallback;
      method: GraNd's method (`pergrad.method.METHODS`; default `default_method(model)`).
    Returns:
      `(variables [K, ...], images [B, ...], labels [B], mask [B]) -> ([K, B] float32 scores,
      {site key: [K, B]} GraNd per-site squared norms; {} for EL2N)`.
    """
    return _cached(_build, _build_cached, model, kind, seed_axis, mesh, exclude, method)


def _build_exact(model, method=None):
    if (method or default_method(model)) == "linen_sites":
        return jax.jit(functools.partial(guard.exact_layer_sq_norms, linen_apply(model)))
    return jax.jit(functools.partial(jaxpr_norms.exact_site_sq_norms, model.logits))


_exact_cached = functools.lru_cache(maxsize=32)(_build_exact)


def exact_program(model: model_form_lib.ModelForm, method=None):
    """The jitted guard reference of a model (see `guard`) for the sites of `method` (a
    `pergrad.method.SITES_METHODS` entry, default `default_method(model)`), cached across calls:
    `(variables of one seed, images [m, ...], labels [m]) -> ({site key: [m]}, total [m])`."""
    return _cached(_build_exact, _exact_cached, model, method)


def clear_programs() -> None:
    """Forgets every cached compiled program and every decision made with them (`decisions`),
    e.g. after a rule was changed for a test."""
    _build_cached.cache_clear()
    _exact_cached.cache_clear()
    batch_check.clear_programs()
    decisions.clear()


class Runner:
    """Feeds a call's padded batches to its compiled programs: `runner(i, batch) -> result`.

    Batch 0's result may come ready (GraNd's guard computed it); a `pergrad.method.Race` may
    score the next batches, its programs taking turns, until it has a winner; then
    `on_winner(name)` gives the program for the rest. Otherwise `program` scores every batch.

    Args:
      place: the call's `sharding.Placement`; placed: the stacked variables on the devices.
      program: `(variables, images, labels, mask) -> result` (a `batch_program`), or None while
        a race decides it.
      first: batch 0's result, or None.
      race: a `pergrad.method.Race` of programs, or None; on_winner: `name -> program`.

    Usage:

        run = Runner(place, placed, batch_program(form, "el2n", "unroll"))
        for i, batch in enumerate(batches):  # (images [B, ...], labels [B], mask [B], count)
            scores, per_site = run(i, batch)
    """

    def __init__(self, place, placed, program=None, *, first=None, race=None, on_winner=None):
        self.place, self.placed, self.program = place, placed, program
        self.first, self.race, self.on_winner = first, race, on_winner

    def __call__(self, i: int, batch):
        if i == 0 and self.first is not None:
            return self.first
        x, y, mask = (self.place.put(a) for a in batch[:3])
        if self.race is None or self.program is not None:
            return self.program(self.placed, x, y, mask)  # dispatched asynchronously
        result = self.race.run((self.placed, x, y, mask))
        if self.race.winner is not None:
            self.program = self.on_winner(self.race.winner)
        return result

    def overhead(self) -> float:
        """The race's seconds beyond the winner's (`Race.overhead`); 0 without a race."""
        return 0.0 if self.race is None else self.race.overhead()
