"""The time-to-accuracy table of the speedup study from its rows (nothing trains).

Each arm's cost is its last epoch's steps, seconds and examples (cumulative; a static arm's
include its score run), compared with the full data's ('full'): the share saved is
`1 - arm / full`. The final accuracy is the mean of the arm's healthy seeds with their min and
max; the accuracy lost is the full data's mean minus the arm's. An arm reaches the full data's
accuracy at its first epoch whose mean test accuracy (over its healthy seeds) is at least the
full data's final mean (minus `tolerance`); the share saved there is its cost at that epoch
against the full data's whole training, the time-to-accuracy saving. With three seeds the
mean of the full data is itself uncertain by about the range of its seeds, so the table also
says where an arm first reaches the lowest final accuracy of the full data's seeds.

Usage:

    from datadiet_jax.report import speedup_summary
    table = speedup_summary.summary_rows(rows)   # rows: one per (arm, seed, epoch)
    speedup_summary.write_summary("out/speedup_summary.md", "Speedup (cpu)", table)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from datadiet_jax.report import summary
from datadiet_jax.training import files, health

REFERENCE = "full"


def curves(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Each arm's healthy seeds, epoch by epoch, in first-seen order of the arms.

    Args:
      rows: one dict per (arm, seed, epoch) with 'arm', 'seed', 'epoch', 'steps', 'seconds',
        'examples', 'test_accuracy' and 'status' (CSV strings or numbers).

    Returns:
      {arm: {'epoch' [E], 'steps' [E], 'seconds' [E], 'examples' [S, E],
      'accuracy' [S, E] float arrays (S healthy seeds), 'left_out': seeds not healthy}}.
    """
    by_arm: dict[str, list[Mapping]] = {}
    for r in rows:
        by_arm.setdefault(str(r["arm"]), []).append(r)
    out = {}
    for arm, members in by_arm.items():
        ok, _ = health.healthy(members)
        seeds = sorted({int(r["seed"]) for r in ok})
        epochs = sorted({float(r["epoch"]) for r in ok})
        cell = {(int(r["seed"]), float(r["epoch"])): r for r in ok}

        def grid(key, cell=cell, seeds=seeds, epochs=epochs):
            values = [[float(cell[(s, e)][key]) for e in epochs] for s in seeds]
            return np.array(values, np.float64).reshape(len(seeds), len(epochs))

        steps, seconds = grid("steps"), grid("seconds")  # equal over the seeds trained together
        out[arm] = {
            "epoch": np.array(epochs),
            "steps": steps[0] if seeds else steps.reshape(-1),
            "seconds": seconds[0] if seeds else seconds.reshape(-1),
            "examples": grid("examples"),
            "accuracy": grid("test_accuracy"),
            "left_out": len({int(r["seed"]) for r in members}) - len(seeds),
        }
    return out


def reach_epoch(accuracy: np.ndarray, target: float, tolerance: float = 0.0) -> int | None:
    """The first epoch position whose mean over seeds is at least `target - tolerance`.

    Args:
      accuracy: [S, E] test accuracies of S seeds after each of E epochs.

    Returns:
      The position in [0, E), or None when no epoch reaches it.
    """
    if accuracy.size == 0:
        return None
    hit = np.flatnonzero(accuracy.mean(axis=0) >= target - tolerance)
    return int(hit[0]) if hit.size else None


def _saved(cost: float, full: float) -> float:
    return 1.0 - cost / full if full > 0 else float("nan")


def _reach(c: Mapping, full: Mapping, target: float, tolerance: float, name: str) -> dict:
    """Where arm `c` reaches `target`: {'reaches_<name>': epoch or None, 'steps_saved_at_<name>',
    'wall_saved_at_<name>': its cost there against the full data's whole training, or None}."""
    at = reach_epoch(c["accuracy"], target, tolerance)
    if at is None:
        return {
            f"reaches_{name}": None,
            f"steps_saved_at_{name}": None,
            f"wall_saved_at_{name}": None,
        }
    return {
        f"reaches_{name}": float(c["epoch"][at]),
        f"steps_saved_at_{name}": _saved(c["steps"][at], full["steps"][-1]),
        f"wall_saved_at_{name}": _saved(c["seconds"][at], full["seconds"][-1]),
    }


def summary_rows(rows: Sequence[Mapping], tolerance: float = 0.0) -> list[dict]:
    """One dict per arm: its cost and the shares saved against 'full', its final accuracy, the
    accuracy lost and where it reaches the full data's accuracy (module docstring).

    Returns:
      Dicts with 'arm', 'steps', 'steps_saved', 'seconds', 'wall_saved', 'examples' (mean over
      seeds), 'accuracy' (mean), 'accuracy_min', 'accuracy_max', 'accuracy_lost', 'seeds',
      'left_out'; 'reaches_full' (the epoch where the mean reaches the full data's final mean,
      or None), 'steps_saved_at_full', 'wall_saved_at_full' (None when it does not reach it);
      and the same with '_range' for the full data's lowest final seed (its seed range).

    Raises:
      ValueError: no healthy 'full' arm.
    """
    arms = curves(rows)
    full = arms.get(REFERENCE)
    if full is None or full["accuracy"].size == 0:
        raise ValueError("The speedup summary needs the healthy seeds of the 'full' arm.")
    target, low = float(full["accuracy"][:, -1].mean()), float(full["accuracy"][:, -1].min())
    out = []
    for arm, c in arms.items():
        if c["accuracy"].size == 0:
            out.append({"arm": arm, "seeds": 0, "left_out": c["left_out"]})
            continue
        final = c["accuracy"][:, -1]
        row = {
            "arm": arm,
            "steps": int(c["steps"][-1]),
            "steps_saved": _saved(c["steps"][-1], full["steps"][-1]),
            "seconds": float(c["seconds"][-1]),
            "wall_saved": _saved(c["seconds"][-1], full["seconds"][-1]),
            "examples": float(c["examples"][:, -1].mean()),
            "accuracy": float(final.mean()),
            "accuracy_min": float(final.min()),
            "accuracy_max": float(final.max()),
            "accuracy_lost": target - float(final.mean()),
            "seeds": len(final),
            "left_out": c["left_out"],
        }
        row |= _reach(c, full, target, tolerance, "full")
        out.append(row | _reach(c, full, low, tolerance, "range"))
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _reached(r: Mapping, name: str) -> str:
    """'epoch E: steps saved / wall saved' there, or 'does not'."""
    epoch = r[f"reaches_{name}"]
    if epoch is None:
        return "does not"
    saved = f"{_pct(r[f'steps_saved_at_{name}'])} / {_pct(r[f'wall_saved_at_{name}'])}"
    return f"epoch {epoch:g}: {saved}"


def markdown_rows(table: Sequence[Mapping]) -> list[dict]:
    """The summary as the strings of its Markdown table."""
    out = []
    for r in table:
        if not r.get("seeds"):
            out.append({"arm": r["arm"], "final test accuracy": "no healthy seed"})
            continue
        out.append(
            {
                "arm": r["arm"],
                "steps": str(r["steps"]),
                "steps saved": _pct(r["steps_saved"]),
                "wall s": f"{r['seconds']:.1f}",
                "wall saved": _pct(r["wall_saved"]),
                "final test accuracy": (
                    f"{r['accuracy']:.4f} ({r['accuracy_min']:.4f}-{r['accuracy_max']:.4f})"
                ),
                "accuracy lost": f"{100 * r['accuracy_lost']:+.2f} pt",
                "reaches full mean (steps / wall saved)": _reached(r, "full"),
                "reaches full's seed range": _reached(r, "range"),
            }
        )
    columns = list(dict.fromkeys(k for r in out for k in r))
    return [{k: r.get(k, "") for k in columns} for r in out]


def write_summary(
    path: str,
    title: str,
    table: Sequence[Mapping],
    protocol: tuple[str, list[dict]] | None = None,
) -> str:
    """Writes the Markdown summary of `summary_rows`' table, after the protocol section
    (`report.protocol.section`, when given); returns `path`."""
    seeds = max((r.get("seeds", 0) for r in table), default=0)
    left_out = sum(r.get("left_out", 0) for r in table)
    note = (
        f"Mean of the healthy seeds ({seeds} per arm; min-max in brackets; {left_out} collapsed "
        "or diverged seeds left out). Saved: 1 - arm / full data, at the end of training; "
        "'reaches full mean': the first epoch whose mean test accuracy is at least the full "
        "data's final mean ('full's seed range': at least its lowest final seed), with the "
        "shares of steps and wall time saved up to it against the full data's whole training. "
        "A static arm's steps, seconds and examples include its score run's."
    )
    parts = [f"# {title}", ""]
    if protocol:
        heading, rows = protocol
        parts += [f"## {heading}", "", summary.markdown_table(rows), "", "## Time to accuracy", ""]
    parts += [note, "", summary.markdown_table(markdown_rows(table)), ""]
    files.atomic_write_bytes(path, "\n".join(parts).encode())
    return path
