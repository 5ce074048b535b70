"""Tests of the reports against hand-computed values and brute-force references."""

import json

import numpy as np
import pytest
from scipy import stats

from datadiet_jax.report import numbers


def _pairwise_auc(scores, mask):
    """Brute force: P(noisy score > clean score) + 0.5 P(equal) over all pairs."""
    pos, neg = scores[mask], scores[~mask]
    total = 0.0
    for p in pos:
        for q in neg:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(pos) * len(neg))


def test_noise_detection_hand_case():
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.7, 0.2])
    noisy = np.array([True, False, False, True, False, False])
    out = numbers.noise_detection(scores, noisy, ks=[1, 2, 3])
    # Top order: 0 (noisy), 2, 4, 3 (noisy), 5, 1.
    assert out["num_examples"] == 6 and out["num_noisy"] == 2
    assert out["precision_at_k"] == {1: 1.0, 2: 0.5, 3: pytest.approx(1 / 3)}
    assert out["recall_at_k"] == {1: 0.5, 2: 0.5, 3: 0.5}
    # Pairs (noisy, clean): 0.9 beats all 4; 0.3 beats 0.1 and 0.2 -> 6 of 8.
    assert out["auc"] == pytest.approx(6 / 8)


def test_noise_detection_ties_count_half():
    scores = np.array([1.0, 1.0, 0.0, 1.0])
    noisy = np.array([True, False, False, False])
    # Noisy 1.0 vs clean [1.0, 0.0, 1.0]: 0.5 + 1 + 0.5 = 2 of 3.
    assert numbers.roc_auc(scores, noisy) == pytest.approx(2 / 3)
    # Top-1 among three tied 1.0s goes to the lowest index (0, noisy).
    assert numbers.noise_detection(scores, noisy, ks=[1])["precision_at_k"] == {1: 1.0}


def test_auc_matches_pairwise_count_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(5):
        n = 60 + trial * 7
        scores = np.round(rng.normal(size=n), 1)  # rounding creates ties
        noisy = rng.random(n) < 0.3
        noisy[0], noisy[1] = True, False
        assert numbers.roc_auc(scores, noisy) == pytest.approx(_pairwise_auc(scores, noisy))


def test_precision_matches_loop_on_random_data():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 10, size=200).astype(float)
    noisy = rng.random(200) < 0.2
    out = numbers.noise_detection(scores, noisy)
    order = sorted(range(200), key=lambda i: (-scores[i], i))
    num_noisy = int(noisy.sum())
    # Default ks: number of noisy plus 1%, 5%, 10%, 20% of 200.
    assert sorted(out["precision_at_k"]) == sorted({num_noisy, 2, 10, 20, 40})
    for k, precision in out["precision_at_k"].items():
        hits = sum(noisy[i] for i in order[:k])
        assert precision == pytest.approx(hits / k)
        assert out["recall_at_k"][k] == pytest.approx(hits / num_noisy)


def test_perfect_and_inverted_detectors():
    scores = np.arange(10.0)
    noisy = scores >= 7
    assert numbers.roc_auc(scores, noisy) == 1.0
    assert numbers.roc_auc(-scores, noisy) == 0.0
    assert numbers.noise_detection(scores, noisy)["precision_at_k"][3] == 1.0


def test_noise_detection_errors():
    scores = np.arange(4.0)
    with pytest.raises(ValueError, match="marks 0 of 4 examples as noisy"):
        numbers.noise_detection(scores, np.zeros(4, bool))
    with pytest.raises(ValueError, match="marks 4 of 4 examples as noisy"):
        numbers.noise_detection(scores, np.ones(4, bool))
    with pytest.raises(ValueError, match="noisy mask has shape"):
        numbers.noise_detection(scores, np.zeros(3, bool))
    with pytest.raises(ValueError, match="boolean"):
        numbers.noise_detection(scores, np.array([0, 2, 1, 0]))
    with pytest.raises(ValueError, match=r"must lie in \[1, 4\]"):
        numbers.noise_detection(scores, np.array([1, 0, 1, 0]), ks=[5])
    with pytest.raises(ValueError, match="NaN/-inf"):
        numbers.noise_detection([0.0, np.nan], np.array([True, False]))
    # 0/1 integer masks are accepted.
    assert numbers.roc_auc(scores, np.array([0, 0, 1, 1])) == 1.0


def test_spearman_matrix_matches_scipy():
    rng = np.random.default_rng(2)
    a = rng.normal(size=50)
    named = {
        "a": a,
        "a_cubed": a**3,  # monotone: rho = 1
        "neg_a": -a,  # rho = -1
        "b": np.round(rng.normal(size=50), 1),  # with ties
    }
    names, matrix = numbers.spearman_matrix(named)
    assert names == ["a", "a_cubed", "neg_a", "b"]
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(matrix, matrix.T)
    assert matrix[0, 1] == pytest.approx(1.0) and matrix[0, 2] == pytest.approx(-1.0)
    for i, ni in enumerate(names):
        for j, nj in enumerate(names):
            ref = stats.spearmanr(named[ni], named[nj]).statistic
            assert matrix[i, j] == pytest.approx(ref, abs=1e-12)


def test_spearman_constant_vector_is_nan_and_errors():
    names, matrix = numbers.spearman_matrix({"x": np.arange(5.0), "c": np.ones(5)})
    assert np.isnan(matrix[0, 1]) and np.isnan(matrix[1, 0])
    assert matrix[0, 0] == 1.0 and matrix[1, 1] == 1.0
    with pytest.raises(ValueError, match="different lengths"):
        numbers.spearman_matrix({"x": np.arange(5.0), "y": np.arange(4.0)})
    with pytest.raises(ValueError, match="empty"):
        numbers.spearman_matrix({})


def test_input_norms():
    images = np.zeros((3, 2, 2, 1), np.uint8)
    images[0, 0, 0, 0] = 3
    images[0, 1, 1, 0] = 4
    images[2] = 200  # uint8 squares must not overflow
    np.testing.assert_allclose(numbers.input_norms(images), [5.0, 0.0, 400.0])
    x = np.random.default_rng(3).normal(size=(4, 3, 5, 3)).astype(np.float32)
    ref = [np.sqrt(sum(float(v) ** 2 for v in x[i].ravel())) for i in range(4)]
    np.testing.assert_allclose(numbers.input_norms(x), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="pass a batch"):
        numbers.input_norms(np.ones(4))


def test_class_counts():
    labels = np.array([0, 1, 1, 2, 2, 2, 0])
    counts = numbers.class_counts(np.array([0, 2, 3, 6]), labels, 4)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [2, 1, 1, 0])
    with pytest.raises(ValueError, match="outside the 7 examples"):
        numbers.class_counts(np.array([7]), labels, 4)
    with pytest.raises(ValueError, match="num_classes is 2"):
        numbers.class_counts(np.array([0]), labels, 2)
    with pytest.raises(ValueError, match="int indices"):
        numbers.class_counts(np.array([0.5]), labels, 3)


def test_score_histograms():
    scores = {"u": np.array([0.0, 0.1, 0.5, 0.9, 1.0]), "v": np.arange(10.0)}
    hists = numbers.score_histograms(scores, bins=2)
    counts, edges, num_inf = hists["u"]
    np.testing.assert_array_equal(counts, [2, 3])  # the edge 0.5 falls in the upper bin
    np.testing.assert_allclose(edges, [0.0, 0.5, 1.0])
    assert num_inf == 0
    counts, edges, _ = hists["v"]
    np.testing.assert_array_equal(counts, [5, 5])
    # +inf scores (never learned) are counted apart; the bins span the finite ones.
    counts, edges, num_inf = numbers.score_histograms({"f": [0.0, 2.0, np.inf]}, bins=2)["f"]
    np.testing.assert_array_equal(counts, [1, 1])
    np.testing.assert_allclose(edges, [0.0, 1.0, 2.0])
    assert num_inf == 1
    assert sum(numbers.score_histograms({"v": np.arange(10.0)})["v"][0]) == 10
    with pytest.raises(ValueError, match="bins is 0"):
        numbers.score_histograms(scores, bins=0)


def test_top_bottom_per_class():
    scores = np.array([0.5, 0.9, 0.1, 0.7, 0.3, 0.9, 0.2])
    labels = np.array([0, 0, 0, 1, 1, 0, 1])
    out = numbers.top_bottom_per_class(scores, labels, 3, k=2)
    # Class 0: indices 0, 1, 2, 5 with scores 0.5, 0.9, 0.1, 0.9 (tie 1 vs 5 -> 1 first).
    assert out[0] == {"hardest": [1, 5], "easiest": [2, 0]}
    assert out[1] == {"hardest": [3, 4], "easiest": [6, 4]}
    assert out[2] == {"hardest": [], "easiest": []}
    small = numbers.top_bottom_per_class(scores, labels, 3, k=5)
    assert small[1] == {"hardest": [3, 4, 6], "easiest": [6, 4, 3]}
    with pytest.raises(ValueError, match="k is 0"):
        numbers.top_bottom_per_class(scores, labels, 3, k=0)
    with pytest.raises(ValueError, match="integer class labels"):
        numbers.top_bottom_per_class(scores, labels[:3], 3, k=1)


def test_jsonable_round_trip():
    names, matrix = numbers.spearman_matrix({"x": np.arange(5.0), "c": np.ones(5)})
    payload = {
        "names": names,
        "matrix": matrix,
        "hist": numbers.score_histograms({"x": np.arange(5.0)}, bins=2),
        "noise": numbers.noise_detection(np.arange(4.0), np.array([0, 0, 1, 1])),
        np.int64(3): np.float32(0.5),
    }
    text = json.dumps(numbers.jsonable(payload))
    back = json.loads(text)
    assert back["matrix"][0][1] is None  # NaN becomes null
    assert back["hist"]["x"][0] == [2, 3]
    assert back["noise"]["auc"] == 1.0
    assert back["3"] == 0.5
