"""The same training steps in PyTorch, for the speed comparison of the README (optional).

    python benchmarks/torch_reference.py [--quick]      # in an environment with torch installed

Not a dependency of the project: it needs only torch and numpy, and prints examples/s of a
PyTorch training step (SGD with Nesterov momentum 0.9 and weight decay 5e-4, BatchNorm in train
mode, cross-entropy) of the small CNN at batch 128 and the CIFAR ResNet18 at batch 32, the
architectures of `datadiet_jax.models`, NCHW float32, on random inputs, best of 3 timed runs
after a warm-up, with torch's default threads. Compare with the 'train' rows of `make bench`.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def small_cnn(width: int = 32, hidden: int = 128) -> nn.Module:
    def block(cin, cout):
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(1, width),
        *block(width, 2 * width),
        nn.Flatten(),
        nn.Linear(2 * width * 49, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        # A module, not torch.relu: BackPACK's converter (backpack_reference.py) fails on a
        # function called in several blocks.
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.skip(x))


def resnet18() -> nn.Module:
    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for i, cout in enumerate((64, 128, 256, 512)):
        for j in range(2):
            layers.append(BasicBlock(cin, cout, 2 if i and not j else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


def step_rate(model: nn.Module, shape, batch: int, steps: int) -> float:
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    model.train()

    def run():
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    run()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return batch * steps / min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    steps = 2 if args.quick else 8
    print(
        f"small_cnn train batch 128: {step_rate(small_cnn(), (1, 28, 28), 128, steps):.1f} "
        "examples/s"
    )
    if not args.quick:
        print(
            f"resnet18 train batch 32: {step_rate(resnet18(), (3, 32, 32), 32, 2):.1f} examples/s"
        )


if __name__ == "__main__":
    main()
