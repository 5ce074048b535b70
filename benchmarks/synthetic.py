"""Synthetic Fashion-MNIST-shaped training data for the training-loop benchmarks.

Usage:

    from benchmarks import synthetic
    split, cfg, model = synthetic.setup(20_000, batch_size=128)
"""

from __future__ import annotations


def setup(num_examples: int, batch_size: int):
    """Synthetic Fashion-MNIST-shaped training data and the small CNN.

    Returns:
      (split, train_cfg, model): a `data.Split` of `num_examples` random uint8 images
      [N, 28, 28, 1] with random labels of 10 classes, `configs/fashion_mnist`'s `train` config
      at `batch_size` (checkpoints only at the end), and the small CNN.

    Usage:

        split, cfg, model = synthetic.setup(20_000, batch_size=128)
    """
    import ml_collections
    import numpy as np

    from configs import fashion_mnist
    from datadiet_jax import models
    from datadiet_jax.pipeline import data

    rng = np.random.default_rng(0)
    split = data.Split(
        name="synthetic",
        split="train",
        inputs=rng.integers(0, 256, (num_examples, 28, 28, 1), dtype=np.uint8),
        labels=rng.integers(0, 10, num_examples).astype(np.int32),
        index=np.arange(num_examples, dtype=np.int64),
        num_classes=10,
        mean=np.array([0.286], np.float32),
        std=np.array([0.353], np.float32),
        clean_labels=rng.integers(0, 10, num_examples).astype(np.int32),
        noisy_index=np.zeros((0,), np.int64),
    )
    cfg = fashion_mnist.get_config().train
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.batch_size = batch_size
    cfg.checkpoint_every_epochs = 1000
    return split, cfg, models.get_model("small_cnn", 10)
