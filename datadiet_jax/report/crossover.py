"""The crossover study's numbers from its rows: points, the phase diagram, the crossover, summary.

Nothing here trains. A point is one (data size N, score, strategy, pruned fraction) with the
mean, sample std and number n of its healthy retraining seeds (collapsed and diverged runs are
left out and counted, `training.health`). At each (N, score, fraction) the better of hardest and
easiest is the one with the higher mean; its margin over the random subset's mean is also given
in units of the seeds' spread, the root mean square of the two stds.

The crossover of a score at a size is where the better strategy turns from hardest to easiest as
the pruned fraction grows. Sorscher et al. (NeurIPS 2022, "Beyond neural scaling laws") predict
from a teacher-student perceptron that keeping the hardest examples pays when data is abundant
and keeping the easiest when it is scarce, so the crossover moves to larger pruned fractions as N
grows (and at a fixed fraction the better strategy turns from easiest to hardest).

Usage:

    from datadiet_jax.report import crossover
    points = crossover.points(rows)                     # rows: one per (run, seed), the CSV's
    phase = crossover.phase(points, "el2n@1")            # one dict per (N, fraction)
    found = crossover.crossovers(phase)                  # one dict per N: where it lies
    crossover.write_summary("out/crossover_summary.md", "Crossover (cpu)", points, ["el2n@1"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from datadiet_jax.report import crossover_plots, summary
from datadiet_jax.training import files

STRATEGIES = ("hardest", "easiest", "random")
PREDICTION = (
    "Prediction (Sorscher et al., NeurIPS 2022): keeping the hardest examples pays when data is "
    "abundant and keeping the easiest when it is scarce, so the pruned fraction where the better "
    "of the two turns from hardest to easiest grows with N, and so does the range of fractions "
    "where keeping the hardest beats random."
)
POINT_KEYS = ("num_examples", "score", "strategy", "prune_fraction", "num_kept")
plot_curves = crossover_plots.plot_curves


def plot_phase(pts: Sequence[Mapping], scores: Sequence[str], out_stem) -> list[str]:
    """The phase diagram of `scores` (`crossover_plots.plot_phase` of each score's `phase`);
    writes `out_stem`.png and .pdf and returns their paths."""
    return crossover_plots.plot_phase([(s, phase(pts, s)) for s in scores], out_stem)


def points(rows: Sequence[Mapping]) -> list[dict]:
    """Mean, std and n of the healthy seeds of every point.

    Args:
      rows: one dict per (run, seed) with 'num_examples', 'score' ('random' and 'full' for the
        baselines), 'strategy', 'prune_fraction', 'num_kept', 'test_accuracy' and 'status'
        (CSV strings or numbers).

    Returns:
      One dict per point, in first-seen order: 'num_examples' int, 'score', 'strategy',
      'prune_fraction' float, 'num_kept' int, 'n' (healthy seeds), 'left_out', 'mean' and
      'std' (None without healthy seeds; std None with fewer than 2), 'smallest_class_share'
      (of the kept set, where the rows give it: the smallest class's count over an even share;
      None otherwise).
    """
    typed = [
        dict(r)
        | dict(
            num_examples=int(r["num_examples"]),
            score=str(r["score"]),
            strategy=str(r["strategy"]),
            prune_fraction=round(float(r["prune_fraction"]), 6),
            num_kept=int(r["num_kept"]),
        )
        for r in rows
    ]
    shares: dict[tuple, list[Mapping]] = {}
    for r in typed:
        shares.setdefault(tuple(r[k] for k in POINT_KEYS), []).append(r)
    return [
        {k: p[k] for k in POINT_KEYS}
        | dict(n=p["runs"], left_out=p["left_out"], mean=p["mean"], std=p["std"])
        | dict(smallest_class_share=_smallest_share(shares[tuple(p[k] for k in POINT_KEYS)]))
        for p in summary.summary_table(typed, POINT_KEYS)
    ]


def _smallest_share(members: Sequence[Mapping]) -> float | None:
    shares = [r.get("smallest_class_share") for r in members]
    shares = [float(v) for v in shares if v is not None and v != ""]
    return min(shares) if shares else None


def _lookup(pts: Sequence[Mapping]) -> dict[tuple, Mapping]:
    return {(p["num_examples"], p["score"], p["prune_fraction"]): p for p in pts}


def phase(pts: Sequence[Mapping], score: str) -> list[dict]:
    """The phase diagram of `score`: one dict per (N, fraction) where it was ranked.

    Returns:
      Dicts sorted by N then fraction: 'num_examples', 'prune_fraction', 'hardest', 'easiest',
      'random' (the points), 'better' ('hardest', 'easiest' or 'tie'), 'margin' (the better
      mean minus random's), 'spread' (root mean square of the better's and random's stds) and
      'margin_in_spread' (margin / spread; None where either has fewer than 2 seeds or the
      spread is 0).
    """
    by_strategy = {s: _lookup([p for p in pts if p["strategy"] == s]) for s in STRATEGIES[:2]}
    randoms = {(p["num_examples"], p["prune_fraction"]): p for p in pts if p["score"] == "random"}
    out = []
    for (n_examples, name, fraction), hard in sorted(by_strategy["hardest"].items()):
        easy = by_strategy["easiest"].get((n_examples, name, fraction))
        rand = randoms.get((n_examples, fraction))
        if name != score or easy is None or rand is None or None in (hard["mean"], easy["mean"]):
            continue
        better = _better(hard["mean"], easy["mean"])
        best = easy if better == "easiest" else hard
        row = dict(num_examples=n_examples, prune_fraction=fraction, hardest=hard, easiest=easy)
        row |= dict(random=rand, better=better, margin=None, spread=None, margin_in_spread=None)
        if rand["mean"] is not None:
            row["margin"] = best["mean"] - rand["mean"]
        row["spread"] = seed_spread(best, rand)
        if row["spread"] and row["margin"] is not None:
            row["margin_in_spread"] = row["margin"] / row["spread"]
        out.append(row)
    return out


def seed_spread(a: Mapping, b: Mapping) -> float | None:
    """The seed spread of two points: the root mean square of their stds (None without both)."""
    if a["std"] is None or b["std"] is None:
        return None
    return float(np.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2))


def _better(hard: float, easy: float) -> str:
    return "hardest" if hard > easy else "easiest" if easy > hard else "tie"


def crossovers(phase_rows: Sequence[Mapping]) -> list[dict]:
    """Where the better strategy turns from hardest to easiest, per data size.

    Returns:
      One dict per N (ascending): 'num_examples', 'hardest_at' and 'easiest_at' (the fractions
      where each is better), 'low' and 'high' (the crossover lies between these pruned
      fractions: 0.0 when easiest is better at every fraction, 1.0 when hardest is) and 'text'
      ('between 0.5 and 0.7', 'above 0.9', 'below 0.3', or 'none: mixed' when easiest is better
      below a fraction where hardest is, or at a tie); 'hardest_beats_random_at' and
      'easiest_beats_random_at' (the fractions where each beats random by more than the seed
      spread, `beats_random`).
    """
    out = []
    for n_examples in sorted({r["num_examples"] for r in phase_rows}):
        mine = sorted(
            (r for r in phase_rows if r["num_examples"] == n_examples),
            key=lambda r: r["prune_fraction"],
        )
        fractions = [r["prune_fraction"] for r in mine]
        winners = [r["better"] for r in mine]
        hard = [f for f, w in zip(fractions, winners, strict=True) if w == "hardest"]
        easy = [f for f, w in zip(fractions, winners, strict=True) if w == "easiest"]
        monotone = winners == ["hardest"] * len(hard) + ["easiest"] * len(easy)
        low, high = (max(hard) if hard else 0.0), (min(easy) if easy else 1.0)
        if not monotone:
            low, high, text = None, None, "none: mixed"
        elif not easy:
            text = f"above {low:g}"
        elif not hard:
            text = f"below {high:g}"
        else:
            text = f"between {low:g} and {high:g}"
        out.append(
            dict(num_examples=n_examples, hardest_at=hard, easiest_at=easy, low=low, high=high)
            | dict(text=text, hardest_beats_random_at=beats_random_at(mine, "hardest"))
            | dict(easiest_beats_random_at=beats_random_at(mine, "easiest"))
        )
    return out


def beats_random(p: Mapping, rand: Mapping) -> bool:
    """Whether point `p`'s mean exceeds random's by more than one seed spread (the root mean
    square of their stds); never with fewer than 2 healthy seeds on either side."""
    spread = seed_spread(p, rand)
    return spread is not None and p["mean"] - rand["mean"] > spread


def beats_random_at(phase_rows: Sequence[Mapping], strategy: str) -> list[float]:
    """The fractions of `phase_rows` (one size) where `strategy` beats random (`beats_random`)."""
    return [r["prune_fraction"] for r in phase_rows if beats_random(r[strategy], r["random"])]


def agrees_with_theory(found: Sequence[Mapping]) -> tuple[bool, str]:
    """Whether the crossover never moves to smaller fractions as N grows (Sorscher et al.).

    Returns:
      (agrees, one sentence): sizes with a mixed ordering count against it; so does a
      crossover interval that lies wholly below the one of a smaller size.
    """
    mixed = [f["num_examples"] for f in found if f["low"] is None]
    if mixed:
        return False, f"no single crossover at N = {', '.join(f'{n:,}' for n in mixed)}"
    for a, b in zip(found, found[1:], strict=False):
        if b["high"] <= a["low"]:
            return False, (
                f"the crossover moves to smaller fractions from N = {a['num_examples']:,} "
                f"({a['text']}) to N = {b['num_examples']:,} ({b['text']})"
            )
    return True, "the crossover never moves to smaller pruned fractions as N grows"


def hardest_reach(found: Sequence[Mapping]) -> str:
    """One sentence: the largest pruned fraction at which keeping the hardest beats random by
    more than the seed spread, per size, and whether it grows with N as predicted."""
    reach = [max(f["hardest_beats_random_at"], default=0.0) for f in found]
    cells = ", ".join(
        f"{r:g} at N = {f['num_examples']:,}" if r else f"none at N = {f['num_examples']:,}"
        for r, f in zip(reach, found, strict=True)
    )
    grows = all(a <= b for a, b in zip(reach, reach[1:], strict=False))
    verdict = "never shrinks as N grows, as predicted" if grows else "shrinks as N grows somewhere"
    return (
        f"Keeping the hardest beats random by more than the seed spread up to: {cells} ({verdict})."
    )


def _cell(p: Mapping | None) -> str:
    return "-" if p is None else summary.mean_std_n(dict(p, runs=p["n"]))


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def phase_table(phase_rows: Sequence[Mapping]) -> list[dict]:
    """`phase` as table rows: every strategy's mean ± std (n), the better one, its margin, and
    the smallest class of the hardest and easiest kept sets as a share of an even split."""
    return [
        {
            "N": r["num_examples"],
            "pruned": f"{r['prune_fraction']:g}",
            "kept": r["hardest"]["num_kept"],
            **{s: _cell(r[s]) for s in STRATEGIES},
            "better": r["better"],
            "margin over random": _number(r["margin"], "+.4f"),
            "in seed spreads": _number(r["margin_in_spread"], "+.1f"),
            "smallest class (H / E)": " / ".join(
                _number(r[s]["smallest_class_share"], ".2f") for s in STRATEGIES[:2]
            ),
        }
        for r in phase_rows
    ]


def crossover_table(found: Sequence[Mapping]) -> list[dict]:
    """`crossovers` as table rows (the test of the study reads these columns back)."""
    return [
        {
            "N": f["num_examples"],
            "hardest better at": _fractions(f["hardest_at"]),
            "easiest better at": _fractions(f["easiest_at"]),
            "crossover": f["text"],
            "examples kept there": _kept_between(f),
            "hardest beats random at": _fractions(f["hardest_beats_random_at"]),
            "easiest beats random at": _fractions(f["easiest_beats_random_at"]),
        }
        for f in found
    ]


def _fractions(fractions: Sequence[float]) -> str:
    return " ".join(f"{x:g}" for x in fractions) or "-"


def _kept_between(found: Mapping) -> str:
    """The examples kept at the crossover's two fractions ('1,500 to 2,500'), or '-'."""
    n, low, high = found["num_examples"], found["low"], found["high"]
    if low is None:
        return "-"
    if low == 0.0:  # easiest better everywhere: the crossover keeps more than at `high`
        return f"more than {round(n * (1 - high)):,}"
    if high == 1.0:  # hardest better everywhere: it keeps fewer than at `low`
        return f"fewer than {round(n * (1 - low)):,}"
    return f"{round(n * (1 - high)):,} to {round(n * (1 - low)):,}"


def write_summary(
    path: str, title: str, pts: Sequence[Mapping], scores: Sequence[str], first=()
) -> str:
    """Writes the study's summary: the sections `first` ((heading, table) pairs, e.g. the
    protocol), then per score where the crossover lies at each size against the prediction and
    the phase diagram's table; last, the full data at each size."""
    parts = [f"# {title}", "", PREDICTION, ""]
    for heading, table in first:
        parts += [f"## {heading}", "", summary.markdown_table(table), ""]
    for score in scores:
        rows = phase(pts, score)
        if not rows:
            continue
        found = crossovers(rows)
        agrees, why = agrees_with_theory(found)
        verdict = "agrees with" if agrees else "departs from"
        parts += [
            f"## {score}",
            "",
            f"Crossover by data size ({verdict} the prediction: {why}).",
            "",
        ]
        parts += [hardest_reach(found), ""]
        parts += ["", summary.markdown_table(crossover_table(found)), ""]
        parts += [summary.markdown_table(phase_table(rows)), ""]
    full = [p for p in pts if p["strategy"] == "full"]
    if full:
        table = [{"N": p["num_examples"], "full data": _cell(p)} for p in full]
        parts += ["## Full data", "", summary.markdown_table(table), ""]
    files.atomic_write_bytes(path, "\n".join(parts).encode())
    return path
