"""Throughput and peak memory of EL2N/GraNd against a training step, forward and baselines.

    python -m benchmarks.bench_scores --out=bench [--models=small_cnn,resnet18] [--quick]

Every method runs in its own subprocess, so its peak memory (`ru_maxrss` on CPU, the device's
`peak_bytes_in_use` on GPU/TPU) is its own; 'idle' is the process after importing JAX and building
the model, the floor under every other number. Inputs are synthetic (random normal images, random
labels) of the model's input shape; all timings follow one untimed warm-up (compilation) call.

Methods: 'train' (the pipeline's SGD step, `train.train_step`, BatchNorm in train mode, with the
fast max-pool gradient it uses on CPU), 'train_xla' (the same step with XLA's own gradient),
'forward' (jitted eval forward),
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

The methods themselves are `benchmarks/score_methods.py`.

NNX: 'nnx_small_cnn' is the small CNN written with Flax NNX (nnx.Conv, nnx.BatchNorm,
nnx.Linear; `score_cases.nnx_small_cnn`), scored through the jaxpr-based GraNd path
(`scores/pergrad/jaxpr_sites.py`); only
'grand' and 'vmap_grad' run for it (`NNX_METHODS`), on the small CNN's settings.

Streamed input: 'stream<N>' runs small-CNN EL2N on a generator of N random examples in batches of
100 (re-chunked to 256), once for each N of STREAM_SIZES, each in its own process; peak memory
must not grow with N (the ratio of the largest to the smallest peak is reported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags, logging

from benchmarks import score_cases, score_methods, timing

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "bench", "Output folder for bench.json and bench.md.")
flags.DEFINE_list(
    "models",
    ["small_cnn", "resnet18", "vit", "text_classifier"],
    "Models from datadiet_jax.models and benchmarks.transformer_models.",
)
flags.DEFINE_list("methods", None, "Methods to run (default: all).")
flags.DEFINE_bool("quick", False, "Smoke test: small CNN only, few iterations (under a minute).")
flags.DEFINE_string("child", None, "Internal: run one MODEL:METHOD and print its result.")

NNX_METHODS = ("grand", "vmap_grad")
METHODS = tuple(score_methods.METHODS)
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
    "vit": dict(batch=64, iters=4, fwd_batch=64, fwd_iters=8),
    "text_classifier": dict(batch=64, iters=4, fwd_batch=64, fwd_iters=8),
}
QUICK = {
    "small_cnn": dict(batch=64, iters=2, fwd_batch=128, fwd_iters=3, jac_batch=8, jac_iters=1,
                      full_n=60000, ntk_n=100),
    "resnet18": dict(batch=8, iters=1, fwd_batch=8, fwd_iters=2, jac_batch=4, jac_iters=1,
                     full_n=50000, ntk_n=4),
    "vit": dict(batch=16, iters=1, fwd_batch=16, fwd_iters=1),
    "text_classifier": dict(batch=16, iters=1, fwd_batch=16, fwd_iters=1),
}
# fmt: on
# The transformers (benchmarks/transformer_models.py) run these methods only.
TRANSFORMER_METHODS = ("idle", "forward", "grand", "vmap_grad", "versus")
TRANSFORMER_METHODS_MODELS = ("vit", "text_classifier")
NUM_SEEDS = score_methods.NUM_SEEDS
STREAM_SIZES = (10_000, 100_000)
STREAM_SIZES_QUICK = (2_000, 20_000)


def _machine() -> dict:
    import jax

    return timing.machine() | {"devices": [str(d) for d in jax.devices()]}


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
            if method == "versus" and "vmap_grad_examples_per_s" in r:
                rate += (
                    f" (grand, of which sites {r['sites_examples_per_s']:.1f}; vmap(grad) "
                    f"{r['vmap_grad_examples_per_s']:.1f} in the same process; "
                    f"{100 * r['fast_param_share']:.1f}% of params on fast rules)"
                )
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
    rows += ["", timing.machine_line(m)]
    return "\n".join(rows)


def main(argv):
    del argv
    if FLAGS.child:
        model_name, method = FLAGS.child.split(":")
        if method.startswith("stream"):
            result = score_cases.run_stream(int(method[len("stream") :]))
            print("RESULT " + json.dumps(result), flush=True)
            return
        if model_name == "nnx_small_cnn":
            cfg = (QUICK if FLAGS.quick else SETTINGS)["small_cnn"]
            print("RESULT " + json.dumps(score_cases.run_nnx(method, cfg)), flush=True)
            return
        cfg = (QUICK if FLAGS.quick else SETTINGS)[model_name]
        print("RESULT " + json.dumps(score_methods.run_method(model_name, method, cfg)), flush=True)
        return
    models = ["small_cnn"] if FLAGS.quick else FLAGS.models
    settings = QUICK if FLAGS.quick else SETTINGS
    results = {"machine": _machine(), "settings": {m: settings[m] for m in models}}
    results["settings"]["num_seeds_kseed"] = NUM_SEEDS
    results["results"], results["ratios"] = {}, {}
    for model_name in models:
        by_method = {}
        methods = FLAGS.methods or METHODS
        if model_name in TRANSFORMER_METHODS_MODELS:
            methods = [m for m in methods if m in TRANSFORMER_METHODS]
        for method in methods:
            start = time.perf_counter()
            by_method[method] = _spawn(model_name, method)
            logging.info(
                "%s %s: %s (%.0f s)",
                model_name,
                method,
                by_method[method],
                time.perf_counter() - start,
            )
        results["results"][model_name] = by_method
        rate = {m: by_method.get(m, {}).get("examples_per_s") for m in METHODS}
        peak = {m: by_method.get(m, {}).get("peak_mb") for m in METHODS}
        guard = by_method.get("guard", {})
        ratios = {
            "grand_vs_vmap_grad_throughput": _ratio(rate["grand"], rate["vmap_grad"]),
            "grand_vs_vmap_grad_same_process": by_method.get("versus", {}).get(
                "grand_vs_vmap_grad"
            ),
            "fast_param_share_percent": _percent(
                by_method.get("versus", {}).get("fast_param_share")
            ),
            "grand_vs_jacrev_throughput": _ratio(rate["grand"], rate["jacrev"]),
            "grand_vs_train_throughput": _ratio(rate["grand"], rate["train"]),
            "train_vs_train_xla_throughput": _ratio(rate["train"], rate["train_xla"]),
            "el2n_vs_forward_throughput": _ratio(rate["el2n"], rate["forward"]),
            "kseed_vs_sequential_throughput": by_method.get("kseed", {}).get("kseed_speedup"),
            "ntk_vs_jacrev_ntk_speedup": by_method.get("ntk", {}).get("ntk_vs_jacrev_speedup"),
            "grand_vs_train_peak_memory": _ratio(peak["grand"], peak["train"]),
            "train_vs_train_xla_peak_memory": _ratio(peak["train"], peak["train_xla"]),
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
    timing.write_outputs(FLAGS.out, "bench", results, _table(results) + "\n")


if __name__ == "__main__":
    app.run(main)
