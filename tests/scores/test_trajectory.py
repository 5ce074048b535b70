"""Dyn-Unc, DUAL and TDDS: the per-presentation state against plain-numpy references of each
paper's code, computed directly from the full trajectories; hand values; jit; padding; refusals."""

import jax
import numpy as np
import pytest

from datadiet_jax.scores import trajectory

# True-label probability trajectories, [K=2][N=4][epoch], written by hand.
TRUE_PROBS = np.array(
    [
        [
            [0.20, 0.40, 0.60, 0.90, 0.85, 0.95, 0.97, 0.99],
            [0.50, 0.10, 0.70, 0.30, 0.80, 0.20, 0.90, 0.60],
            [0.33, 0.34, 0.35, 0.36, 0.37, 0.38, 0.39, 0.40],
            [0.90, 0.05, 0.05, 0.90, 0.50, 0.50, 0.10, 0.70],
        ],
        [
            [0.10, 0.15, 0.25, 0.45, 0.70, 0.80, 0.85, 0.90],
            [0.60, 0.60, 0.20, 0.20, 0.65, 0.65, 0.30, 0.95],
            [0.05, 0.90, 0.10, 0.85, 0.15, 0.80, 0.20, 0.75],
            [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 0.47],
        ],
    ]
)
LABELS = np.array([0, 2, 1, 0])  # of the 4 examples (C = 3)
# How each example splits the remaining mass between its two other classes, by hand.
OTHER_SHARE = np.array([0.7, 0.5, 0.2, 0.9])


def full_probs(true_probs):
    """[K, N, E, C=3] softmax trajectories with the true-label entry `true_probs`."""
    k, n, e = true_probs.shape
    out = np.zeros((k, n, e, 3))
    for i in range(n):
        others = [c for c in range(3) if c != LABELS[i]]
        out[:, i, :, LABELS[i]] = true_probs[:, i]
        out[:, i, :, others[0]] = (1 - true_probs[:, i]) * OTHER_SHARE[i]
        out[:, i, :, others[1]] = (1 - true_probs[:, i]) * (1 - OTHER_SHARE[i])
    return out


def run(trajectories, num_epochs, window, *, batch_size=3, update=trajectory.update_dynamics):
    """Feeds `num_epochs` epochs: per seed and epoch a fresh permutation, batches of `batch_size`
    whose last one is padded (padding rows point at real examples and carry garbage)."""
    k, n, _, c = trajectories.shape
    state = trajectory.init_dynamics(k, n, c, window=window)
    rng = np.random.default_rng(7)
    steps = -(-n // batch_size)
    for epoch in range(num_epochs):
        order = np.stack([rng.permutation(n) for _ in range(k)])  # [K, N]
        for step in range(steps):
            index = np.zeros((k, batch_size), np.int32)
            mask = np.zeros((k, batch_size))
            probs = np.tile(np.float32([1.0, 0.0, 0.0]), (k, batch_size, 1))
            labels = np.full((k, batch_size), 2)
            for s in range(k):
                for b in range(batch_size):
                    pos = step * batch_size + b
                    if pos < n:
                        i = order[s, pos]
                        index[s, b], mask[s, b] = i, 1
                        probs[s, b], labels[s, b] = trajectories[s, i, epoch], LABELS[i]
                    else:
                        index[s, b] = (s + b) % n  # a real example, masked out
            state = update(state, index, probs, labels, mask)
    return state


def dyn_unc_reference(p, window):
    """He et al.'s code: mean over windows k = 0..T-J-1 of std(ddof=1), the last one left out."""
    t = len(p)
    return np.mean([np.std(p[k : k + window], ddof=1) for k in range(t - window)])


def dual_reference(p, window):
    """Cho et al.'s code: mean over windows k = 0..T-J of std(ddof=1) * (1 - mean)."""
    t = len(p)
    vals = []
    for k in range(t - window + 1):
        w = p[k : k + window]
        vals.append(np.std(w, ddof=1) * (1 - np.mean(w)))
    return np.mean(vals)


def tdds_reference(q, window, decay, first=0):
    """Zhang et al.'s code on one example's [T, C] softmax trajectory, from window `first` on."""
    t = len(q)
    total = 0.0
    for k in range(first, t - window + 1):
        terms = []
        for j in range(window - 1):
            log = np.log(q[k + j + 1] + 1e-8) - np.log(q[k + j] + 1e-8)
            terms.append(np.sum(np.abs(q[k + j + 1] * log)))
        terms = np.array(terms)
        norm = np.sqrt(np.sum((terms - terms.mean()) ** 2))
        total += norm * decay * (1 - decay) ** (t - window - k)
    return total


def per_pair(fn, array, *args):
    return np.array([[fn(array[s, i], *args) for i in range(array.shape[1])] for s in range(2)])


@pytest.mark.parametrize("num_epochs", [4, 5])
def test_scores_match_the_references_under_jit(num_epochs):
    window = 3
    q = full_probs(TRUE_PROBS)
    state = run(q, num_epochs, window, update=jax.jit(trajectory.update_dynamics))
    p = TRUE_PROBS[:, :, :num_epochs]
    np.testing.assert_array_equal(state["count"], np.full((2, 4), num_epochs))
    np.testing.assert_allclose(
        trajectory.dyn_unc_scores(state), per_pair(dyn_unc_reference, p, window), rtol=1e-5
    )
    np.testing.assert_allclose(
        trajectory.dual_scores(state), per_pair(dual_reference, p, window), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(trajectory.mean_true_probs(state), p.mean(-1), rtol=1e-6)
    # T <= 2J-1: every window is still in the state, so TDDS is exact for any decay.
    for decay in (0.9, 0.5):
        np.testing.assert_allclose(
            trajectory.tdds_scores(state, decay=decay),
            per_pair(tdds_reference, q[:, :, :num_epochs], window, decay),
            rtol=1e-4,
            atol=1e-6,
        )


def test_long_run_dyn_unc_dual_exact_and_tdds_within_its_truncation_bound():
    window, num_epochs = 3, 8
    q = full_probs(TRUE_PROBS)
    state = run(q, num_epochs, window, batch_size=2)
    np.testing.assert_allclose(
        trajectory.dyn_unc_scores(state), per_pair(dyn_unc_reference, TRUE_PROBS, window), rtol=1e-5
    )
    np.testing.assert_allclose(
        trajectory.dual_scores(state), per_pair(dual_reference, TRUE_PROBS, window), rtol=1e-5
    )
    # 6 windows (k = 0..5); the state keeps the last J = 3: the code's sum from k = 3 on.
    got = trajectory.tdds_scores(state)
    np.testing.assert_allclose(
        got, per_pair(tdds_reference, q, window, 0.9, 3), rtol=1e-4, atol=1e-6
    )
    # The dropped windows weigh 0.9 * (0.1**3 + 0.1**4 + 0.1**5) < 1e-3 of a window value (each
    # window value is a norm of J-1 = 2 terms of at most ~2.5 here, so below 4).
    full = per_pair(tdds_reference, q, window, 0.9)
    assert np.all(np.abs(got - full) <= 1e-3 * 4) and np.any(np.abs(got - full) > 1e-6)
    # ... and with decay 0.99 the dropped weight (< 1e-6) is below float32 noise.
    np.testing.assert_allclose(
        trajectory.tdds_scores(state, decay=0.99),
        per_pair(tdds_reference, q, window, 0.99),
        rtol=1e-4,
        atol=1e-6,
    )


def test_hand_computed_values():
    # One example over 4 epochs with J = 3, true-label probs 0.2, 0.4, 0.6, 0.9 (2 classes).
    # Dyn-Unc: only the window [0.2, 0.4, 0.6] counts (the last is left out): std = 0.2.
    # DUAL: [0.2, 0.4, 0.6] -> 0.2 * (1 - 0.4) = 0.12; [0.4, 0.6, 0.9] -> std 0.2516611 *
    #   (1 - 0.6333333) = 0.0922758; mean 0.1061379.
    p = np.array([0.2, 0.4, 0.6, 0.9])
    state = trajectory.init_dynamics(1, 1, 2, window=3)
    for x in p:
        state = trajectory.update_dynamics(
            state, np.array([[0]]), np.float32([[[x, 1 - x]]]), np.array([[0]]), np.ones((1, 1))
        )
    np.testing.assert_allclose(trajectory.dyn_unc_scores(state), [[0.2]], rtol=1e-5)
    np.testing.assert_allclose(trajectory.dual_scores(state), [[0.1061379]], rtol=1e-5)

    # TDDS, J = 3, softmax [0.5, 0.5] -> [0.8, 0.2] -> [0.8, 0.2]:
    # d1 = 0.8 ln(0.8/0.5) + 0.2 |ln(0.2/0.5)| = 0.5592610, d2 = 0; the window's deviations are
    # +-0.2796305, norm 0.3954573; one window: S = 0.9 * 0.3954573 = 0.3559116.
    state = trajectory.init_dynamics(1, 1, 2, window=3)
    for q in ([0.5, 0.5], [0.8, 0.2], [0.8, 0.2]):
        state = trajectory.update_dynamics(
            state, np.array([[0]]), np.float32([[q]]), np.array([[0]]), np.ones((1, 1))
        )
    np.testing.assert_allclose(trajectory.tdds_scores(state), [[0.3559116]], rtol=1e-5)


def test_jit_matches_eager_update():
    q = full_probs(TRUE_PROBS)
    eager = run(q, 5, 3)
    jitted = run(q, 5, 3, update=jax.jit(trajectory.update_dynamics))
    for key in eager:
        np.testing.assert_allclose(np.asarray(jitted[key]), np.asarray(eager[key]), atol=1e-6)


def test_padding_rows_change_nothing():
    state = trajectory.init_dynamics(1, 2, 3, window=3)
    probs = np.float32([[[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]]])
    real = trajectory.update_dynamics(
        state, np.array([[0, 1]]), probs, np.array([[2, 0]]), [[1, 1]]
    )
    # The same presentations with a padding row pointing at example 0 (mask 0, garbage probs).
    padded = trajectory.update_dynamics(
        state,
        np.array([[0, 1, 0]]),
        np.concatenate([probs, np.float32([[[1, 0, 0]]])], 1),
        np.array([[2, 0, 1]]),
        [[1, 1, 0]],
    )
    for key in real:
        np.testing.assert_array_equal(np.asarray(padded[key]), np.asarray(real[key]))


def test_too_few_presentations_raise_one_line_errors():
    window = 3
    state = run(full_probs(TRUE_PROBS), window, window)  # exactly J epochs
    # Dyn-Unc leaves out the window ending at the last epoch, so it needs J + 1.
    with pytest.raises(
        ValueError, match=r"Dyn-Unc is undefined for 8 \(seed, example\) pairs"
    ) as e:
        trajectory.dyn_unc_scores(state)
    msg = str(e.value)
    assert "train_epochs >= 4" in msg and "dynamics_window" in msg and "\n" not in msg
    trajectory.dual_scores(state), trajectory.tdds_scores(state)  # J epochs are enough for these
    short = run(full_probs(TRUE_PROBS), window - 1, window)
    for fn, name in ((trajectory.dual_scores, "DUAL"), (trajectory.tdds_scores, "TDDS")):
        with pytest.raises(ValueError, match=rf"{name} is undefined for 8 .*train_epochs >= 3"):
            fn(short)


def test_one_unpresented_example_is_counted():
    state = run(full_probs(TRUE_PROBS), 4, 3)
    state = dict(state, count=state["count"].at[1, 2].set(2))
    with pytest.raises(ValueError, match=r"DUAL is undefined for 1 \(seed, example\) pairs"):
        trajectory.dual_scores(state)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="at least 2 epochs"):
        trajectory.init_dynamics(1, 2, 3, window=1)
    state = run(full_probs(TRUE_PROBS), 3, 3)
    with pytest.raises(ValueError, match=r"decay is 0.0"):
        trajectory.tdds_scores(state, decay=0.0)
