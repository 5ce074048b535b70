"""CIFAR-100, ResNet18, the CIFAR-10 protocol otherwise. A GPU job:

  python -m datadiet_jax.main --config=configs/cifar100.py --workdir=runs/cifar100

`:smoke` shrinks it for a CPU test.
"""

from datadiet_jax.pipeline.config_base import base_config, smoke


def get_config(arg: str | None = None):
    c = base_config()
    c.data.name = "cifar100"
    return smoke(c) if arg == "smoke" else c
