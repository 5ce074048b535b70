"""GraNd's method for one call: the site finder, the first-batch guard and the faster program.

`choose_method` picks the site finder (`pergrad/method.py`), checks its layer rules on the first
batch of every seed (`check_rules`, `pergrad/guard.py`), and on an array of enough batches times
the sites' program against `vmap(grad)` on that batch and keeps the faster (both are exact). The
first batch's result is returned for reuse where it can be.

Usage:

    method, exclude, first = grand_setup.choose_method(
        form, seed_axis, place, variables, placed, head, total
    )  # head: the first padded batch; total: N, or None for a stream
"""

from __future__ import annotations

import contextlib
import time

import jax
import jax.numpy as jnp
from absl import logging

from datadiet_jax.scores import model_form as model_form_lib
from datadiet_jax.scores import programs
from datadiet_jax.scores.pergrad import guard
from datadiet_jax.scores.pergrad import method as method_lib


def check_rules(model, method, seed_axis, place, variables, placed, first_batch):
    """Checks GraNd's layer rules on the first batch of every seed (see `pergrad/guard.py`).

    Args:
      model: the `ModelForm`; method: the site finder (`pergrad.method.SITES_METHODS`);
      seed_axis: a resolved mode; place: the call's `sharding.Placement`; variables: the
      stacked `{'params', 'state'}` as given (host); placed: the same on the devices;
      first_batch: the call's first padded batch `(images, labels, mask, count)`.
    Returns:
      (site keys to leave to the exact fallback, the first batch's result to reuse or None).
    """
    start = time.perf_counter()
    x, y, mask, count = first_batch
    on_cpu = jax.default_backend() == "cpu"  # XLA:CPU float32 dots are float32 at any precision
    with contextlib.nullcontext() if on_cpu else jax.default_matmul_precision("highest"):
        program = programs.batch_program(model, "grand", seed_axis, place.mesh, method=method)
        result = program(placed, place.put(x), place.put(y), place.put(mask))
        idx = guard.checked_examples(place.fetch(result[0]), count)
        fast = {key: place.fetch(v)[:, idx] for key, v in result[1].items()}
    if not fast:  # no layer has a fast rule: nothing to check
        return frozenset(), result if on_cpu else None
    exact_fn = programs.exact_program(model, method)
    num_seeds = len(next(iter(fast.values())))
    per_seed = (jax.tree.map(lambda v, k=k: v[k], variables) for k in range(num_seeds))
    exclude = guard.guard(
        exact_fn, fast, per_seed, jnp.asarray(x[idx]), jnp.asarray(y[idx]), positions=idx
    )
    logging.info(
        "grand guard: %d layers x %d seeds checked on %d examples in %.1f s; %d to the fallback",
        len(fast),
        num_seeds,
        len(idx),
        time.perf_counter() - start,
        len(exclude),
    )
    return exclude, result if on_cpu and not exclude else None


def choose_method(model, seed_axis, place, variables, placed, head, total):
    """GraNd's method for this call (`pergrad/method.py`), its guard's exclusions, and the first
    batch's result to reuse (or None).

    Args: as `check_rules`, with `head` the first batch and `total` the number of examples
      (None for a stream).
    Returns:
      (method, site keys left to the exact fallback, the first batch's result or None).
    """
    one = jax.tree.map(lambda v: v[0], variables)
    spec = jax.ShapeDtypeStruct(head[0].shape, head[0].dtype)
    linen = isinstance(model, model_form_lib.LinenModel)
    method = method_lib.sites_method(linen, model.logits, one, spec, sharded=place.mesh is not None)
    exclude, first = check_rules(model, method, seed_axis, place, variables, placed, head)
    if total is None or total < method_lib.MIN_BATCHES * len(head[0]):  # a stream, or too short
        return method, exclude, first
    candidates = {
        m: programs.batch_program(
            model, "grand", seed_axis, place.mesh, exclude if m == method else frozenset(), m
        )
        for m in (method, "vmap_grad")
    }
    best, result = method_lib.choose(candidates, (placed, *map(place.put, head[:3])))
    return best, exclude, result
