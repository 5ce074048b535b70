"""The crossover study's analysis on hand-made rows: means, stds and n over healthy seeds, the
better strategy and its margin in seed spreads, where the crossover lies, and the theory check."""

import numpy as np
import pytest

from datadiet_jax.report import crossover


def _rows(n_examples, score, strategy, fraction, accuracies, status=None):
    kept = round(n_examples * (1 - fraction))
    status = status or ["ok"] * len(accuracies)
    return [
        dict(
            num_examples=n_examples,
            score=score,
            strategy=strategy,
            prune_fraction=fraction,
            num_kept=kept,
            seed=s,
            test_accuracy=a,
            status=st,
        )
        for s, (a, st) in enumerate(zip(accuracies, status, strict=True))
    ]


def _grid(n_examples, winners, fractions=(0.3, 0.5, 0.7, 0.9)):
    """Rows where `winners[i]` is better at fractions[i]: it gets 0.8, the other 0.7, random
    0.75, each with seeds spread by +-0.01."""
    rows = []
    for f, w in zip(fractions, winners, strict=True):
        hard, easy = (0.8, 0.7) if w == "hardest" else (0.7, 0.8)
        rows += _rows(n_examples, "el2n@1", "hardest", f, [hard - 0.01, hard, hard + 0.01])
        rows += _rows(n_examples, "el2n@1", "easiest", f, [easy - 0.01, easy, easy + 0.01])
        rows += _rows(n_examples, "random", "random", f, [0.74, 0.75, 0.76])
    return rows


def test_points_leave_unhealthy_seeds_out_and_give_the_sample_std():
    rows = _rows(1000, "el2n@1", "hardest", 0.5, [0.8, 0.9, 0.1], ["ok", "ok", "collapsed"])
    (p,) = crossover.points(rows)
    assert (p["n"], p["left_out"], p["num_kept"]) == (2, 1, 500)
    assert p["mean"] == pytest.approx(0.85)
    assert p["std"] == pytest.approx(np.sqrt(((0.05) ** 2 * 2) / 1))  # ddof=1 by hand
    (one,) = crossover.points(_rows(1000, "el2n@1", "hardest", 0.5, [0.8]))
    assert one["std"] is None and one["n"] == 1 and one["smallest_class_share"] is None
    shares = _rows(1000, "el2n@1", "hardest", 0.5, [0.8, 0.9])
    shares[0]["smallest_class_share"], shares[1]["smallest_class_share"] = "0.0", "0.5"
    assert crossover.points(shares)[0]["smallest_class_share"] == 0.0


def test_phase_names_the_better_strategy_and_its_margin_in_spreads():
    rows = _rows(100, "el2n@1", "hardest", 0.5, [0.60, 0.62, 0.64])
    rows += _rows(100, "el2n@1", "easiest", 0.5, [0.70, 0.72, 0.74])
    rows += _rows(100, "random", "random", 0.5, [0.66, 0.67, 0.68])
    (r,) = crossover.phase(crossover.points(rows), "el2n@1")
    assert r["better"] == "easiest"
    assert r["margin"] == pytest.approx(0.72 - 0.67)
    # stds 0.02 (easiest) and 0.01 (random): spread sqrt((0.02^2 + 0.01^2) / 2).
    spread = np.sqrt((0.02**2 + 0.01**2) / 2)
    assert r["spread"] == pytest.approx(spread)
    assert r["margin_in_spread"] == pytest.approx(0.05 / spread)
    assert crossover.phase(crossover.points(rows), "grand@1") == []


@pytest.mark.parametrize(
    "winners, text, low, high, kept",
    [
        (
            ("hardest", "hardest", "easiest", "easiest"),
            "between 0.5 and 0.7",
            0.5,
            0.7,
            "1,500 to 2,500",
        ),
        (("hardest",) * 4, "above 0.9", 0.9, 1.0, "fewer than 500"),
        (("easiest",) * 4, "below 0.3", 0.0, 0.3, "more than 3,500"),
        (("easiest", "hardest", "easiest", "easiest"), "none: mixed", None, None, "-"),
    ],
)
def test_crossover_lies_where_the_better_strategy_turns(winners, text, low, high, kept):
    phase = crossover.phase(crossover.points(_grid(5000, winners)), "el2n@1")
    (found,) = crossover.crossovers(phase)
    assert (found["text"], found["low"], found["high"]) == (text, low, high)
    (row,) = crossover.crossover_table([found])
    assert row["examples kept there"] == kept
    fractions = (0.3, 0.5, 0.7, 0.9)
    hard = [f for f, w in zip(fractions, winners, strict=True) if w == "hardest"]
    assert found["hardest_at"] == hard


def test_theory_check_refuses_a_crossover_that_moves_down_with_more_data():
    small = _grid(1000, ("hardest", "easiest", "easiest", "easiest"))  # between 0.3 and 0.5
    large = _grid(10000, ("hardest", "hardest", "hardest", "easiest"))  # between 0.7 and 0.9
    found = crossover.crossovers(crossover.phase(crossover.points(small + large), "el2n@1"))
    assert crossover.agrees_with_theory(found)[0]
    # The same sizes swapped: the crossover falls from (0.7, 0.9) to (0.3, 0.5).
    swapped = _grid(10000, ("hardest", "easiest", "easiest", "easiest"))
    swapped += _grid(1000, ("hardest", "hardest", "hardest", "easiest"))
    found = crossover.crossovers(crossover.phase(crossover.points(swapped), "el2n@1"))
    agrees, why = crossover.agrees_with_theory(found)
    assert not agrees and "N = 1,000" in why and "N = 10,000" in why
    mixed = _grid(1000, ("easiest", "hardest", "easiest", "easiest"))
    found = crossover.crossovers(crossover.phase(crossover.points(mixed), "el2n@1"))
    assert crossover.agrees_with_theory(found) == (False, "no single crossover at N = 1,000")


def test_summary_and_figures_are_written(tmp_path):
    rows = _grid(1000, ("hardest", "easiest", "easiest", "easiest"))
    rows += _rows(1000, "full", "full", 0.0, [0.9, 0.91])
    pts = crossover.points(rows)
    path = crossover.write_summary(str(tmp_path / "s.md"), "T", pts, ["el2n@1", "grand@1"])
    text = open(path).read()
    row = "| 1000 | 0.3 | 0.5 0.7 0.9 | between 0.3 and 0.5 | 500 to 700 | 0.3 | 0.5 0.7 0.9 |"
    assert row in text
    assert (
        "Keeping the hardest beats random by more than the seed spread up to: 0.3 at N = 1,000"
        in text
    )
    assert "grand@1" not in text  # never ranked: no section
    assert "| 1000 | 0.9050 ± 0.0071 (n=2) |" in text
    for stem in ("phase", "curves"):
        plot = getattr(crossover, f"plot_{stem}")
        paths = plot(pts, ["el2n@1"], str(tmp_path / stem))
        assert sorted(p.rsplit(".", 1)[1] for p in paths) == ["pdf", "png"]


def test_beating_random_needs_more_than_the_seed_spread():
    rand = dict(mean=0.80, std=0.02)
    # spread sqrt((0.01^2 + 0.02^2) / 2) = 0.0158: a margin of 0.015 is within it, 0.017 beyond.
    assert not crossover.beats_random(dict(mean=0.815, std=0.01), rand)
    assert crossover.beats_random(dict(mean=0.817, std=0.01), rand)
    assert not crossover.beats_random(dict(mean=0.9, std=None), rand)  # one seed: no spread


def test_hardest_reach_says_whether_it_grows_with_n():
    small = _grid(1000, ("hardest", "easiest", "easiest", "easiest"))
    large = _grid(10000, ("hardest", "hardest", "hardest", "easiest"))
    found = crossover.crossovers(crossover.phase(crossover.points(small + large), "el2n@1"))
    # hardest gets 0.8 +- 0.01 where it is better, random 0.75 +- 0.01: it beats random there.
    assert crossover.hardest_reach(found) == (
        "Keeping the hardest beats random by more than the seed spread up to: 0.3 at N = 1,000, "
        "0.7 at N = 10,000 (never shrinks as N grows, as predicted)."
    )
    found[1]["hardest_beats_random_at"] = []
    assert crossover.hardest_reach(found).endswith(
        "none at N = 10,000 (shrinks as N grows somewhere)."
    )
