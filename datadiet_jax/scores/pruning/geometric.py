"""Feature-geometry selectors: Moderate-DS, k-center greedy, herding and D2 pruning.

Strategies of `pruning.kept_indices` (`'moderate'`, `'kcenter'`, `'herding'`, `'d2'`); the last
three work on penultimate features `[N, D]`, or `[K, N, D]` per seed, concatenated along D after
scaling each by `1/sqrt(K)`, so a squared distance is the MEAN over seeds (`combine_features`).

- 'moderate' (Xia et al., ICLR 2023): exactly M ranks of the Moderate-DS distances over the whole
  dataset, centred on the median rank: from rank floor((N - M) / 2), ties by index (the authors'
  `get_prune_idx` can miss M by one).
- 'kcenter' (Sener & Savarese, ICLR 2018; DeepCore's `k_center_greedy`): a random first centre,
  then repeatedly the example farthest (Euclidean) from its nearest centre.
- 'herding' (Welling, ICML 2009): greedily the example that brings the chosen features' mean
  closest to the class mean (the papers' argmin; DeepCore's `herding.py` takes the argmax).
- 'd2' (Maharana et al., ICLR 2024; adymaharana/d2pruning `GraphDensitySampler`): forward message
  passing on an undirected k-NN graph, `x_i = s_i + sum_j exp(-gamma_forward * d_ij) * s_j`, then
  greedily the largest `x_p` with reverse passing `x_j -= exp(-gamma_reverse * d_pj) * x_p`;
  defaults of the authors' CIFAR-10 command (k=5, gamma_reverse=0.1, gamma_forward=1), without
  the code's `max(s_j, 1e-7)` floor, the hardest `beta` share of each class dropped first.

The last three select within each class with the exact quotas of `stratified.class_quotas` (or
over the whole dataset without labels), in jitted `lax.fori_loop`s; ties go to the lower index.

Usage:

    keep = kept_indices(None, "kcenter", keep_fraction=0.5, features=feats, labels=labels)
    picks = geometric.k_center_greedy(x, budget=100, first=0)  # x [n, D] -> [100] int64
    picks = geometric.d2_select(x, scores, budget=100)  # scores [n] -> [100] int64, pick order
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from datadiet_jax.scores.pruning import stratified
from datadiet_jax.scores.pruning.ranking import check_num_keep, own_scores, sorted_int64

D2_DEFAULTS = {"k": 5, "gamma_forward": 1.0, "gamma_reverse": 0.1}
_KNN_BLOCK = 512


def combine_features(features, num_examples: int) -> np.ndarray:
    """`[N, D]` or per-seed `[K, N, D]` features -> `[N, K * D]` float32 (seeds scaled 1/sqrt(K)).

    Raises:
      ValueError: a wrong rank or length, or NaN/inf entries.
    """
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim not in (2, 3) or arr.shape[-2] != num_examples or 0 in arr.shape:
        raise ValueError(
            f"features have shape {arr.shape}; pass [{num_examples}, D] or per-seed "
            f"[K, {num_examples}, D] features of the same examples as the scores/labels."
        )
    if not np.isfinite(arr).all():
        raise ValueError("features contain NaN or inf; recompute them from finite model weights.")
    if arr.ndim == 2:
        return arr
    scale = np.float32(1.0 / np.sqrt(arr.shape[0]))
    return np.transpose(arr, (1, 0, 2)).reshape(num_examples, -1) * scale


def moderate_window(scores, num_keep: int) -> np.ndarray:
    """Moderate-DS selection: the `num_keep` examples of the ranks centred on the median rank.

    Args:
      scores: `[N]` float (e.g. the seed mean of `geometry.moderate_distances`).
      num_keep: M in [1, N].
    Returns:
      `[M] int64` sorted indices: ascending ranks floor((N - M) / 2) ... + M - 1.
    """
    scores = own_scores(scores)
    n = scores.shape[0]
    num_keep = check_num_keep(num_keep, n)
    start = (n - num_keep) // 2
    return sorted_int64(np.argsort(scores, kind="stable")[start : start + num_keep])


def _bucket(n: int) -> int:
    return 1 << max(4, math.ceil(math.log2(n))) if n <= 1024 else -(-n // 1024) * 1024


def _padded(x: np.ndarray) -> tuple[jax.Array, jax.Array]:
    size = _bucket(len(x))
    out = np.zeros((size, *x.shape[1:]), np.float32)
    out[: len(x)] = x
    return jnp.asarray(out), jnp.arange(size) < len(x)


def _sq_dist(x, sq, row):
    """Squared distances of the rows of x (squared norms sq) to one point (a matrix-vector
    product: faster on CPU than the sum of squared differences)."""
    return jnp.maximum(sq - 2.0 * (x @ row) + jnp.dot(row, row), 0.0)


@jax.jit
def _k_center(x, valid, budget, first):
    neg = jnp.float32(-jnp.inf)
    sq = jnp.sum(x * x, axis=1)
    mins = jnp.where(valid, _sq_dist(x, sq, x[first]), neg).at[first].set(neg)
    picks = jnp.zeros(x.shape[0], jnp.int32).at[0].set(first)

    def body(i, carry):
        mins, picks = carry
        p = jnp.argmax(mins)
        mins = jnp.minimum(mins, _sq_dist(x, sq, x[p])).at[p].set(neg)
        return mins, picks.at[i].set(p)

    return jax.lax.fori_loop(1, budget, body, (mins, picks))[1]


def k_center_greedy(features, budget: int, first: int) -> np.ndarray:
    """k-center greedy of `features [n, D]` from centre `first` -> `[budget] int64` in pick order.

    Each next pick is `argmax_i min_{c chosen} ||f_i - f_c||` (the lower index on ties).
    """
    x, valid = _padded(np.asarray(features, np.float32))
    return np.asarray(_k_center(x, valid, int(budget), int(first)))[: int(budget)].astype(np.int64)


@jax.jit
def _herding(x, valid, budget):
    w = valid.astype(jnp.float32)
    mu = (w @ x) / jnp.sum(w)
    sq = jnp.sum(x * x, axis=1)
    free = valid

    def body(i, carry):
        target, free, picks = carry  # target = (i + 1) mu - sum of the chosen
        p = jnp.argmin(jnp.where(free, _sq_dist(x, sq, target), jnp.inf))
        return target - x[p] + mu, free.at[p].set(False), picks.at[i].set(p)

    init = (mu, free, jnp.zeros(x.shape[0], jnp.int32))
    return jax.lax.fori_loop(0, budget, body, init)[2]


def herding(features, budget: int) -> np.ndarray:
    """Herding of `features [n, D]` -> `[budget] int64` in pick order.

    Pick t (from 0) is `argmin_i ||(t + 1) mu - sum_{chosen} f - f_i||` over the unchosen, mu the
    mean of all n features (the lower index on ties).
    """
    x, valid = _padded(np.asarray(features, np.float32))
    return np.asarray(_herding(x, valid, int(budget)))[: int(budget)].astype(np.int64)


@functools.partial(jax.jit, static_argnames="k")
def _knn(x, valid, k):
    """The k nearest other valid rows of each row: (indices [n, k] int32, distances [n, k])."""
    sq = jnp.sum(x * x, axis=1)
    idx = jnp.arange(x.shape[0])

    def block(rows):
        d2 = sq[rows][:, None] + sq[None] - 2.0 * x[rows] @ x.T
        d2 = jnp.where(valid[None] & (rows[:, None] != idx[None]), jnp.maximum(d2, 0.0), jnp.inf)
        neg, nbr = jax.lax.top_k(-d2, k)
        return nbr, jnp.sqrt(-neg)

    blocks = idx.reshape(-1, min(_KNN_BLOCK, x.shape[0]))
    nbr, dist = jax.lax.map(block, blocks)
    return nbr.reshape(-1, k), dist.reshape(-1, k)


@jax.jit
def _d2_forward(scores, nbr, dist, valid, gamma):
    """Forward message passing over the undirected kNN graph, each edge counted once."""
    w = jnp.where(valid[:, None], jnp.exp(-gamma * dist), 0.0)
    mutual = jnp.any(nbr[nbr] == jnp.arange(nbr.shape[0])[:, None, None], axis=2)
    x = scores + jnp.sum(w * scores[nbr], axis=1)  # messages from each row's own neighbours
    back = jnp.where(mutual, 0.0, w * scores[:, None])  # to neighbours that did not list it
    return x.at[nbr.reshape(-1)].add(back.reshape(-1))


@jax.jit
def _d2_select(x, nbr, dist, valid, budget, gamma):
    x = jnp.where(valid, x, -jnp.inf)
    weights = jnp.exp(-gamma * dist)

    def body(i, carry):
        x, picks = carry
        p = jnp.argmax(x)
        incoming = jnp.max(jnp.where(nbr == p, weights, 0.0), axis=1)  # rows listing p
        w = incoming.at[nbr[p]].max(weights[p]).at[p].set(0.0)
        x = (x - w * x[p]).at[p].set(-jnp.inf)
        return x, picks.at[i].set(p)

    return jax.lax.fori_loop(0, budget, body, (x, jnp.zeros(x.shape[0], jnp.int32)))[1]


def d2_graph_scores(features, scores, *, k: int, gamma_forward: float) -> tuple:
    """D2's forward message passing on `features [n, D]`, `scores [n]`.

    Returns:
      (updated scores [n'], neighbours [n', k'] int32, distances [n', k'], valid [n'] bool), on
      the rows padded to n' (`valid` marks the n real ones), k' = min(k, n - 1).
    """
    feats = np.asarray(features, np.float32)
    n = len(feats)
    x, valid = _padded(feats)
    kk = max(1, min(int(k), n - 1))
    nbr, dist = _knn(x, valid, kk)
    s = jnp.zeros(x.shape[0]).at[:n].set(jnp.asarray(scores, jnp.float32))
    return _d2_forward(s, nbr, dist, valid, float(gamma_forward)), nbr, dist, valid


def d2_select(
    features,
    scores,
    budget: int,
    *,
    k: int = 5,
    gamma_forward: float = 1.0,
    gamma_reverse: float = 0.1,
) -> np.ndarray:
    """D2 pruning of `features [n, D]` with difficulty `scores [n]` -> `[budget] int64` in pick
    order (see the module docstring; n = 1 keeps its one example)."""
    if len(features) == 1:
        return np.zeros(int(budget), np.int64)
    x, nbr, dist, valid = d2_graph_scores(features, scores, k=k, gamma_forward=gamma_forward)
    picks = _d2_select(x, nbr, dist, valid, int(budget), float(gamma_reverse))
    return np.asarray(picks)[: int(budget)].astype(np.int64)


def _groups(labels, n: int, num_keep: int):
    """(members, quota) per class (`class_quotas`), or the whole dataset without labels."""
    if labels is None:
        return [(np.arange(n), num_keep)]
    quotas = stratified.class_quotas(labels, num_keep)
    return [(np.flatnonzero(labels == c), q) for c, q in quotas.items() if q > 0]


def kcenter_strategy(scores, num_keep, *, features, labels, seed, num_examples, **_):
    """'kcenter': k-center greedy per class; the first centre of class c is drawn uniformly
    with `np.random.default_rng([seed, c])` (`default_rng(seed)` without labels)."""
    x = _require(features, "kcenter", num_examples)
    kept = []
    for members, quota in _groups(labels, num_examples, num_keep):
        key = [int(seed)] if labels is None else [int(seed), int(labels[members[0]])]
        first = int(np.random.default_rng(key).integers(len(members)))
        kept.append(members[k_center_greedy(x[members], quota, first)])
    return sorted_int64(np.concatenate(kept))


def herding_strategy(scores, num_keep, *, features, labels, num_examples, **_):
    """'herding': herding per class toward the class mean."""
    x = _require(features, "herding", num_examples)
    kept = [m[herding(x[m], q)] for m, q in _groups(labels, num_examples, num_keep)]
    return sorted_int64(np.concatenate(kept))


def d2_strategy(scores, num_keep, *, features, labels, beta, num_examples, **_):
    """'d2': D2 pruning per class after dropping each class's hardest floor(beta * n_c)."""
    x = _require(features, "d2", num_examples)
    if scores is None or not np.isfinite(scores).all():
        raise ValueError("strategy 'd2' needs finite [N] difficulty scores; pass scores=...")
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"d2 beta is {beta}; set it to the hard-cutoff fraction in [0, 1).")
    kept = []
    for members, quota in _groups(labels, num_examples, num_keep):
        drop = int(np.floor(float(beta) * len(members) + 1e-9))
        pool = np.sort(members[np.argsort(-scores[members], kind="stable")[drop:]])
        if quota > len(pool):
            raise ValueError(
                f"d2 keeps {quota} of a class of {len(members)} after dropping its hardest "
                f"{drop}; lower beta or raise the prune fraction."
            )
        kept.append(pool[d2_select(x[pool], scores[pool], quota, **D2_DEFAULTS)])
    return sorted_int64(np.concatenate(kept))


def _require(features, strategy: str, num_examples: int) -> np.ndarray:
    if features is None:
        raise ValueError(
            f"strategy {strategy!r} needs features; pass features=[N, D] or [K, N, D] "
            "(scores.penultimate.penultimate_features)."
        )
    return combine_features(features, num_examples)
