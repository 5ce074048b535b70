"""One epoch of the pipeline's training with and without the fast max-pool gradient.

    python -m benchmarks.bench_epoch [--num_examples=6000]

Trains the small CNN for one epoch on the first `num_examples` Fashion-MNIST training images
(after `make data`), K=2 seeds, batch 128, no augmentation, through `loop.fit`, once with
`train.fast_backward='off'` and once 'on' (the CPU default), and logs each wall time
(compilation included), the test accuracy of each seed on 2,000 test images, and how far the
parameters moved apart (largest difference relative to each leaf's largest entry).
"""

from __future__ import annotations

import tempfile
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_examples", 6000, "Training images (the first N of the train split).")


def main(argv):
    del argv
    import jax
    import numpy as np

    from configs import fashion_mnist
    from datadiet_jax import models
    from datadiet_jax.pipeline import data
    from datadiet_jax.training import loop, train

    split = data.load_split("fashion_mnist", "train", num_examples=FLAGS.num_examples)
    test = data.load_split(
        "fashion_mnist", "test", num_examples=2000, normalization=(split.mean, split.std)
    )
    model = models.get_model("small_cnn", split.num_classes)
    params = {}
    for mode in ("off", "on"):
        cfg = fashion_mnist.get_config().train
        cfg.fast_backward, cfg.checkpoint_every_epochs = mode, 1000
        steps = split.num_examples // cfg.batch_size
        spec = loop.TrainSpec(
            train_cfg=cfg,
            num_seeds=2,
            seed=0,
            purpose=1,
            num_steps=steps,
            schedule_steps=steps,
            ckpt_dir=tempfile.mkdtemp() + "/ckpt",
            augment=False,
        )
        start = time.perf_counter()
        state, _, _ = loop.fit(model, split, split.index, spec, hooks=None, init_state=None)
        seconds = time.perf_counter() - start
        accuracy, _ = train.evaluate(model, state, test, batch_size=500)
        params[mode] = jax.tree.leaves(state.params)
        logging.info("fast_backward=%s: %.1f s, test accuracy %s", mode, seconds, accuracy)
    moved = [
        float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())
        for a, b in zip(params["on"], params["off"], strict=True)
    ]
    logging.info(
        "parameters after one epoch: largest relative difference %.3g; %d of %d leaves "
        "bit-identical",
        max(moved),
        sum(m == 0 for m in moved),
        len(moved),
    )


if __name__ == "__main__":
    app.run(main)
