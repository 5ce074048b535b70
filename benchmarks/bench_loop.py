"""Training-loop overhead: the resumable K-seed loop against its bare jitted step.

    python -m benchmarks.bench_loop --out=bench [--quick]

Three rates, in examples/s (K seeds x batch per step), for the small CNN on Fashion-MNIST-shaped
synthetic data (`synthetic.setup`: 20,000 uint8 images, K=1, batch 128, no augmentation), each
the best of `repeats` timed runs after a warm-up (compilation) run:

- 'bare': the jitted K-seed step alone (the loop's own compiled program, forgetting and the
  non-finite check included) on one batch already on the device;
- 'pipeline': the tf.data batches alone (no training), what the loop's input costs;
- 'loop': `loop.fit` end to end: tf.data input, steps, progress logging, metrics,
  the non-finite checks and a checkpoint at the end.

Writes OUT/bench_loop.json and OUT/bench_loop.md; the ratio loop/bare is the loop's efficiency.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

from absl import app, flags, logging

from benchmarks import timing

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "bench", "Output folder for bench_loop.json and bench_loop.md.")
flags.DEFINE_bool("quick", False, "Smoke test: fewer steps (seconds).")
flags.DEFINE_integer("repeats", 3, "Timed runs per method; the best is reported.")


def _rates(num_steps: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from benchmarks import synthetic
    from datadiet_jax.training import input_pipeline, k_step, keys, loop

    num_seeds, batch_size, n = 1, 128, 20_000
    split, cfg, model = synthetic.setup(n, batch_size)
    per_step = num_seeds * batch_size
    schedule = 10 * num_steps
    init_fn, step_fn = k_step.programs(model, cfg, schedule)
    state = init_fn(keys.init_keys(0, 0, num_seeds), np.zeros((1, 28, 28, 1), np.float32))
    stats = k_step.init_stats(num_seeds, n)
    batch_args = dict(num_seeds=num_seeds, batch_size=batch_size)
    stream = input_pipeline.BatchStream(seed=0, num_steps=1, **batch_args)
    batch = next(input_pipeline.train_batches(split, split.index, stream))
    batch = jax.device_put(batch)

    def bare():
        nonlocal state, stats
        for _ in range(num_steps):
            state, stats, loss = step_fn(state, stats, batch)
        jax.block_until_ready(loss)

    def pipeline():
        stream = input_pipeline.BatchStream(seed=1, num_steps=num_steps, **batch_args)
        for b in input_pipeline.train_batches(split, split.index, stream):
            del b

    def full_loop():
        with tempfile.TemporaryDirectory() as tmp:
            spec = loop.TrainSpec(
                train_cfg=cfg,
                num_seeds=num_seeds,
                seed=0,
                purpose=0,
                num_steps=num_steps,
                schedule_steps=schedule,
                ckpt_dir=os.path.join(tmp, "ckpt"),
                augment=False,
                name="bench loop",
            )
            loop.fit(model, split, split.index, spec)

    out = {}
    for name, fn in (("bare", bare), ("pipeline", pipeline), ("loop", full_loop)):
        fn()  # warm-up: compilation, tf.data graph building
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = max(best, num_steps * per_step / (time.perf_counter() - start))
        out[name] = best
        logging.info("%s: %.1f examples/s", name, best)
    out["loop_vs_bare"] = out["loop"] / out["bare"]
    return out


def main(argv):
    del argv
    from datadiet_jax.pipeline import logs

    logs.quiet_library_logs()
    num_steps = 20 if FLAGS.quick else 150
    rates = _rates(num_steps, 1 if FLAGS.quick else FLAGS.repeats)
    result = {
        "machine": timing.machine() | {"platform": platform.platform()},
        "settings": {"model": "small_cnn", "num_seeds": 1, "batch_size": 128, "steps": num_steps},
        "examples_per_s": rates,
    }
    lines = [
        "| method | examples/s |",
        "|---|---|",
        *(f"| {k} | {rates[k]:.1f} |" for k in ("bare", "pipeline", "loop")),
        f"| loop / bare | {rates['loop_vs_bare']:.3f} |",
        "",
        timing.machine_line(result["machine"]),
    ]
    timing.write_outputs(FLAGS.out, "bench_loop", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
