"""First-batch guard: every fast rule checked against exact `vmap(grad)` before a GraNd call.

`grad_sites` admits a layer to a fast rule by its type, configuration, call count, batch axis and
parameter uses; what it cannot see (a layer whose rows are examples in another order, a model
that mixes examples in eval mode, a faulty rule) would give a plausible wrong number. So, before
the main loop of every `grand_scores` call and for every seed, `layer_sq_norms` computes each
site's per-example squared norm by its rule on the first batch (at the call's batch size, so the
check sees the same program shape) and by `vmap(grad)` restricted to that site's parameters on its
first `NUM_EXAMPLES` valid examples. `disagreeing_layers` flags a site where, for some example,

    |fast - exact| > RTOL * exact + FLOOR * total,

with `total` the example's squared gradient norm over all parameters. RTOL = 1e-3 is far above
float32 rounding of the rules (about 1e-6) and far below any structural error (a wrong axis or a
missed use changes a layer's norm by percents); the FLOOR term ignores layers whose share of the
squared norm is under 1e-6, where rounding dominates and the score cannot move by more than
5e-7 relative. A non-finite fast value with a finite exact one is a disagreement; a non-finite
exact value is left to the NaN check of the scores. Both sides run at `Precision.HIGHEST`
(`jax.default_matmul_precision`), so TF32 on GPUs cannot trip the guard.

A flagged layer goes to the exact fallback (`exclude=` of `grad_norms.per_example_grad_norms`) for
the rest of the call, for all seeds (the union over seeds), with an absl warning naming it. The
guard is two small jitted programs run once per call and seed, outside the per-batch program,
which stays one jitted program; `benchmarks/bench_scores.py` measures its cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np
from absl import logging

from datadiet_jax import grad_norms, grad_sites

RTOL = 1e-3
FLOOR = 1e-6
NUM_EXAMPLES = 4


def layer_sq_norms(apply_fn, variables, images, labels, mask, *, num_examples: int):
    """Each site's per-example squared norm, by its rule and by `vmap(grad)`.

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]` in eval mode.
      variables: one model's variables (no seed axis).
      images: [B, ...]; labels: [B] int; mask: [B] {0, 1}, the first `num_examples` valid.
      num_examples: m <= B examples checked against `vmap(grad)`.
    Returns:
      ({site key: fast [m]}, {site key: exact [m]}, total [m]) float32, `total` the exact squared
      norm over all parameters.
    """
    fast, _ = grad_norms.site_sq_norms(apply_fn, variables, images, labels, mask)
    m = num_examples
    if not fast:  # no site: nothing to check
        return {}, {}, jax.numpy.zeros((m,), jax.numpy.float32)
    sites, _ = grad_sites.find_sites(apply_fn, variables, images)
    leaves = grad_norms.vmap_grad_leaf_sq_norms(apply_fn, variables, images[:m], labels[:m])
    exact = {s.key: sum(leaves[p] for p in s.param_paths) for s in sites}
    total = sum(leaves.values())
    return {k: v[:m] for k, v in fast.items()}, exact, total


def disagreeing_layers(fast: dict, exact: dict, total) -> dict[str, tuple[int, float, float]]:
    """Sites whose rule disagrees with `vmap(grad)`: {key: (example, fast, exact)} (worst one)."""
    total = np.asarray(total, np.float64)
    bad = {}
    for key, f in fast.items():
        f, e = np.asarray(f, np.float64), np.asarray(exact[key], np.float64)
        checked = np.isfinite(e) & np.isfinite(total)
        with np.errstate(invalid="ignore"):
            excess = np.abs(f - e) / (RTOL * e + FLOOR * total + np.finfo(np.float32).tiny)
        excess = np.where(checked & ~np.isfinite(f), np.inf, np.where(checked, excess, 0.0))
        if np.any(excess > 1.0):
            i = int(np.argmax(excess))
            bad[key] = (i, float(f[i]), float(e[i]))
    return bad


def guard(guard_fn: Callable, seed_variables: Iterable, images, labels, mask) -> frozenset[str]:
    """Runs the guard for every seed; returns the site keys to leave to the fallback.

    Args:
      guard_fn: jitted `layer_sq_norms(apply_fn, ., ., ., ., num_examples=m)` of the model.
      seed_variables: one model's variables per seed.
      images: [B, ...], labels: [B], mask: [B], the call's first (padded) batch.
    Returns:
      The union over seeds of the disagreeing site keys.
    """
    excluded = set()
    with jax.default_matmul_precision("highest"):
        for k, variables in enumerate(seed_variables):
            fast, exact, total = jax.device_get(guard_fn(variables, images, labels, mask))
            for key, (i, f, e) in disagreeing_layers(fast, exact, total).items():
                logging.warning(
                    "GraNd guard: layer %s disagrees with exact vmap(grad) on the first batch "
                    "(seed %d, example %d: squared norm %.6g vs %.6g); its params use the exact "
                    "fallback for this call.",
                    key, k, i, f, e,
                )  # fmt: skip
                excluded.add(key)
    return frozenset(excluded)
