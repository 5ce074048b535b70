"""Feature-geometry selectors: wall seconds of each strategy on 60,000 clustered features.

    python -m benchmarks.bench_selectors --out=bench [--quick]

Synthetic features: N examples (60,000) of width D (128) in 10 classes, each class a mixture of 4
Gaussian clusters (centres N(0, 3^2), unit noise), random [N] scores. Each strategy of
`pruning.kept_indices` ('moderate', 'kcenter', 'herding', 'd2') runs at prune fractions 0.3, 0.5 and
0.7 with the labels (per-class quotas); the first call of a strategy includes its compilation and
is reported apart ('first_s'), then the best of `repeats` timed calls ('best_s').

Writes OUT/bench_selectors.json and OUT/bench_selectors.md.
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import app, flags

from benchmarks import timing

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "bench", "Output folder for bench_selectors.json and .md.")
flags.DEFINE_bool("quick", False, "Smoke test: 6,000 examples, one repeat.")
flags.DEFINE_integer("repeats", 2, "Timed calls per strategy and fraction; the best is reported.")

STRATEGIES = ("moderate", "kcenter", "herding", "d2")
FRACTIONS = (0.3, 0.5, 0.7)


def _data(n: int, d: int = 128, classes: int = 10, clusters: int = 4):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    centres = 3.0 * rng.normal(size=(classes, clusters, d))
    feats = centres[labels, rng.integers(0, clusters, n)] + rng.normal(size=(n, d))
    return feats.astype(np.float32), labels, rng.random(n)


def main(argv):
    del argv
    import jax

    from datadiet_jax.scores.pruning import kept_indices

    n = 6000 if FLAGS.quick else 60000
    repeats = 1 if FLAGS.quick else FLAGS.repeats
    feats, labels, scores = _data(n)
    rows = []
    for name in STRATEGIES:
        first = None
        for fraction in FRACTIONS:
            times = []
            for _ in range(repeats + (first is None)):
                start = time.perf_counter()
                kept = kept_indices(
                    scores, name, prune_fraction=fraction, labels=labels, features=feats
                )
                times.append(time.perf_counter() - start)
            if first is None:
                first, times = times[0], times[1:]
            rows.append(
                {
                    "strategy": name,
                    "prune_fraction": fraction,
                    "kept": len(kept),
                    "best_s": min(times),
                    "first_s": first,
                }
            )
            print(f"{name:9s} prune {fraction:.1f}: {min(times):.2f} s", flush=True)
    result = {
        "num_examples": n,
        "width": feats.shape[1],
        "classes": 10,
        "rows": rows,
        "backend": jax.default_backend(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "machine": timing.machine(),
    }
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "bench_selectors.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [
        f"Selectors on {n} features of width {feats.shape[1]}, 10 classes "
        f"({result['backend']}, {result['cpus']} CPUs); best of {repeats} in seconds "
        "(first call, with compilation, in parentheses). " + timing.machine_line(result["machine"]),
        "",
        "| strategy | " + " | ".join(f"prune {f}" for f in FRACTIONS) + " |",
        "|---|" + "---|" * len(FRACTIONS),
    ]
    for name in STRATEGIES:
        cells = [r for r in rows if r["strategy"] == name]
        text = [f"{r['best_s']:.2f}" for r in cells]
        text[0] += f" ({cells[0]['first_s']:.2f})"
        lines.append(f"| {name} | " + " | ".join(text) + " |")
    with open(os.path.join(FLAGS.out, "bench_selectors.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
