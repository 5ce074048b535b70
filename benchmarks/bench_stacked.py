"""Retraining S runs of R seeds one after another, or as one stacked K = S*R training.

    python -m benchmarks.bench_stacked [--runs=3] [--num_kept=2500] [--steps=100] [--out=bench]

The small CNN on Fashion-MNIST (after `make data`; the first 5,000 training images), each run
on its own random kept set of `num_kept` images, batch 128, through `loop.fit`: every
mode runs twice and the second (compiled, cached) pass is timed. Writes OUT/stacked.json with
examples/s of each mode and the largest parameter difference between them.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags, logging

from benchmarks import timing

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 3, "S, runs of equal-size kept sets.")
flags.DEFINE_integer("seeds", 2, "R, seeds of each run.")
flags.DEFINE_integer("num_kept", 2500, "Examples of each kept set.")
flags.DEFINE_integer("steps", 100, "Training steps of each run.")
flags.DEFINE_string("out", "bench", "Folder of stacked.json.")


def _largest_difference(separate, stacked) -> float:
    """The largest absolute difference between the parameters of matching runs."""
    import jax
    import numpy as np

    return max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for one, other in zip(separate, stacked, strict=True)
        for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(other.params), strict=True)
    )


def main(argv):
    del argv
    import jax
    import numpy as np

    from configs import fashion_mnist
    from datadiet_jax import models
    from datadiet_jax.pipeline import data
    from datadiet_jax.training import loop

    split = data.load_split("fashion_mnist", "train", num_examples=5000)
    model = models.get_model("small_cnn", split.num_classes)
    cfg = fashion_mnist.get_config().train
    cfg.checkpoint_every_epochs = 1000
    rng = np.random.default_rng(0)
    kept = [
        np.sort(rng.choice(split.num_examples, FLAGS.num_kept, replace=False))
        for _ in range(FLAGS.runs)
    ]
    r, steps = FLAGS.seeds, FLAGS.steps

    def spec(num_seeds, streams=()):
        return loop.TrainSpec(
            train_cfg=cfg,
            num_seeds=num_seeds,
            seed=0,
            purpose=2,
            num_steps=steps,
            schedule_steps=steps,
            augment=False,
            ckpt_dir=tempfile.mkdtemp() + "/ckpt",
            streams=streams,
        )

    def separate():
        return [loop.fit(model, split, k, spec(r))[0] for k in kept]

    def together():
        stacked_kept = np.repeat(np.stack(kept), r, axis=0)
        state = loop.fit(
            model, split, stacked_kept, spec(r * len(kept), tuple(range(r)) * len(kept))
        )[0]
        return [
            jax.tree.map(lambda x, s=s: x[s * r : (s + 1) * r], state) for s in range(len(kept))
        ]

    rows, states = {}, {}
    examples = FLAGS.runs * r * steps * cfg.batch_size
    for name, fn in (("separate", separate), ("stacked", together)):
        fn()  # compiles
        start = time.perf_counter()
        states[name] = fn()
        seconds = time.perf_counter() - start
        rows[name] = {"seconds": round(seconds, 2), "examples_per_s": round(examples / seconds, 1)}
        logging.info("%s: %.1f s, %.0f examples/s", name, seconds, examples / seconds)
    diff = _largest_difference(states["separate"], states["stacked"])
    out = {
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "runs": FLAGS.runs,
        "seeds": r,
        "num_kept": FLAGS.num_kept,
        "steps": steps,
        "modes": rows,
        "max_param_difference": diff,
        "machine": timing.machine(),
    }
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "stacked.json"), "w") as f:
        json.dump(out, f, indent=1)
    logging.info(
        "stacked/separate speed %.2fx; largest parameter difference %.3g",
        rows["stacked"]["examples_per_s"] / rows["separate"]["examples_per_s"],
        diff,
    )


if __name__ == "__main__":
    app.run(main)
