"""GraNd by BackPACK's per-example gradient norms in PyTorch, for the speed comparison (optional).

    python benchmarks/backpack_reference.py [--quick] [--models=small_cnn,resnet18] [--no_converter]
    python benchmarks/backpack_reference.py --check   # BackPACK against a per-example loop

Not a dependency of the project: it needs only torch, numpy and BackPACK (`backpack-for-pytorch`,
whose `torchvision` requirement serves only its examples module: `pip install --no-deps
backpack-for-pytorch einops unfoldNd` beside torch). The architectures are those of
`torch_reference.py` (the small CNN and the CIFAR ResNet18 of `datadiet_jax.models`), NCHW
float32, on random normal inputs and random labels.

GraNd as a BackPACK user computes it, batch by batch: the model in eval mode (BatchNorm with
running statistics, as `grand_scores` applies it), `extend(model)` (ResNet18 through BackPACK's
converter, `extend(model, use_converter=True)`, its way for residual networks: the adds become
modules; `--no_converter` times plain `extend`, whose norms `--check` also compares),
cross-entropy summed over the batch, so each example's gradient is that of its own loss,
`with backpack(BatchL2Grad()): loss.backward()`, then the score of example n is
`sqrt(sum over params p of p.batch_l2[n])`, over every parameter (BatchNorm's scale and shift
included, as in `grand_scores`). The batch sizes and N are `bench_public_call.SETTINGS`
(`--quick`: its QUICK); each model scores all N once untimed, then 3 timed passes, the fastest
reported as examples/s, with torch's default threads. Compare with the 'warm' column of
`python -m benchmarks.bench_public_call --models=small_cnn,resnet18`.

`--check` compares BackPACK's norms with a loop of `torch.autograd.grad` over single examples
(random BatchNorm statistics and affine parameters, 4 examples; ResNet18 with and without the
converter) and fails above a relative difference of 1e-4; it also shows BackPACK's error for
BatchNorm in train mode.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from importlib.metadata import version

import numpy as np
import torch
from backpack import backpack, extend
from backpack.extensions import BatchL2Grad
from torch import nn

try:  # run as a script (benchmarks/ on sys.path) or as a module of the repository
    from torch_reference import resnet18, small_cnn
except ImportError:
    from benchmarks.torch_reference import resnet18, small_cnn

# As bench_public_call.SETTINGS and QUICK: N examples in N / batch batches of the given size.
# fmt: off
SETTINGS = {
    "small_cnn": dict(num_examples=2560, batch=256, shape=(1, 28, 28)),
    "resnet18": dict(num_examples=320, batch=32, shape=(3, 32, 32)),
}
QUICK = {
    "small_cnn": dict(num_examples=320, batch=32, shape=(1, 28, 28)),
    "resnet18": dict(num_examples=40, batch=4, shape=(3, 32, 32)),
}
# fmt: on
MODELS = {"small_cnn": small_cnn, "resnet18": resnet18}
CONVERTER = {"small_cnn": False, "resnet18": True}  # BackPACK's way for residual adds
CHECK_RTOL = 1e-4
# BackPACK's module hooks fire on the first layer although its input needs no gradient.
warnings.filterwarnings("ignore", message="Full backward hook is firing")


def grand_fn(model: nn.Module, use_converter: bool):
    """BackPACK's per-example gradient norms of `model` (put in eval mode and extended).

    Returns:
      grand: (x [B, C, H, W] float32, y [B] int64) -> per-example gradient norms [B] float32.
    """
    model = extend(model.eval(), use_converter=use_converter)
    loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))
    params = [p for p in model.parameters() if p.requires_grad]

    def grand(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model.zero_grad()
        loss = loss_fn(model(x), y)
        with backpack(BatchL2Grad()):
            loss.backward()
        return torch.sqrt(sum(p.batch_l2 for p in params))

    return grand


def score_all(grand, images: np.ndarray, labels: np.ndarray, batch: int) -> np.ndarray:
    """GraNd of every example, batch by batch: [N] float32."""
    out = []
    for lo in range(0, len(images), batch):
        x = torch.from_numpy(images[lo : lo + batch])
        y = torch.from_numpy(labels[lo : lo + batch])
        out.append(grand(x, y).numpy())
    return np.concatenate(out)


def rate(name: str, cfg: dict, use_converter: bool, repeats: int = 3) -> dict:
    """examples/s of BackPACK's GraNd of model `name` over cfg's N examples, best of `repeats`."""
    rng = np.random.default_rng(0)
    n, batch = cfg["num_examples"], cfg["batch"]
    images = rng.normal(size=(n, *cfg["shape"])).astype(np.float32)
    labels = rng.integers(0, 10, n).astype(np.int64)
    grand = grand_fn(MODELS[name](), use_converter)
    score_all(grand, images, labels, batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = score_all(grand, images, labels, batch)
        times.append(time.perf_counter() - start)
    assert scores.shape == (n,) and np.all(np.isfinite(scores)), scores
    return {
        "model": name,
        "num_examples": n,
        "batch": batch,
        "use_converter": use_converter,
        "seconds": min(times),
        "all": times,
    }


def _randomize_batch_norm(model: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters away from their initial 0 and 1."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(1 + 0.3 * torch.randn(c, generator=gen))
                m.bias.copy_(0.3 * torch.randn(c, generator=gen))


def _loop_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-example gradient norms by `torch.autograd.grad`, one example at a time: [B]."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    norms = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, params)
        norms.append(torch.sqrt(sum((g**2).sum() for g in grads)).item())
    return np.array(norms)


def check(num_examples: int = 4) -> bool:
    """BackPACK's norms against the per-example loop; prints one line per case."""
    gen = torch.Generator().manual_seed(0)
    ok = True
    cases = [("small_cnn", False), ("resnet18", True), ("resnet18", False)]
    for name, use_converter in cases:
        model = MODELS[name]()
        _randomize_batch_norm(model, gen)
        shape = SETTINGS[name]["shape"]
        x = torch.randn(num_examples, *shape, generator=gen)
        y = torch.randint(0, 10, (num_examples,), generator=gen)
        reference = _loop_norms(copy.deepcopy(model), x, y)
        got = grand_fn(model, use_converter)(x, y).numpy()
        rel = float(np.max(np.abs(got - reference) / np.abs(reference)))
        ok &= rel <= CHECK_RTOL
        print(
            f"{name} (use_converter={use_converter}): max relative difference {rel:.1e} "
            f"({'ok' if rel <= CHECK_RTOL else 'FAIL'}); norms {np.round(reference, 3).tolist()}"
        )
    model = extend(MODELS["small_cnn"]().train())
    x = torch.randn(num_examples, *SETTINGS["small_cnn"]["shape"], generator=gen)
    loss = extend(nn.CrossEntropyLoss(reduction="sum"))(model(x), y)
    try:
        with backpack(BatchL2Grad()):
            loss.backward()
        print("small_cnn in train mode: BackPACK raised nothing")
    except NotImplementedError as e:
        print(f"small_cnn in train mode (batch statistics): NotImplementedError: {e}")
    return ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (QUICK)")
    parser.add_argument("--check", action="store_true", help="correctness on 4 examples only")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--no_converter", action="store_true", help="plain extend(model) only")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, backpack-for-pytorch {version('backpack-for-pytorch')}, "
        f"{torch.get_num_threads()} threads"
    )
    torch.manual_seed(0)
    if args.check:
        raise SystemExit(0 if check() else 1)
    settings = QUICK if args.quick else SETTINGS
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; valid names: {', '.join(MODELS)}")
    rows = ["| model | N | batch | converter | BackPACK GraNd s | examples/s |"]
    rows.append("|---|---|---|---|---|---|")
    for name in names:
        r = rate(name, settings[name], CONVERTER[name] and not args.no_converter)
        rows.append(
            f"| {name} | {r['num_examples']} | {r['batch']} | {r['use_converter']} "
            f"| {r['seconds']:.2f} "
            f"| {r['num_examples'] / r['seconds']:.1f} |"
        )
        print(rows[-1], f"(all passes: {', '.join(f'{t:.2f}' for t in r['all'])} s)", flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
