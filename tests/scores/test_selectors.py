"""Feature-geometry selectors: hand-computed picks and plain python reference loops."""

import numpy as np
import pytest

from datadiet_jax.scores.pruning import class_quotas, geometric, kept_indices


def _points(n=40, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _k_center_loop(x, budget, first):
    """The greedy rule: next is the point farthest from its nearest chosen centre."""
    chosen = [first]
    while len(chosen) < budget:
        far = [min(np.linalg.norm(x[i] - x[c]) for c in chosen) for i in range(len(x))]
        far = [-1.0 if i in chosen else f for i, f in enumerate(far)]
        chosen.append(int(np.argmax(far)))
    return chosen


def _herding_loop(x, budget):
    """Next is the point bringing the running sum closest to (t + 1) times the mean."""
    mu, chosen = x.mean(0), []
    while len(chosen) < budget:
        target = (len(chosen) + 1) * mu - x[chosen].sum(0)
        dist = [np.inf if i in chosen else np.linalg.norm(target - x[i]) for i in range(len(x))]
        chosen.append(int(np.argmin(dist)))
    return chosen


def _d2_loop(x, s, budget, k, gamma_f, gamma_r):
    """D2 on the undirected kNN graph (j ~ i if either is among the other's k nearest)."""
    n = len(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    adj = [set() for _ in range(n)]
    for i in range(n):
        for j in np.argsort(np.where(np.arange(n) == i, np.inf, d[i]), kind="stable")[:k]:
            adj[i].add(int(j))
            adj[int(j)].add(i)
    v = [s[i] + sum(np.exp(-gamma_f * d[i, j]) * s[j] for j in adj[i]) for i in range(n)]
    chosen = []
    while len(chosen) < budget:
        p = max((i for i in range(n) if i not in chosen), key=lambda i: (v[i], -i))
        for j in adj[p]:
            v[j] -= np.exp(-gamma_r * d[p, j]) * v[p]
        chosen.append(p)
    return chosen, v


def test_moderate_keeps_the_ranks_around_the_median():
    # Ranks of [5, 1, 4, 2, 3, 0]: idx 5, 1, 3, 4, 2, 0; M = 2 from rank (6 - 2) // 2 = 2.
    kept = kept_indices([5.0, 1.0, 4.0, 2.0, 3.0, 0.0], "moderate", prune_fraction=0.6)
    np.testing.assert_array_equal(kept, [3, 4])
    np.testing.assert_array_equal(geometric.moderate_window(np.arange(10.0)[::-1], 3), [4, 5, 6])


def test_k_center_greedy_hand_computed():
    # From A: farthest E (sqrt 101); then D (min(sqrt 50, sqrt 41) = 6.4 against B, C at 1);
    # then B and C tie at 1: the lower index, B.
    pts = np.array([[0, 0], [10, 0], [0, 1], [5, 5], [10, 1]], np.float32)
    np.testing.assert_array_equal(geometric.k_center_greedy(pts, 4, 0), [0, 4, 3, 1])


def test_k_center_greedy_equals_python_loop():
    x = _points(50)
    np.testing.assert_array_equal(geometric.k_center_greedy(x, 20, 7), _k_center_loop(x, 20, 7))


def test_herding_hand_computed():
    # Points 0, 1, 3, 5 on a line, mean 2.25: targets 2.25 -> 3; 4.5 - 3 = 1.5 -> 1;
    # 6.75 - 4 = 2.75 -> 5 (2.25 away, 0 is 2.75 away); then 0.
    pts = np.array([[0, 0], [1, 0], [3, 0], [5, 0]], np.float32)
    np.testing.assert_array_equal(geometric.herding(pts, 4), [2, 1, 3, 0])


def test_herding_equals_python_loop():
    x = _points(50, seed=1)
    np.testing.assert_array_equal(geometric.herding(x, 25), _herding_loop(x, 25))


def test_d2_hand_computed_small_graph():
    # Points 0, 1, 3, 7 on a line, scores 1, 2, 3, 4, k = 1: nearest 0->1, 1->0, 2->1, 3->2, so
    # the undirected edges are 0-1 (d 1), 1-2 (d 2), 2-3 (d 4). Forward, gamma_f = 1:
    #   x0 = 1 + 2 e^-1, x1 = 2 + e^-1 + 3 e^-2, x2 = 3 + 2 e^-2 + 4 e^-4, x3 = 4 + 3 e^-4.
    # Reverse, gamma_r = 0.1: pick 3 (4.055); x2 -= e^-0.4 x3 -> 0.626. Pick 1 (2.774);
    #   x0 -= e^-0.1 x1 -> -0.774, x2 -= e^-0.2 x1 -> -1.645. Pick 0, then 2.
    pts = np.array([[0, 0], [1, 0], [3, 0], [7, 0]], np.float32)
    s = np.array([1.0, 2.0, 3.0, 4.0])
    e = np.exp
    forward = [1 + 2 * e(-1), 2 + e(-1) + 3 * e(-2), 3 + 2 * e(-2) + 4 * e(-4), 4 + 3 * e(-4)]
    x, *_ = geometric.d2_graph_scores(pts, s, k=1, gamma_forward=1.0)
    np.testing.assert_allclose(np.asarray(x)[:4], forward, rtol=1e-5)
    got = geometric.d2_select(pts, s, 4, k=1, gamma_forward=1.0, gamma_reverse=0.1)
    np.testing.assert_array_equal(got, [3, 1, 0, 2])
    want, _ = _d2_loop(pts, s, 4, 1, 1.0, 0.1)
    assert want == [3, 1, 0, 2]


def test_d2_equals_python_loop():
    x = _points(40, seed=2)
    s = np.random.default_rng(3).random(40)
    want, _ = _d2_loop(x, s, 15, 5, 1.0, 0.1)
    np.testing.assert_array_equal(geometric.d2_select(x, s, 15), want)


def test_strategies_select_per_class_with_quotas():
    x = _points(60, seed=4)
    labels = np.random.default_rng(5).integers(0, 3, 60)
    scores = np.random.default_rng(6).random(60)
    quotas = class_quotas(labels, 30)
    for name in ("kcenter", "herding", "d2"):
        kept = kept_indices(scores, name, prune_fraction=0.5, labels=labels, features=x, seed=3)
        assert len(kept) == 30 and (np.diff(kept) > 0).all()
        for c, q in quotas.items():
            assert np.sum(labels[kept] == c) == q
    kept = kept_indices(None, "kcenter", prune_fraction=0.5, labels=labels, features=x, seed=3)
    want = []
    for c, q in quotas.items():
        members = np.flatnonzero(labels == c)
        first = int(np.random.default_rng([3, c]).integers(len(members)))
        want += list(members[_k_center_loop(x[members], q, first)])
    np.testing.assert_array_equal(kept, np.sort(want))
    kept = kept_indices(None, "herding", prune_fraction=0.5, labels=labels, features=x)
    want = [
        m[_herding_loop(x[m], quotas[c])] for c in quotas for m in [np.flatnonzero(labels == c)]
    ]
    np.testing.assert_array_equal(kept, np.sort(np.concatenate(want)))


def test_d2_beta_drops_each_class_hardest_first():
    x = _points(20, seed=7)
    labels = np.repeat([0, 1], 10)
    scores = np.arange(20.0)  # the hardest of each class: 9 and 19
    kept = kept_indices(scores, "d2", prune_fraction=0.5, labels=labels, features=x, beta=0.1)
    assert 9 not in kept and 19 not in kept and len(kept) == 10


def test_seed_features_concatenate_and_first_seed_is_single_run():
    feats = np.stack([_points(30, seed=8), _points(30, seed=9)])
    labels = np.random.default_rng(10).integers(0, 2, 30)
    scores = np.random.default_rng(11).random(30)
    for name in ("kcenter", "herding", "d2"):
        run = lambda f, name=name: kept_indices(  # noqa: E731
            scores, name, prune_fraction=0.4, labels=labels, features=f, seed=1
        )
        np.testing.assert_array_equal(run(feats[:1]), run(feats[0]))
        joined = np.concatenate([feats[0], feats[1]], axis=1) / np.sqrt(2)
        np.testing.assert_array_equal(run(feats), run(joined))
    combined = geometric.combine_features(feats, 30)
    d_joint = np.sum((combined[0] - combined[1]) ** 2)
    d_seeds = [np.sum((f[0] - f[1]) ** 2) for f in feats]
    np.testing.assert_allclose(d_joint, np.mean(d_seeds), rtol=1e-5)  # mean over seeds


def test_selector_errors():
    x = _points(10)
    with pytest.raises(ValueError, match="'kcenter' needs features; pass features="):
        kept_indices(None, "kcenter", prune_fraction=0.5, num_examples=10)
    with pytest.raises(ValueError, match=r"features have shape \(9, 3\)"):
        kept_indices(None, "herding", prune_fraction=0.5, labels=np.zeros(10, int), features=x[:9])
    with pytest.raises(ValueError, match="features contain NaN"):
        kept_indices(None, "kcenter", prune_fraction=0.5, features=np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="needs scores"):
        kept_indices(None, "d2", prune_fraction=0.5, features=x)
    with pytest.raises(ValueError, match="'d2' needs finite"):
        kept_indices(np.full(10, np.inf), "d2", prune_fraction=0.5, features=x)
