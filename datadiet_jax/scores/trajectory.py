"""Windowed training-dynamics scores (Dyn-Unc, DUAL, TDDS) as one pure update for any training loop.

All three scores look at an example's predictions over sliding windows of `window` (J)
consecutive epochs. The state tracks each (seed, example) pair by its presentation count: in a
loop that presents every example once per epoch, presentation t is epoch t, so ring buffers
indexed by the count hold the last J epochs and no epoch-end hook is needed. p_t is the
train-mode softmax probability of the assigned label at presentation t (all three official codes
record the training forward pass).

  dyn_unc_scores  Dyn-Unc (He et al., CVPRW 2024; code github.com/BAAI-DCAI/Dataset-Pruning
                  `ImageNet/get_coreset.py`).
  dual_scores     DUAL (Cho et al., ICML 2025; code github.com/behaapyy/dual-pruning
                  `exp_cifar/importance_evaluation.py`).
  tdds_scores     TDDS (Zhang et al., CVPR 2024; code github.com/zhangxin-xd/
                  Dataset-Pruning-TDDS `importance_evaluation.py`).
  mean_true_probs the mean of p_t, where DUAL's Beta sampling (`pruning.dual_sampling`) looks.

Every score is higher = harder, as in each paper. Standard deviations use ddof=1 (torch's `std`,
as all three codes); the codes' factor 10 on Dyn-Unc's and DUAL's std changes no ranking and no
sampling weight, and is left out.

State (K seeds, N examples, C classes, J = window), a dict of arrays (J is read from the shapes):
  count:      [K, N] int32, presentations so far.
  prob_sum:   [K, N] float32, sum of p_t.
  true_prob:  [K, N, J] float32, ring of the last J values of p_t (slot t mod J).
  unc_sum:    [K, N] float32, Dyn-Unc: sum of the window stds of every window followed by at least
              one more presentation.
  dual_sum:   [K, N] float32, DUAL: sum over complete windows of std * (1 - mean).
  last_probs: [K, N, C] float32, TDDS: the full softmax of the previous presentation.
  kl:         [K, N, J-1] float32, TDDS: ring of the last J-1 per-presentation KL terms (slot
              (t-1) mod (J-1)).
  tdds_window:[K, N, J] float32, TDDS: ring of the last J window values (window w = t-J+1 in slot
              w mod J).

Usage:

    state = init_dynamics(K, N, C, window=10)
    state = update_dynamics(state, index, probs, labels, mask)  # [K, B], [K, B, C], [K, B], [K, B]
    dyn_unc, dual, tdds = dyn_unc_scores(state), dual_scores(state), tdds_scores(state)  # [K, N]
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# TDDS's code adds this inside each log.
TDDS_LOG_EPS = 1e-8


def init_dynamics(
    num_seeds: int, num_examples: int, num_classes: int, *, window: int
) -> dict[str, jnp.ndarray]:
    """Returns an empty state for `num_seeds` x `num_examples` (arrays `[K, N, ...]`, see module).

    Args:
      num_seeds: K. num_examples: N. num_classes: C, the width of the softmax given to the update.
      window: J >= 2, epochs per sliding window (10 in all three papers' defaults).
    """
    if int(window) < 2:
        raise ValueError(f"window is {window}; a window std needs at least 2 epochs, use e.g. 10.")
    k, n, c, j = int(num_seeds), int(num_examples), int(num_classes), int(window)
    f32 = jnp.float32
    return {
        "count": jnp.zeros((k, n), jnp.int32),
        "prob_sum": jnp.zeros((k, n), f32),
        "true_prob": jnp.zeros((k, n, j), f32),
        "unc_sum": jnp.zeros((k, n), f32),
        "dual_sum": jnp.zeros((k, n), f32),
        "last_probs": jnp.zeros((k, n, c), f32),
        "kl": jnp.zeros((k, n, j - 1), f32),
        "tdds_window": jnp.zeros((k, n, j), f32),
    }


def _set_slot(ring, slot, value, write):
    """ring [..., L] with ring[..., slot] = value where write; slot, value, write [...]."""
    hit = (jnp.arange(ring.shape[-1]) == slot[..., None]) & write[..., None]
    return jnp.where(hit, value[..., None], ring)


def update_dynamics(state, index, probs, labels, mask):
    """Folds one batch of presentations into the state (pure; jit-friendly).

    Args:
      state: the state dict above.
      index: [K, B] int dataset indices presented at this step.
      probs: [K, B, C] float, the train-mode softmax of each presentation.
      labels: [K, B] int in [0, C), the labels trained on.
      mask: [K, B], 0 for padding (ignored). Indices must be unique within a row where mask is 1.

    Returns:
      The updated state dict.
    """
    valid = jnp.asarray(mask) > 0
    index = jnp.asarray(index)
    rows = jnp.arange(index.shape[0])[:, None]
    n = state["count"].shape[1]
    j = state["true_prob"].shape[2]
    idx = jnp.where(valid, index, n)  # padding goes out of range and is dropped by the scatters
    safe = jnp.minimum(idx, n - 1)
    probs = jnp.asarray(probs, jnp.float32)
    onehot = jnp.arange(probs.shape[-1]) == jnp.asarray(labels)[..., None]
    p_true = jnp.sum(jnp.where(onehot, probs, 0.0), axis=-1)  # [K, B]
    t = state["count"][rows, safe]  # this presentation's 0-based number

    # Dyn-Unc: the window ending at the previous presentation is now followed by this one.
    ring = state["true_prob"][rows, safe]
    unc_add = jnp.where(t >= j, jnp.std(ring, axis=-1, ddof=1), 0.0)
    ring = _set_slot(ring, t % j, p_true, jnp.ones_like(valid))
    # DUAL: every complete window, including the one ending now.
    window_mean = jnp.mean(ring, axis=-1)
    dual_add = jnp.where(t >= j - 1, jnp.std(ring, axis=-1, ddof=1) * (1.0 - window_mean), 0.0)

    # TDDS: KL-like change from the previous presentation, summed over classes with |.| per class.
    prev = state["last_probs"][rows, safe]
    log_ratio = jnp.log(probs + TDDS_LOG_EPS) - jnp.log(prev + TDDS_LOG_EPS)
    kl_term = jnp.sum(jnp.abs(probs * log_ratio), axis=-1)
    kl = _set_slot(state["kl"][rows, safe], (t - 1) % (j - 1), kl_term, t >= 1)
    deviation = kl - jnp.mean(kl, axis=-1, keepdims=True)
    window_value = jnp.sqrt(jnp.sum(deviation * deviation, axis=-1))
    windows = _set_slot(state["tdds_window"][rows, safe], (t - j + 1) % j, window_value, t >= j - 1)

    def scatter(name, value):
        return state[name].at[rows, idx].set(value, mode="drop")

    return {
        "count": scatter("count", t + 1),
        "prob_sum": scatter("prob_sum", state["prob_sum"][rows, safe] + p_true),
        "true_prob": scatter("true_prob", ring),
        "unc_sum": scatter("unc_sum", state["unc_sum"][rows, safe] + unc_add),
        "dual_sum": scatter("dual_sum", state["dual_sum"][rows, safe] + dual_add),
        "last_probs": scatter("last_probs", probs),
        "kl": scatter("kl", kl),
        "tdds_window": scatter("tdds_window", windows),
    }


def _window(state) -> int:
    return int(np.shape(state["true_prob"])[2])


def _counts(state, needed: int, score: str, why: str) -> np.ndarray:
    """[K, N] int64 presentation counts; raises ValueError if any pair has fewer than `needed`."""
    count = np.asarray(state["count"]).astype(np.int64)
    short = np.argwhere(count < needed)
    if short.size:
        j = _window(state)
        raise ValueError(
            f"{score} is undefined for {len(short)} (seed, example) pairs with fewer than {needed} "
            f"presentations ({why}; window J={j}), e.g. {[tuple(p) for p in short[:5].tolist()]}; "
            f"train at least {needed} epochs (config.score.train_epochs >= {needed}) or lower "
            "config.score.dynamics_window."
        )
    return count


def dyn_unc_scores(state) -> np.ndarray:
    """Dynamic uncertainty (Dyn-Unc), `[K, N] float32`; higher = more uncertain = harder.

    U = 1/(T-J) * sum_{k=0}^{T-J-1} std_{ddof=1}(p_k, ..., p_{k+J-1}).

    Follows the official code (`get_coreset.py`, whose loop stops one epoch file before the last):
    a window's std joins the mean only once a later epoch follows it, so the window ending at the
    last epoch seen is left out (DUAL's re-implementation `dynunc` averages it too; the paper's text
    does not settle it). Window J: the code's required `--window`, 10 in DUAL's re-implementation.
    Needs T >= J+1 presentations of every (seed, example) pair.

    Raises:
      ValueError: naming how many pairs have fewer than J+1 presentations (no NaN is returned).
    """
    j = _window(state)
    count = _counts(state, j + 1, "Dyn-Unc", "the window ending at the last one is left out")
    return (np.asarray(state["unc_sum"], np.float64) / (count - j)).astype(np.float32)


def dual_scores(state) -> np.ndarray:
    """DUAL score at the last epoch seen (T), `[K, N] float32`; higher = harder.

    DUAL_T = 1/(T-J+1) * sum_{k=0}^{T-J} std_{ddof=1}(p_k..p_{k+J-1}) * (1 - mean(p_k..p_{k+J-1})).

    Follows the official code (`dual` in `importance_evaluation.py`): the product of uncertainty
    (window std) and difficulty (1 - window mean) is averaged over every complete window of the
    first T epochs, the last one included. The authors score at T = 30 with J = 10 on CIFAR: stop
    the training after T epochs, or read the state then. Needs T >= J presentations.

    Raises:
      ValueError: naming how many pairs have fewer than J presentations.
    """
    j = _window(state)
    count = _counts(state, j, "DUAL", "one complete window")
    return (np.asarray(state["dual_sum"], np.float64) / (count - j + 1)).astype(np.float32)


def tdds_scores(state, *, decay: float = 0.9) -> np.ndarray:
    """Temporal dual-depth score (TDDS) at the last epoch seen (T), `[K, N] float32`; higher = kept.

    Per epoch t >= 1 (code's "KL divergence"): d_t = sum_c |q_{t,c} * (log(q_{t,c} + 1e-8) -
    log(q_{t-1,c} + 1e-8))| over the full softmax q, with |.| on each class term as in the code.
    Per window k (epochs k..k+J-1, terms d_{k+1}..d_{k+J-1}): w_k = ||d - mean(d)||_2, the L2 norm
    of the deviations, not divided by J-1 (the paper calls it a variance; the code takes the norm).
    Score: S = sum_{k=0}^{T-J} decay * (1 - decay)^(T-J-k) * w_k, the code's moving average (decay
    0.9 by default, so the last window weighs 0.9, the one before 0.09). The state keeps the last J
    window values: older windows, of relative weight at most (1 - decay)^J (1e-10 at the defaults),
    are left out; the score is exact when T <= 2J-1. Needs T >= J presentations.

    Args:
      state: the state dict. decay: the moving-average factor, in (0, 1].

    Raises:
      ValueError: for a decay outside (0, 1], or naming how many pairs have fewer than J
        presentations.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"TDDS decay is {decay}; use a factor in (0, 1], the paper's 0.9.")
    j = _window(state)
    count = _counts(state, j, "TDDS", "one complete window")
    windows = np.asarray(state["tdds_window"], np.float64)
    latest = count - j  # the newest window's number
    total = np.zeros(count.shape, np.float64)
    for age in range(j):
        slot = np.mod(latest - age, j)
        value = np.take_along_axis(windows, slot[..., None], axis=-1)[..., 0]
        weight = decay * (1.0 - decay) ** age
        total += np.where(latest - age >= 0, weight * value, 0.0)
    return total.astype(np.float32)


def mean_true_probs(state) -> np.ndarray:
    """Mean assigned-label probability over all presentations seen, `[K, N] float32`.

    DUAL's Beta sampling evaluates its density at this mean over the first T epochs (`pred_mean` in
    the code's `beta_sampling`), with T the DUAL scoring epoch: read it with `dual_scores`.

    Raises:
      ValueError: naming how many pairs were never presented.
    """
    count = _counts(state, 1, "the mean prediction", "at least one")
    return (np.asarray(state["prob_sum"], np.float64) / count).astype(np.float32)
