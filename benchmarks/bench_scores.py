"""Throughput and peak memory of EL2N/GraNd against a training step, forward and baselines.

    python -m benchmarks.bench_scores --out=bench [--models=small_cnn,resnet18] [--quick]

Every method runs in its own subprocess, so its peak memory (`ru_maxrss` on CPU, the device's
`peak_bytes_in_use` on GPU/TPU) is its own; 'idle' is the process after importing JAX and building
the model, the floor under every other number. Inputs are synthetic (random normal images, random
labels) of the model's input shape; all timings follow one untimed warm-up (compilation) call.

Methods: 'train' (SGD step, BatchNorm in train mode), 'forward' (jitted eval forward),
'el2n' and 'grand' (the public `el2n_scores`/`grand_scores`, K=1, including host batching),
'vmap_grad' (`vmap(grad)` per-example gradients, then norms), 'jacrev' (`jax.jacrev` of the
per-example losses w.r.t. params, the authors' approach, at a smaller batch), 'kseed' (K=4
seeds in one `grand_scores` call against 4 sequential single-seed calls), 'ntk' (the exact
empirical NTK Gram matrix of `ntk_n` examples, one seed, by `dynamics.ntk.ntk_gram`, against
`J @ J.T` of the per-example Jacobians (`vmap(jacrev)`) of the logits w.r.t. all params, both
jitted and timed after a warm-up; the rate is examples/s of ours, with both times, their ratio
and their largest relative difference), and 'guard' (the
first-batch check of GraNd's layer rules that every `grand_scores` call runs, one seed: its time
with compilation ('cold') and without ('warm'), against a full-dataset call of `full_n` examples:
the GraNd program's compilation and first batch plus `full_n` examples at its measured rate).
Writes OUT/bench.json and OUT/bench.md and logs the table.

NNX: 'nnx_small_cnn' is the small CNN written with Flax NNX (nnx.Conv, nnx.BatchNorm,
nnx.Linear; `nnx_small_cnn`), scored through the jaxpr-based GraNd path (`jaxpr_sites.py`); only
'grand' and 'vmap_grad' run for it (`NNX_METHODS`), on the small CNN's settings.

Streamed input: 'stream<N>' runs small-CNN EL2N on a generator of N random examples in batches of
100 (re-chunked to 256), once for each N of STREAM_SIZES, each in its own process; peak memory
must not grow with N (the ratio of the largest to the smallest peak is reported).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "bench", "Output folder for bench.json and bench.md.")
flags.DEFINE_list("models", ["small_cnn", "resnet18"], "Models from datadiet_jax.models.")
flags.DEFINE_list("methods", None, "Methods to run (default: all).")
flags.DEFINE_bool("quick", False, "Smoke test: small CNN only, few iterations (under a minute).")
flags.DEFINE_string("child", None, "Internal: run one MODEL:METHOD and print its result.")

NNX_METHODS = ("grand", "vmap_grad")
METHODS = (
    "idle", "train", "forward", "el2n", "grand", "vmap_grad", "jacrev", "kseed", "guard", "ntk"
)  # fmt: skip
# batch: train/grand/vmap_grad batch; iters: timed batches; fwd_*: forward/EL2N; jac_batch: jacrev;
# full_n: the dataset size the guard's cost is set against (Fashion-MNIST, CIFAR-10 train splits);
# ntk_n: examples of the NTK Gram matrix (a window of Figure 3; ResNet18 fewer, as the jacrev
# reference holds n * C * 11M floats).
# fmt: off
SETTINGS = {
    "small_cnn": dict(batch=128, iters=8, fwd_batch=256, fwd_iters=16, jac_batch=16, jac_iters=4,
                      full_n=60000, ntk_n=100),
    "resnet18": dict(batch=32, iters=2, fwd_batch=32, fwd_iters=6, jac_batch=8, jac_iters=1,
                     full_n=50000, ntk_n=8),
}
QUICK = {
    "small_cnn": dict(batch=64, iters=2, fwd_batch=128, fwd_iters=3, jac_batch=8, jac_iters=1,
                      full_n=60000, ntk_n=100),
    "resnet18": dict(batch=8, iters=1, fwd_batch=8, fwd_iters=2, jac_batch=4, jac_iters=1,
                     full_n=50000, ntk_n=4),
}
# fmt: on
NUM_SEEDS = 4
STREAM_SIZES = (10_000, 100_000)
STREAM_SIZES_QUICK = (2_000, 20_000)
STREAM_INPUT_BATCH = 100


def _peak_mb() -> float:
    import jax

    if jax.default_backend() != "cpu":
        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, num_examples: int) -> float:
    """Examples/s of `fn()` after one warm-up call."""
    import jax

    jax.block_until_ready(fn())
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return num_examples / (time.perf_counter() - start)


def _run_stream_child(num_examples: int) -> dict:
    """EL2N of the small CNN on a generator of random batches; nothing is held but the result."""
    import jax
    import numpy as np

    from datadiet_jax import scores
    from datadiet_jax.models import get_model

    model = get_model("small_cnn", 10)
    variables = scores.init_variables(model, jax.random.key(0), 1, np.zeros((1, 28, 28, 1)))

    def batches(seed):
        rng = np.random.default_rng(seed)
        for lo in range(0, num_examples, STREAM_INPUT_BATCH):
            b = min(STREAM_INPUT_BATCH, num_examples - lo)
            yield rng.normal(size=(b, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, b)

    scores.el2n_scores(model, variables, batches(1), batch_size=256)  # compile
    start = time.perf_counter()
    out = scores.el2n_scores(model, variables, batches(0), batch_size=256)
    rate = num_examples / (time.perf_counter() - start)
    assert out.shape == (1, num_examples), out.shape
    return {"batch_size": 256, "num_examples": num_examples, "examples_per_s": rate,
            "peak_mb": _peak_mb()}  # fmt: skip


def nnx_small_cnn(key, num_classes: int = 10, width: int = 32, hidden: int = 128):
    """The NNX twin of `models.SmallCNN` (28x28x1 inputs), built from `key`."""
    from flax import nnx

    class SmallCNN(nnx.Module):
        def __init__(self, rngs):
            bn = dict(momentum=0.9, epsilon=1e-5, rngs=rngs)
            self.conv1 = nnx.Conv(1, width, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(width, **bn)
            self.conv2 = nnx.Conv(
                width, 2 * width, (3, 3), padding="SAME", use_bias=False, rngs=rngs
            )
            self.bn2 = nnx.BatchNorm(2 * width, **bn)
            self.dense = nnx.Linear(2 * width * 7 * 7, hidden, use_bias=False, rngs=rngs)
            self.bn3 = nnx.BatchNorm(hidden, **bn)
            self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

        def __call__(self, x):
            for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
                x = nnx.max_pool(nnx.relu(bn(conv(x))), (2, 2), strides=(2, 2))
            x = nnx.relu(self.bn3(self.dense(x.reshape(x.shape[0], -1))))
            return self.head(x)

    return SmallCNN(nnx.Rngs(key))


def _run_nnx(method: str, cfg: dict) -> dict:
    """GraNd (public `grand_scores`, K=1) or `vmap(grad)` of the NNX small CNN."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from datadiet_jax import adapters, jaxpr_norms, scores

    model = nnx.vmap(lambda k: nnx_small_cnn(k), in_axes=0)(jax.random.split(jax.random.key(0), 1))
    graphdef, state = nnx.split(model)
    bsz, iters = cfg["batch"], cfg["iters"]
    n = bsz * iters
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    result = {"batch_size": bsz, "timed_batches": iters}
    if method == "grand":
        result["examples_per_s"] = _timed(
            lambda: scores.grand_scores(graphdef, state, images, labels, batch_size=bsz), n
        )
    else:
        adapted, packed = adapters.adapt(graphdef, state)
        one = jax.tree.map(lambda v: v[0], packed)
        step = jax.jit(
            lambda x, y: jnp.sqrt(sum(jaxpr_norms.leaf_sq_norms(adapted.apply, one, x, y).values()))
        )
        batches = [(images[i : i + bsz], labels[i : i + bsz]) for i in range(0, n, bsz)]
        result["examples_per_s"] = _timed(
            lambda: [step(jnp.asarray(x), jnp.asarray(y)) for x, y in batches], n
        )
    result["peak_mb"] = _peak_mb()
    return result


def run_method(model_name: str, method: str, cfg: dict) -> dict:
    """Throughput and peak memory of one METHOD on MODEL with settings `cfg` (see SETTINGS);
    run it in a fresh process, so the peak is its own."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from datadiet_jax import grad_norms, scores
    from datadiet_jax.models import get_model

    model = get_model(model_name, 10)
    shape = (28, 28, 1) if model_name == "small_cnn" else (32, 32, 3)
    rng = np.random.default_rng(0)
    bsz = {
        "forward": cfg["fwd_batch"], "el2n": cfg["fwd_batch"], "jacrev": cfg["jac_batch"],
        "ntk": cfg["ntk_n"],
    }.get(method, cfg["batch"])  # fmt: skip
    iters = {
        "forward": cfg["fwd_iters"], "el2n": cfg["fwd_iters"], "jacrev": cfg["jac_iters"], "ntk": 1
    }.get(method, cfg["iters"])  # fmt: skip
    n = bsz * iters
    images = rng.normal(size=(n, *shape)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    variables = scores.init_variables(model, jax.random.key(0), 1, images[:1])
    one = jax.tree.map(lambda v: v[0], variables)
    apply_fn = lambda v, x: model.apply(v, x, train=False)
    batches = [(images[i : i + bsz], labels[i : i + bsz]) for i in range(0, n, bsz)]

    def per_batch(step):
        return lambda: [step(jnp.asarray(x), jnp.asarray(y)) for x, y in batches]

    result = {"batch_size": bsz, "timed_batches": iters}
    if method == "idle":
        result["examples_per_s"] = None
    elif method == "train":

        @jax.jit
        def train_step(v, x, y):
            def loss(p):
                logits, new = model.apply(
                    {**v, "params": p}, x, train=True, mutable=["batch_stats"]
                )
                return jnp.mean(grad_norms.cross_entropy(logits, y)), new

            grads, new = jax.grad(loss, has_aux=True)(v["params"])
            params = jax.tree.map(lambda p, g: p - 0.1 * g, v["params"], grads)
            return {"params": params, **new}

        result["examples_per_s"] = _timed(per_batch(lambda x, y: train_step(one, x, y)), n)
    elif method == "forward":
        fwd = jax.jit(apply_fn)
        result["examples_per_s"] = _timed(per_batch(lambda x, y: fwd(one, x)), n)
    elif method in ("el2n", "grand"):
        fn = scores.el2n_scores if method == "el2n" else scores.grand_scores
        result["examples_per_s"] = _timed(
            lambda: fn(model, variables, images, labels, batch_size=bsz), n
        )
    elif method == "vmap_grad":
        step = jax.jit(lambda x, y: jnp.sqrt(grad_norms.vmap_grad_sq_norms(apply_fn, one, x, y)))
        result["examples_per_s"] = _timed(per_batch(step), n)
    elif method == "jacrev":

        @jax.jit
        def step(x, y):
            losses = lambda p: grad_norms.cross_entropy(apply_fn({**one, "params": p}, x), y)
            jac = jax.jacrev(losses)(one["params"])
            return jnp.sqrt(
                sum(jnp.sum(j.reshape(len(y), -1) ** 2, 1) for j in jax.tree.leaves(jac))
            )

        result["examples_per_s"] = _timed(per_batch(step), n)
    elif method == "kseed":
        stacked = scores.init_variables(model, jax.random.key(1), NUM_SEEDS, images[:1])
        singles = [jax.tree.map(lambda v, k=k: v[k : k + 1], stacked) for k in range(NUM_SEEDS)]
        kw = dict(batch_size=bsz)
        together = _timed(lambda: scores.grand_scores(model, stacked, images, labels, **kw), n)
        seq = _timed(
            lambda: [scores.grand_scores(model, s, images, labels, **kw) for s in singles], n
        )
        result.update(examples_per_s=together, sequential_examples_per_s=seq)
        result["kseed_speedup"] = together / seq
    elif method == "guard":
        result.update(_guard_cost(model, variables, images, labels, bsz, cfg["full_n"]))
    elif method == "ntk":
        result.update(_ntk_cost(model, variables, images[: cfg["ntk_n"]]))
    result["peak_mb"] = _peak_mb()
    return result


def _guard_cost(model, variables, images, labels, bsz: int, full_n: int) -> dict:
    """Seconds of the first-batch guard (cold, warm) and its share of a `full_n`-example call.

    The guard reuses the call's own first batch (its per-layer norms), so its cost is the exact
    `vmap(grad)` program on a few examples and the comparison. The call it is set against is the
    compilation and first batch of the GraNd program plus `full_n` examples at its measured rate.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from datadiet_jax import adapters, grad_guard, host_batches, scores

    model, variables = adapters.adapt(model, variables)  # the pure form the scores compile
    fn = scores._compiled(model, "grand", "unroll", None)
    batches = [
        tuple(map(jnp.asarray, batch[:3]))
        for batch in host_batches.array_batches(images, labels.astype(np.int32), bsz)
    ]
    start = time.perf_counter()
    first = jax.block_until_ready(fn(variables, *batches[0]))
    program_cold = time.perf_counter() - start
    m = grad_guard.NUM_EXAMPLES
    fast = {key: np.asarray(v)[:, :m] for key, v in first[1].items()}
    one = [jax.tree.map(lambda v: v[0], variables)]
    x, y = batches[0][0][:m], batches[0][1][:m]
    times = []
    for exact_fn in [scores._build_exact(model)] * 2:  # cold (compiles), then warm
        start = time.perf_counter()
        grad_guard.guard(exact_fn, fast, one, x, y)
        times.append(time.perf_counter() - start)
    rate = _timed(lambda: [fn(variables, *b) for b in batches], len(images))
    full_s = program_cold + full_n / rate
    return {
        "examples_per_s": rate,
        "guard_cold_s": times[0],
        "guard_warm_s": times[1],
        "program_cold_s": program_cold,
        "full_n": full_n,
        "full_call_s_extrapolated": full_s,
        "guard_cold_share": times[0] / full_s,
        "guard_warm_share": times[1] / full_s,
    }


def _ntk_cost(model, variables, images) -> dict:
    """Seconds of the NTK Gram matrix of `images` by `ntk_gram` and by `jacrev` + `J @ J.T`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from datadiet_jax.dynamics import ntk

    n = len(images)
    one = jax.tree.map(lambda v: v[0], variables)
    x = jnp.asarray(images)

    @jax.jit
    def jacrev_gram(v, x):
        # Per-example Jacobians (jacrev of the whole batch would differentiate every logit
        # through every example), then J @ J.T of the full [n*C, P] Jacobian.
        def logits_one(p, xi):
            return model.apply({**v, "params": p}, xi[None], train=False)[0]

        jac = jax.vmap(jax.jacrev(logits_one), in_axes=(None, 0))(v["params"], x)
        j = jnp.concatenate(
            [a.reshape(a.shape[0] * a.shape[1], -1) for a in jax.tree.leaves(jac)], 1
        )
        return jnp.dot(j, j.T, precision=jax.lax.Precision.HIGHEST)  # [n*C, n*C]

    def ours():
        return ntk.ntk_gram(model, variables, images, batch_size=n)

    times = {}
    for name, fn in (("ntk", ours), ("jacrev_ntk", lambda: jacrev_gram(one, x))):
        jax.block_until_ready(fn())  # compile
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times[name] = time.perf_counter() - start
        if name == "ntk":
            got = np.asarray(out)[0]
        else:
            c = out.shape[0] // n
            want = np.einsum("icjc->ij", np.asarray(out).reshape(n, c, n, c))
    return {
        "batch_size": n,
        "examples_per_s": n / times["ntk"],
        "ntk_s": times["ntk"],
        "jacrev_ntk_s": times["jacrev_ntk"],
        "ntk_vs_jacrev_speedup": times["jacrev_ntk"] / times["ntk"],
        "max_rel_diff": float(np.max(np.abs(got - want)) / np.max(np.abs(want))),
    }


def _machine() -> dict:
    import jax

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
    }


def _spawn(model_name: str, method: str) -> dict:
    args = [sys.executable, "-m", "benchmarks.bench_scores", f"--child={model_name}:{method}"]
    args += ["--quick"] if FLAGS.quick else []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        logging.error("%s/%s failed: %s", model_name, method, proc.stderr[-2000:])
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(lines[-1][len("RESULT ") :])


def _ratio(a, b):
    return None if not a or not b else a / b


def _percent(share):
    return None if share is None else 100.0 * share


def _table(results: dict) -> str:
    rows = ["| model | method | batch | examples/s | peak MB |", "|---|---|---|---|---|"]
    for model_name, by_method in results["results"].items():
        for method, r in by_method.items():
            rate = r.get("examples_per_s")
            rate = f"{rate:.1f}" if rate else ("error" if "error" in r else "-")
            if method == "guard" and "guard_cold_s" in r:
                rate += f" (grand program only; guard {r['guard_cold_s']:.1f} s cold)"
            if method == "ntk" and "jacrev_ntk_s" in r:
                rate += f" (Gram of {r['batch_size']}: {r['ntk_s']:.2f} s; jacrev J J^T "
                rate += f"{r['jacrev_ntk_s']:.2f} s)"
            if method == "kseed" and "sequential_examples_per_s" in r:
                rate += (
                    f" (K={NUM_SEEDS} x examples; sequential {r['sequential_examples_per_s']:.1f})"
                )
            peak = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-"
            rows.append(
                f"| {model_name} | {method} | {r.get('batch_size', '-')} | {rate} | {peak} |"
            )
    rows += ["", "| model | ratio | value |", "|---|---|---|"]
    for model_name, ratios in results["ratios"].items():
        for name, value in ratios.items():
            rows.append(f"| {model_name} | {name} | {'-' if value is None else f'{value:.2f}'} |")
    stream_rows = []
    for name, r in results.get("stream", {}).items():
        rate = f"{r['examples_per_s']:.1f}" if r.get("examples_per_s") else "error"
        peak = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-"
        stream_rows.append(f"| small_cnn | el2n {name} | 256 | {rate} | {peak} |")
    at = 2 + sum(len(v) for v in results["results"].values())  # after the method rows
    rows[at:at] = stream_rows
    m = results["machine"]
    rows += ["", f"Machine: {m['cpu']}, {m['cores']} cores, jax {m['jax']} on {m['backend']}."]
    return "\n".join(rows)


def main(argv):
    del argv
    if FLAGS.child:
        model_name, method = FLAGS.child.split(":")
        if method.startswith("stream"):
            result = _run_stream_child(int(method[len("stream") :]))
            print("RESULT " + json.dumps(result), flush=True)
            return
        if model_name == "nnx_small_cnn":
            cfg = (QUICK if FLAGS.quick else SETTINGS)["small_cnn"]
            print("RESULT " + json.dumps(_run_nnx(method, cfg)), flush=True)
            return
        cfg = (QUICK if FLAGS.quick else SETTINGS)[model_name]
        print("RESULT " + json.dumps(run_method(model_name, method, cfg)), flush=True)
        return
    models = ["small_cnn"] if FLAGS.quick else FLAGS.models
    settings = QUICK if FLAGS.quick else SETTINGS
    results = {"machine": _machine(), "settings": {m: settings[m] for m in models}}
    results["settings"]["num_seeds_kseed"] = NUM_SEEDS
    results["results"], results["ratios"] = {}, {}
    for model_name in models:
        by_method = {}
        for method in FLAGS.methods or METHODS:
            start = time.perf_counter()
            by_method[method] = _spawn(model_name, method)
            logging.info('%s %s: %s (%.0f s)', model_name, method, by_method[method],
                         time.perf_counter() - start)  # fmt: skip
        results["results"][model_name] = by_method
        rate = {m: by_method.get(m, {}).get("examples_per_s") for m in METHODS}
        peak = {m: by_method.get(m, {}).get("peak_mb") for m in METHODS}
        guard = by_method.get("guard", {})
        ratios = {
            "grand_vs_vmap_grad_throughput": _ratio(rate["grand"], rate["vmap_grad"]),
            "grand_vs_jacrev_throughput": _ratio(rate["grand"], rate["jacrev"]),
            "grand_vs_train_throughput": _ratio(rate["grand"], rate["train"]),
            "el2n_vs_forward_throughput": _ratio(rate["el2n"], rate["forward"]),
            "kseed_vs_sequential_throughput": by_method.get("kseed", {}).get("kseed_speedup"),
            "ntk_vs_jacrev_ntk_speedup": by_method.get("ntk", {}).get("ntk_vs_jacrev_speedup"),
            "grand_vs_train_peak_memory": _ratio(peak["grand"], peak["train"]),
            "vmap_grad_vs_train_peak_memory": _ratio(peak["vmap_grad"], peak["train"]),
            "guard_cold_vs_full_call_percent": _percent(guard.get("guard_cold_share")),
            "guard_warm_vs_full_call_percent": _percent(guard.get("guard_warm_share")),
        }
        results["ratios"][model_name] = {k: v for k, v in ratios.items() if v is not None}
    if "small_cnn" in models:  # the same CNN in Flax NNX, through the jaxpr-based GraNd path
        by_method = {m: _spawn("nnx_small_cnn", m) for m in NNX_METHODS}
        logging.info("nnx_small_cnn: %s", by_method)
        results["results"]["nnx_small_cnn"] = by_method
        rate = {m: r.get("examples_per_s") for m, r in by_method.items()}
        ratio = _ratio(rate["grand"], rate["vmap_grad"])
        results["ratios"]["nnx_small_cnn"] = {"grand_vs_vmap_grad_throughput": ratio}
    if "small_cnn" in models:
        stream = {}
        for n in STREAM_SIZES_QUICK if FLAGS.quick else STREAM_SIZES:
            stream[f"streamed N={n}"] = _spawn("small_cnn", f"stream{n}")
            logging.info("small_cnn streamed N=%d: %s", n, stream[f"streamed N={n}"])
        results["stream"] = stream
        peaks = [r.get("peak_mb") for r in stream.values()]
        results["ratios"].setdefault("small_cnn", {})[
            "stream_peak_memory_largest_vs_smallest_n"
        ] = _ratio(peaks[-1], peaks[0])
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "bench.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = _table(results)
    with open(os.path.join(FLAGS.out, "bench.md"), "w") as f:
        f.write(table + "\n")
    logging.info("\n%s", table)


if __name__ == "__main__":
    app.run(main)
