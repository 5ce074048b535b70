"""Where a training step's time goes on this machine, and what other backward passes would give.

    python -m benchmarks.bench_backward --out=bench [--quick]

For the small CNN (batch 128) and ResNet18 (batch 32), in one process, on synthetic inputs, the
gradient of the train-mode loss (BatchNorm batch statistics) is timed (best of 3 after a warm-up)
as:
- 'xla': `jax.grad` as XLA lowers it;
- 'fast_pools': max-pools by `fast_pools` (what `train.train_step` runs on CPU);
- 'conv_xla', 'conv_offsets', 'conv_gshift': 'fast_pools' with every convolution's kernel
  gradient through a custom VJP: XLA's own, or the forms of `benchmarks/conv_candidates.py`;
  each with its largest difference from 'xla', relative to the largest gradient entry.
It also reports the step's FLOPs (XLA's cost analysis), the machine's matmul rate (2048^3,
float32), the share of that rate the step reaches, and a profile of the 'fast_pools' program by
kind of operation (a `jax.profiler` trace of 3 steps: forward and input-gradient convolutions,
kernel-gradient convolutions, layout copies, pooling, other element-wise work).
Writes OUT/bench_backward.json and OUT/bench_backward.md.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

from absl import app, flags, logging

from benchmarks import timing

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "bench", "Output folder for bench_backward.json and .md.")
flags.DEFINE_bool("quick", False, "Smoke test: the small CNN at batch 16 (seconds).")

SETTINGS = {"small_cnn": ((28, 28, 1), 128, 10), "resnet18": ((32, 32, 3), 32, 2)}
QUICK = {"small_cnn": ((28, 28, 1), 16, 2)}


def _best_time(fn, *args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / repeats)
    return min(times)


def _matmul_gflops() -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    return 2 * 2048**3 / _best_time(jax.jit(lambda a: a @ a), a, repeats=3) / 1e9


def _losses(model_name: str, shape, batch: int):
    import jax
    import jax.numpy as jnp

    from benchmarks import conv_candidates
    from datadiet_jax.models import get_model
    from datadiet_jax.scores.losses import cross_entropy
    from datadiet_jax.scores.pergrad import fast_pools

    model = get_model(model_name, 10)
    x = jax.random.normal(jax.random.key(0), (batch, *shape))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    variables = model.init(jax.random.key(2), x[:1], train=False)

    def loss(params, x):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean(cross_entropy(logits, y))

    def wrapped(wrap):
        return lambda p, x: wrap(lambda p: loss(p, x))(p)

    grads = {"xla": jax.grad(loss), "fast_pools": jax.grad(wrapped(fast_pools.with_fast_pools))}
    for form in conv_candidates.FORMS:
        wrap = lambda fn, form=form: conv_candidates.with_kernel_grad(fn, form)  # noqa: E731
        grads[f"conv_{form}"] = jax.grad(wrapped(wrap))
    return grads, variables["params"], x


def _category(line: str, batch: int) -> str:
    if " convolution(" in line:
        # Forward and input-gradient convolutions give [batch, ...]; XLA's kernel gradient is a
        # convolution whose result is the kernel, [C_in, kh, kw, C_out] (no model here has
        # C_in equal to the batch size).
        lead = re.search(r"= \w+\[(\d+),", line)
        if lead and int(lead.group(1)) != batch:
            return "kernel-gradient convolutions"
        return "forward and input-gradient convolutions"
    if " dot(" in line:
        return "matmuls"
    if " copy(" in line or " transpose(" in line:
        return "layout copies"
    if "reduce-window" in line or "scatter" in line or "select" in line or "iota" in line:
        return "pooling and selects"
    return "other element-wise and reductions"


def _profile(fn, batch: int, *args) -> dict:
    """Milliseconds per call by kind of operation, from a trace of 3 calls."""
    import jax

    text = fn.lower(*args).compile().as_text()
    # Each instruction's line, and each computation's body, indexed in one pass.
    lines, bodies, current = {}, {}, None
    for line in text.split("\n"):
        head = re.match(r"^%?([\w.\-]+) .*\{$", line)
        if head:
            current = bodies.setdefault(head.group(1), [])
            continue
        defined = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
        if defined:
            lines.setdefault(defined.group(1), line)
        if current is not None:
            current.append(line)

    def describe(name):
        """The instruction a thunk stands for: its line, or for a fusion the convolution, dot
        or root of the computation it calls."""
        line = lines.get(name, "")
        called = re.search(r"calls=%([\w.\-]+)", line)
        body = bodies.get(called.group(1), []) if called else []
        key = [b for b in body if " convolution(" in b or " dot(" in b]
        root = [b for b in body if b.strip().startswith("ROOT")]
        return (key or root or [line])[0]

    jax.block_until_ready(fn(*args))
    folder = tempfile.mkdtemp(prefix="bench_backward_")
    with jax.profiler.trace(folder, create_perfetto_trace=True):
        for _ in range(3):
            jax.block_until_ready(fn(*args))
    trace = glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True)
    events = json.load(gzip.open(trace[0]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("ThunkExecutor", "$", "Pjit")):
            per_op[e["name"]] += e.get("dur", 0) / 3 / 1e3
    by_kind = collections.Counter()
    for name, ms in per_op.items():
        line = describe(name)
        if line:
            by_kind[_category(line, batch)] += ms
    return dict(by_kind.most_common())


def measure(model_name: str, shape, batch: int, repeats: int) -> dict:
    import jax
    import numpy as np

    grads, params, x = _losses(model_name, shape, batch)
    programs = {name: jax.jit(g) for name, g in grads.items()}
    reference = jax.tree.leaves(programs["xla"](params, x))
    scale = max(float(np.abs(r).max()) for r in reference)
    rows = {}
    for name, program in programs.items():
        seconds = _best_time(program, params, x, repeats=repeats)
        got = jax.tree.leaves(program(params, x))
        diff = max(
            float(np.abs(np.asarray(a) - np.asarray(b)).max())
            for a, b in zip(got, reference, strict=True)
        )
        rows[name] = {
            "examples_per_s": batch / seconds,
            "ms": 1e3 * seconds,
            "max_rel_diff_vs_xla": diff / scale,
        }
        logging.info("%s %s: %.1f examples/s", model_name, name, batch / seconds)
    cost = programs["fast_pools"].lower(params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "batch": batch,
        "gflop_per_step": cost["flops"] / 1e9,
        "rows": rows,
        "profile_ms": _profile(programs["fast_pools"], batch, params, x),
    }


def _table(results: dict) -> str:
    peak = results["matmul_gflops"]
    out = [
        "| model | backward | examples/s | vs xla | GFLOP/s | share of matmul rate | "
        "max rel. diff vs xla |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, r in results["models"].items():
        base = r["rows"]["xla"]["examples_per_s"]
        for name, row in r["rows"].items():
            rate = r["gflop_per_step"] / (row["ms"] / 1e3)
            out.append(
                f"| {model} | {name} | {row['examples_per_s']:.1f} | "
                f"{row['examples_per_s'] / base:.2f} | {rate:.1f} | {rate / peak:.0%} | "
                f"{row['max_rel_diff_vs_xla']:.1e} |"
            )
    out += ["", "| model | kind of operation (fast_pools step) | ms per step |", "|---|---|---|"]
    for model, r in results["models"].items():
        out += [f"| {model} | {kind} | {ms:.1f} |" for kind, ms in r["profile_ms"].items()]
    out += ["", f"Matmul rate of this machine (2048^3 float32): {peak:.1f} GFLOP/s."]
    if "machine" in results:
        out += ["", timing.machine_line(results["machine"])]
    return "\n".join(out) + "\n"


def main(argv):
    del argv
    settings = QUICK if FLAGS.quick else SETTINGS
    results = {"machine": timing.machine(), "matmul_gflops": _matmul_gflops(), "models": {}}
    for model_name, (shape, batch, repeats) in settings.items():
        results["models"][model_name] = measure(model_name, shape, batch, repeats)
    timing.write_outputs(FLAGS.out, "bench_backward", results, _table(results))


if __name__ == "__main__":
    app.run(main)
