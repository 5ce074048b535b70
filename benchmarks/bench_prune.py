"""Pruning during training: the cost of its bookkeeping per step, and what a pruned epoch costs.

    python -m benchmarks.bench_prune --out=bench [--quick]

`loop.fit` end to end (tf.data input, steps, metrics, a checkpoint at the end) on the small CNN,
Fashion-MNIST-shaped synthetic data (20,000 uint8 images, random labels, `synthetic.setup`),
K=1, batch 128, no augmentation, for `num_epochs` epochs or rounds (`TrainSpec.num_rounds`):

- 'full': no schedule, `num_epochs` full-data epochs (the reference);
- 'infobatch_r0': InfoBatch at ratio 0 by rounds: it prunes nothing, so it takes the very steps
  of 'full', but plans every round on the host, records each example's loss in the step and
  builds each round's tf.data pipeline; its time per step against 'full' is the bookkeeping's
  overhead;
- 'infobatch_r0.5', 'rs2_f0.5': InfoBatch at ratio 0.5 and RS2 at fraction 0.5 by rounds: each
  round is as long as its pruned set needs, so the training ends early.

Each run is timed whole (the best of `repeats` after a warm-up run of a few steps that compiles
the step), and each epoch or round by its `seconds` in metrics.jsonl (the wall time of its
steps, the round's planning and input pipeline included; the fastest over the repeats). A round
is compared with a full-data epoch over the epochs after the first (the first holds the start:
the initial state, the first step's dispatch).

Writes OUT/prune.json (machine, settings, numbers) and OUT/prune.md (the tables).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

import numpy as np
from absl import app, flags, logging

from benchmarks import timing

FLAGS = flags.FLAGS

# Each case's `config.train.prune` (None: no schedule).
CASES = {
    "full": None,
    "infobatch_r0": {"schedule": "infobatch", "ratio": 0.0},
    "infobatch_r0.5": {"schedule": "infobatch", "ratio": 0.5},
    "rs2_f0.5": {"schedule": "rs2", "fraction": 0.5},
}
WARMUP_STEPS = 3


def run_case(model, split, cfg, prune, num_epochs: int, max_steps: int | None = None) -> dict:
    """One `loop.fit` of K=1 for `num_epochs` epochs (no schedule) or rounds (`prune`).

    Returns:
      {'wall_s': the call's seconds, 'steps': steps trained, 'epochs': [{'steps', 'seconds',
      'examples'}] per epoch or round from metrics.jsonl (examples: presentations in it)}.
    """
    from datadiet_jax.training import files, input_pipeline, loop, prune_schedules

    n = split.num_examples
    spe = input_pipeline.steps_per_epoch(n, cfg.batch_size)
    sched = prune_schedules.from_config(prune) if prune else None
    with tempfile.TemporaryDirectory() as tmp:
        spec = loop.TrainSpec(
            train_cfg=cfg,
            num_seeds=1,
            seed=0,
            purpose=0,
            num_steps=num_epochs * spe,
            schedule_steps=num_epochs * spe,
            ckpt_dir=os.path.join(tmp, "ckpt"),
            augment=False,
            name="bench prune",
            max_steps=max_steps,
            prune=sched,
            num_rounds=num_epochs if sched else 0,
        )
        start = time.perf_counter()
        _, _, steps = loop.fit(model, split, split.index, spec)
        wall = time.perf_counter() - start
        lines = files.read_jsonl(os.path.join(tmp, "metrics.jsonl"))  # [] when no epoch ended
    epochs, step_before, seen_before = [], 0, 0
    for line in lines:
        seen = line["examples"][0] if "examples" in line else seen_before + n
        epochs.append(
            {
                "steps": line["step"] - step_before,
                "seconds": line["seconds"],
                "examples": seen - seen_before,
            }
        )
        step_before, seen_before = line["step"], seen
    return {"wall_s": wall, "steps": steps, "epochs": epochs}


def best_of(runs: list[dict]) -> dict:
    """The fastest run's totals, and each epoch's fastest seconds over the runs (their steps and
    examples are equal: every run trains the same)."""
    best = min(runs, key=lambda r: r["wall_s"])
    epochs = [dict(e) for e in best["epochs"]]
    for i, e in enumerate(epochs):
        e["seconds"] = min(r["epochs"][i]["seconds"] for r in runs)
    return {"wall_s": best["wall_s"], "steps": best["steps"], "epochs": epochs}


def summarize(cases: dict) -> dict:
    """The numbers of the tables from each case's `best_of` record.

    Per case: 's_per_step' (whole run), 'overhead_pct' (its s/step over 'full''s, minus 1), and
    over its epochs after the first: 'round_steps', 'round_examples', 'round_s' (means),
    'examples_per_s', 'time_ratio' and 'steps_ratio' (against 'full''s epochs).
    """
    full = cases["full"]
    per_step_full = full["wall_s"] / full["steps"]
    steady = {name: c["epochs"][1:] or c["epochs"] for name, c in cases.items()}
    full_s = float(np.mean([e["seconds"] for e in steady["full"]]))
    full_steps = float(np.mean([e["steps"] for e in steady["full"]]))
    out = {}
    for name, c in cases.items():
        rounds = steady[name]
        round_s = float(np.mean([e["seconds"] for e in rounds]))
        round_steps = float(np.mean([e["steps"] for e in rounds]))
        examples = float(np.mean([e["examples"] for e in rounds]))
        per_step = c["wall_s"] / c["steps"]
        out[name] = {
            "steps": c["steps"],
            "wall_s": c["wall_s"],
            "s_per_step": per_step,
            "overhead_pct": 100 * (per_step / per_step_full - 1),
            "round_steps": round_steps,
            "round_examples": examples,
            "round_s": round_s,
            "examples_per_s": examples / round_s,
            "time_ratio": round_s / full_s,
            "steps_ratio": round_steps / full_steps,
            "epochs": c["epochs"],
        }
    return out


def measure(model, split, cfg, num_epochs: int, repeats: int) -> dict:
    """Every case of `CASES`: a warm-up of `WARMUP_STEPS` steps (compilation), then `repeats`
    timed runs; returns `summarize`'s numbers per case."""
    cases = {}
    for name, prune in CASES.items():
        run_case(model, split, cfg, prune, num_epochs, max_steps=WARMUP_STEPS)
        runs = [run_case(model, split, cfg, prune, num_epochs) for _ in range(repeats)]
        cases[name] = best_of(runs)
        logging.info(
            "%s: %d steps in %.2f s, epochs %s",
            name,
            cases[name]["steps"],
            cases[name]["wall_s"],
            [(e["steps"], e["seconds"]) for e in cases[name]["epochs"]],
        )
    return summarize(cases)


def table(result: dict) -> str:
    """The markdown of OUT/prune.md: the overhead table, the rounds table and the machine."""
    res, s = result["results"], result["settings"]
    lines = [
        "| run | steps | s / step | vs full (per step) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {res[name]['steps']} | {res[name]['s_per_step'] * 1e3:.1f} ms "
            f"| {res[name]['overhead_pct']:+.1f}% |"
            for name in ("full", "infobatch_r0")
        ),
        "",
        "| run | steps per epoch or round | examples per epoch or round | seconds | examples/s "
        "| time vs full epoch | steps vs full epoch | whole run (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(
            f"| {name} | {r['round_steps']:.1f} | {r['round_examples']:.0f} | {r['round_s']:.2f} "
            f"| {r['examples_per_s']:.0f} | {r['time_ratio']:.3f} | {r['steps_ratio']:.3f} "
            f"| {r['wall_s']:.1f} |"
        )
    m = result["machine"]
    lines += [
        "",
        f"Machine: {m.get('cpu', m['platform'])}, {m['cores']} CPUs, jax {m['jax']} on "
        f"{m['backend']}; XLA_FLAGS={m.get('xla_flags') or '(unset)'}; load "
        f"average {m['load_before']:.2f} before, {m['load_after']:.2f} after. {s['model']}, "
        f"K = 1, batch {s['batch_size']}, N = {s['num_examples']}, {s['num_epochs']} epochs or "
        f"rounds, best of {s['repeats']}; per epoch or round: the mean over those after the "
        "first.",
    ]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    """`timing.machine()`, the platform and the 1-minute load average."""
    return timing.machine() | {"platform": platform.platform(), "load_before": os.getloadavg()[0]}


def main(argv):
    del argv
    from benchmarks import synthetic
    from datadiet_jax.pipeline import logs

    logs.quiet_library_logs()
    num_examples, num_epochs = (2_000, 3) if FLAGS.quick else (20_000, 3)
    repeats = 1 if FLAGS.quick else FLAGS.repeats
    split, cfg, model = synthetic.setup(num_examples, batch_size=128)
    result = {"machine": machine()}
    result["settings"] = {
        "model": "small_cnn",
        "num_seeds": 1,
        "batch_size": 128,
        "num_examples": num_examples,
        "num_epochs": num_epochs,
        "repeats": repeats,
        "cases": CASES,
    }
    result["results"] = measure(model, split, cfg, num_epochs, repeats)
    result["machine"]["load_after"] = os.getloadavg()[0]
    timing.write_outputs(FLAGS.out, "prune", result, table(result))


def define_flags() -> None:
    """The command line's flags, defined only when this module runs as a program: tests import
    it beside other scripts that define flags of the same names."""
    flags.DEFINE_string("out", "bench", "Output folder for prune.json and prune.md.")
    flags.DEFINE_bool("quick", False, "Smoke test: fewer examples, one repeat (seconds).")
    flags.DEFINE_integer("repeats", 3, "Timed runs per case; the fastest is reported.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
