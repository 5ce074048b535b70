"""CIFAR-10, ResNet18, the paper's settings: 200 epochs, 10 score seeds, EL2N at epoch 20, GraNd at
initialization and at epoch 20. A GPU job:

  python -m datadiet_jax.main --config=configs/cifar10.py --workdir=runs/cifar10

`--config=configs/cifar10.py:smoke` shrinks it to seconds on a CPU (a tiny ResNet on 256 examples).
"""

from datadiet_jax.pipeline.config_base import base_config, smoke


def get_config(arg: str | None = None):
    c = base_config()
    return smoke(c) if arg == "smoke" else c
