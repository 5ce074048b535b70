"""First-batch guard: every fast rule checked against exact `vmap(grad)` before GraNd uses it.

The site finders admit a layer to a fast rule by what they can see (type, configuration, call
count, batch axis, parameter uses); what they cannot (a layer whose rows are examples in another
order, a faulty rule) would give a plausible wrong number. So a `grand_scores` call of a model
and shapes not judged before in the process (`decisions.py`) checks, for every seed, each site's
squared norm by its rule (from the call's own compiled program) against `vmap(grad)` restricted
to that site's parameters, on the first batch's `NUM_EXAMPLES` valid examples of largest GraNd
(`checked_examples`). `disagreeing_layers` flags a site where, for some example,
`|fast - exact| > RTOL * exact + FLOOR * total`, `total` the example's squared norm over all
parameters: RTOL sits far above the rules' float32 rounding and far below any structural error,
and FLOOR ignores layers with a negligible share of the norm. A non-finite fast value with a
finite exact one disagrees. The reference runs at `Precision.HIGHEST` (off CPU the checked batch
too), so TF32 matmuls cannot trip the guard. A flagged layer goes to the exact fallback for all
seeds, with an absl warning naming it.

A verdict also holds at other values of the same model (`decisions.py` reuses it) when every site
it passed was judged (`unjudged_sites`): its exact squared norm exceeded `JUDGED * total` (the
floor) for some seed and checked example, so a rule off by as much as the site's own norm would
have been flagged. A site with (nearly) zero gradient at these values (every layer below a
zero-initialized head, a residual branch behind a zero-initialized scale) agrees with any rule;
`verdict` names it, and the guard then reruns in every call.

Usage:

    idx = guard.checked_examples(first_grand, count)  # [K, B] -> [m] int64, ascending
    excluded = guard.guard(exact_fn, fast, per_seed_variables, images[idx], labels[idx],
                           positions=idx)  # frozenset of site keys for the fallback
    excluded, unjudged = guard.verdict(exact_fn, fast, per_seed_variables, images[idx],
                                       labels[idx], positions=idx)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np
from absl import logging

from datadiet_jax.scores.pergrad import fallback, linen_sites

RTOL = 1e-3
FLOOR = 1e-6
NUM_EXAMPLES = 4
JUDGED = FLOOR  # the share of an example's squared norm above which a site was judged


def exact_layer_sq_norms(apply_fn, variables, images, labels):
    """Each site's per-example squared norm by `vmap(grad)` restricted to its params.

    Args:
      apply_fn: `(variables, images [m, ...]) -> logits [m, C]` in eval mode.
      variables: one model's variables (no seed axis).
      images: [m, ...]; labels: [m] int: the examples to check.
    Returns:
      ({site key: exact [m]}, total [m]) float32, `total` the squared norm over all params. Sites
      are found at batch m; a site of the checked program missing here is flagged.
    """
    sites, _ = linen_sites.find_sites(apply_fn, variables, images)
    leaves = fallback.linen_leaf_sq_norms(apply_fn, variables, images, labels)
    exact = {s.key: sum(leaves[p] for p in s.param_paths) for s in sites}
    return exact, sum(leaves.values())


def checked_examples(grand, count: int, m: int = NUM_EXAMPLES) -> np.ndarray:
    """The examples of the first batch the guard checks: the m largest GraNd, in batch order.

    A well-fit example's output gradient `p - y` is a difference of nearly equal float32 numbers
    (p_y near 1), so its squared norms carry rounding of about eps / (1 - p_y) relative, which two
    compiled programs do not share; past about 1e-4 of the loss a correct rule would trip RTOL.
    The largest gradients of the batch are the best conditioned, and a structural error (a wrong
    axis, a missed use) shows on every example.

    Args:
      grand: [K, B] the rules' GraNd of the first batch; count: its valid (unpadded) examples.
    Returns:
      [min(m, count)] int64 indices into the batch, ascending.
    """
    mean = np.asarray(grand, np.float64)[:, :count].mean(0)
    mean = np.where(np.isfinite(mean), mean, np.inf)  # a non-finite score is checked first
    return np.sort(np.argsort(-mean, kind="stable")[: min(m, count)]).astype(np.int64)


def disagreeing_layers(fast: dict, exact: dict, total) -> dict[str, tuple[int, float, float]]:
    """Sites whose rule disagrees with `vmap(grad)`: {key: (example, fast, exact)} (worst one)."""
    total = np.asarray(total, np.float64)
    bad = {}
    for key, f in fast.items():
        if key not in exact:  # a site in one program but not the other: do not trust it
            bad[key] = (0, float(np.asarray(f)[0]), float("nan"))
            continue
        f, e = np.asarray(f, np.float64), np.asarray(exact[key], np.float64)
        checked = np.isfinite(e) & np.isfinite(total)
        with np.errstate(invalid="ignore"):
            excess = np.abs(f - e) / (RTOL * e + FLOOR * total + np.finfo(np.float32).tiny)
        excess = np.where(checked & ~np.isfinite(f), np.inf, np.where(checked, excess, 0.0))
        if np.any(excess > 1.0):
            i = int(np.argmax(excess))
            bad[key] = (i, float(f[i]), float(e[i]))
    return bad


def unjudged_sites(exact: dict, total) -> set:
    """Sites whose exact squared norm stays at or under `JUDGED * total` on every checked example.

    Args:
      exact: {site key: [m]} exact squared norms of one seed; total: [m] squared norms over all
      params.
    """
    total = np.asarray(total, np.float64)
    out = set()
    for key, e in exact.items():
        with np.errstate(invalid="ignore"):
            seen = np.asarray(e, np.float64) > JUDGED * total
        if not np.any(seen & np.isfinite(total)):
            out.add(key)
    return out


def verdict(
    exact_fn: Callable, fast: dict, seed_variables: Iterable, images, labels, positions=None
) -> tuple[frozenset, frozenset]:
    """Compares the rules' first-batch norms with `exact_fn` for every seed.

    Args:
      exact_fn: jitted `exact_layer_sq_norms(apply_fn, ...)` of the model.
      fast: {site key: [K, m]} squared norms by the rules on the m checked examples.
      seed_variables: one model's variables per seed (K of them).
      images: [m, ...], labels: [m]: the checked examples of the first batch.
      positions: [m] their positions in the batch, for the warnings (default 0 .. m - 1).
    Returns:
      (the union over seeds of the disagreeing site keys, each logged as an absl warning; the
      agreeing sites that no seed judged, `unjudged_sites`).
    """
    excluded, unjudged = set(), set(fast)
    positions = np.arange(len(labels)) if positions is None else np.asarray(positions)
    with jax.default_matmul_precision("highest"):
        for k, variables in enumerate(seed_variables):
            exact, total = jax.device_get(exact_fn(variables, images, labels))
            unjudged &= unjudged_sites(exact, total)
            mine = {key: np.asarray(v)[k] for key, v in fast.items()}
            for key, (i, f, e) in disagreeing_layers(mine, exact, total).items():
                logging.warning(
                    "GraNd guard: layer %s disagrees with exact vmap(grad) on the first batch "
                    "(seed %d, example %d: squared norm %.6g vs %.6g); its params use the exact "
                    "fallback.",
                    key,
                    k,
                    int(positions[i]),
                    f,
                    e,
                )
                excluded.add(key)
    return frozenset(excluded), frozenset(unjudged - excluded)


def guard(
    exact_fn: Callable, fast: dict, seed_variables: Iterable, images, labels, positions=None
) -> frozenset:
    """The site keys `verdict` sends to the exact fallback (arguments as `verdict`)."""
    return verdict(exact_fn, fast, seed_variables, images, labels, positions)[0]
