"""Tests of the figure writers: files written, summaries computed right, bad rows rejected."""

import csv
import os

import numpy as np
import pytest

from datadiet_jax.report import numbers, plots


def _assert_written(paths, tmp_path, stem):
    assert paths == [str(tmp_path / f"{stem}.png"), str(tmp_path / f"{stem}.pdf")]
    with open(paths[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(paths[1], "rb") as f:
        assert f.read(5) == b"%PDF-"
    assert all(os.path.getsize(p) > 1000 for p in paths)
    # The atomic write leaves no temporary files behind.
    assert not [p for p in os.listdir(paths[0].rsplit("/", 1)[0]) if p.endswith(".tmp")]


def test_summarize_by_hand():
    # Percentile positions: 0.16 * 4 = 0.64 -> 1 + 0.64; 0.84 * 4 = 3.36 -> 4 + 0.36.
    mean, p16, p84 = plots.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (mean, p16, p84) == pytest.approx((3.0, 1.64, 4.36))
    assert plots.summarize([0.7]) == pytest.approx((0.7, 0.7, 0.7))
    # Two values: positions 0.16 and 0.84 between them.
    assert plots.summarize([0.0, 1.0]) == pytest.approx((0.5, 0.16, 0.84))
    with pytest.raises(ValueError, match="no values"):
        plots.summarize([])


def test_summarize_matches_numpy_on_random_values():
    values = np.random.default_rng(0).normal(size=13)
    mean, p16, p84 = plots.summarize(values)
    srt = np.sort(values)
    pos16, pos84 = 0.16 * 12, 0.84 * 12
    ref16 = srt[int(pos16)] + (pos16 - int(pos16)) * (srt[int(pos16) + 1] - srt[int(pos16)])
    ref84 = srt[int(pos84)] + (pos84 - int(pos84)) * (srt[int(pos84) + 1] - srt[int(pos84)])
    assert mean == pytest.approx(sum(values) / 13)
    assert p16 == pytest.approx(ref16) and p84 == pytest.approx(ref84)


def test_summarize_by_groups_and_sorts():
    rows = [
        {"offset": "10", "test_accuracy": "0.8"},
        {"offset": "0", "test_accuracy": "0.5"},
        {"offset": "10", "test_accuracy": "0.6"},
        {"offset": "0", "test_accuracy": "0.7"},
    ]
    xs, means, lo, hi = plots.summarize_by(rows, "offset")
    np.testing.assert_allclose(xs, [0, 10])
    np.testing.assert_allclose(means, [0.6, 0.7])
    np.testing.assert_allclose(lo, [0.5 + 0.16 * 0.2, 0.6 + 0.16 * 0.2])
    np.testing.assert_allclose(hi, [0.5 + 0.84 * 0.2, 0.6 + 0.84 * 0.2])


def _offset_rows():
    rng = np.random.default_rng(1)
    rows = []
    for noise in (0.0, 0.2):
        for seed in range(3):
            for offset in (0, 100, 200, 400):
                acc = 0.8 - 0.1 * noise + 0.0002 * offset * noise + 0.01 * rng.normal()
                rows.append(
                    {
                        "offset": offset,
                        "noise_fraction": noise,
                        "test_accuracy": acc,
                        "strategy": "offset",
                    }
                )
            rows.append(
                {"offset": 0, "noise_fraction": noise, "test_accuracy": 0.85, "strategy": "full"}
            )
            rows.append(
                {
                    "offset": 0,
                    "noise_fraction": noise,
                    "test_accuracy": 0.75 + 0.01 * seed,
                    "strategy": "random",
                }
            )
    return rows


def test_plot_offset_curves(tmp_path):
    _assert_written(plots.plot_offset_curves(_offset_rows(), tmp_path / "fig2"), tmp_path, "fig2")


def test_plot_offset_curves_from_csv_strings(tmp_path):
    path = tmp_path / "results.csv"
    rows = _offset_rows()
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    # A '.png' ending on the stem is dropped; the parent folder is created.
    paths = plots.plot_offset_curves(read, tmp_path / "sub" / "fig2.png")
    _assert_written(paths, tmp_path / "sub", "fig2")


def test_plot_offset_curves_bad_rows(tmp_path):
    rows = _offset_rows()
    del rows[3]["strategy"]
    with pytest.raises(ValueError, match="row 3 lacks strategy; plot_offset_curves needs keys"):
        plots.plot_offset_curves(rows, tmp_path / "x")
    rows = _offset_rows()
    rows[0]["strategy"] = "hardest"
    with pytest.raises(ValueError, match="strategy='hardest'"):
        plots.plot_offset_curves(rows, tmp_path / "x")
    rows = _offset_rows()
    rows[2]["test_accuracy"] = "n/a"
    with pytest.raises(ValueError, match="row 2 has test_accuracy='n/a'"):
        plots.plot_offset_curves(rows, tmp_path / "x")
    with pytest.raises(ValueError, match="got no rows"):
        plots.plot_offset_curves([], tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_plot_pruning_curves(tmp_path):
    rows = []
    for method in ("el2n@20", "grand@0", "grand@20", "forgetting", "random"):
        for fraction in (0.1, 0.3, 0.5):
            for seed in range(2):
                rows.append(
                    {
                        "method": method,
                        "prune_fraction": fraction,
                        "test_accuracy": 0.9 - 0.2 * fraction + 0.01 * seed,
                    }
                )
    rows += [{"method": "full", "prune_fraction": 0.0, "test_accuracy": a} for a in (0.91, 0.92)]
    _assert_written(plots.plot_pruning_curves(rows, tmp_path / "fig1b"), tmp_path, "fig1b")
    with pytest.raises(ValueError, match="row 0 lacks method, prune_fraction"):
        plots.plot_pruning_curves([{"test_accuracy": 0.5}], tmp_path / "x")


def test_plot_score_epoch_curves(tmp_path):
    rows = [
        {"score": s, "score_epoch": e, "test_accuracy": 0.8 + 0.01 * e + 0.001 * r}
        for s in ("el2n", "grand")
        for e in (0, 5, 10, 20)
        for r in range(3)
    ]
    _assert_written(plots.plot_score_epoch_curves(rows, tmp_path / "fig1a"), tmp_path, "fig1a")
    with pytest.raises(ValueError, match="row 1 lacks score_epoch"):
        plots.plot_score_epoch_curves(
            [rows[0], {"score": "el2n", "test_accuracy": 0.5}], tmp_path / "x"
        )
    with pytest.raises(ValueError, match="pass dicts"):
        plots.plot_score_epoch_curves([("el2n", 0, 0.5)], tmp_path / "x")


def test_plot_score_histograms(tmp_path):
    rng = np.random.default_rng(2)
    named = {f"s{i}": rng.gamma(2.0, size=300) for i in range(5)}  # 5 panels: two rows
    hists = numbers.score_histograms(named, bins=20)
    _assert_written(plots.plot_score_histograms(hists, tmp_path / "hist"), tmp_path, "hist")
    with_inf = numbers.score_histograms({"forgetting": [0.0, 1.0, 1.0, 3.0, np.inf]}, bins=3)
    _assert_written(plots.plot_score_histograms(with_inf, tmp_path / "inf"), tmp_path, "inf")
    with pytest.raises(ValueError, match="3 counts and 3 edges"):
        plots.plot_score_histograms({"a": (np.ones(3), np.ones(3))}, tmp_path / "x")
    with pytest.raises(ValueError, match="no histograms"):
        plots.plot_score_histograms({}, tmp_path / "x")


def test_plot_spearman(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.normal(size=100)
    names, matrix = numbers.spearman_matrix(
        {"seed0": a, "seed1": a + rng.normal(size=100), "norm": rng.normal(size=100)}
    )
    _assert_written(plots.plot_spearman(names, matrix, tmp_path / "rho"), tmp_path, "rho")
    with pytest.raises(ValueError, match=r"shape \(3, 3\) for 2 names"):
        plots.plot_spearman(names[:2], matrix, tmp_path / "x")


@pytest.mark.parametrize("channels, dtype", [(1, np.uint8), (3, np.float32)])
def test_plot_image_grid(tmp_path, channels, dtype):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(30, 8, 8, channels)).astype(dtype)
    labels = np.repeat(np.arange(3), 10)
    scores = rng.normal(size=30)
    by_class = numbers.top_bottom_per_class(scores, labels, 3, k=2)
    noisy_labels = labels.copy()
    noisy_labels[by_class[0]["hardest"][0]] = 2  # shown in red
    paths = plots.plot_image_grid(
        images, noisy_labels, by_class, tmp_path / "grid", class_names=["a", "b", "c"]
    )
    _assert_written(paths, tmp_path, "grid")


def test_plot_image_grid_errors(tmp_path):
    images = np.zeros((4, 8, 8, 2))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        plots.plot_image_grid(images, np.zeros(4, int), {0: {}}, tmp_path / "x")
    images = np.zeros((4, 8, 8, 1))
    with pytest.raises(ValueError, match="outside the 4 images"):
        plots.plot_image_grid(
            images, np.zeros(4, int), {0: {"hardest": [9], "easiest": []}}, tmp_path / "x"
        )
    with pytest.raises(ValueError, match="needs"):
        plots.plot_image_grid(images, np.zeros(4, int), {0: {"top": [1]}}, tmp_path / "x")


def test_pdf_is_reproducible(tmp_path):
    rows = _offset_rows()
    a = plots.plot_offset_curves(rows, tmp_path / "a")
    b = plots.plot_offset_curves(rows, tmp_path / "b")
    with open(a[1], "rb") as fa, open(b[1], "rb") as fb:
        assert fa.read() == fb.read()
