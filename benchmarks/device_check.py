"""A short check of the scores library on one accelerator: its tests, then its speed and memory.

    benchmarks/device_check.sh [OUT_DIR] [--tiny]        # the usual way (sets env, time limit)
    python -m benchmarks.device_check --out_dir=DIR [--tiny]

1. Runs the score, gradient-norm, AUM, host-batching and no-TensorFlow tests with pytest (reported
   as missing, not failed, where pytest is not installed), with float32 matmuls at full precision
   (`JAX_DEFAULT_MATMUL_PRECISION=highest`: the tests compare against exact references, and TF32
   would blur them).
2. Measures, each in its own process (so each peak memory is its own), for ResNet18 at batch 128
   in float32 at default precision: a training step, EL2N, our GraNd, `vmap(grad)` per-example
   gradient norms, and K=4 seeds in one call against 4 single-seed calls (`score_methods`); then
   the small ViT and text classifier (`transformer_models`) at batch 64: GraNd against
   `vmap(grad)` in one process, interleaved, compilation left out; then the pipeline's K-seed
   training step (`train_steps`): K=4 on one device against the 'auto' mesh of every device,
   and 3 runs of 2 seeds stacked as K=6 against one 2-seed run.
`--tiny` (or DEVICE_CHECK_TINY=1) runs the same on a small CNN at batch 16, for a CPU.

Needs JAX, Flax and optax (no TensorFlow or TFDS); the training steps also ml_collections (a
small wheel to carry where it is missing; without it they report the import error). Writes
DIR/device_check.json (rewritten after every step, so a run cut short still leaves its results)
and DIR/pytest.log. Everything stops by a deadline (`--budget_s`, default 420 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "device_check", "Folder for device_check.json and pytest.log.")
flags.DEFINE_bool("tiny", False, "Small CNN at batch 16 (a CPU run); also DEVICE_CHECK_TINY=1.")
flags.DEFINE_float("budget_s", 420.0, "Seconds for the whole check; later steps are skipped.")
flags.DEFINE_string("measure", None, "Internal: run one method and print its result.")

# Of the score tests (tests/scores/), the ones that fit the time budget on one device.
TESTS = (
    "tests/scores/test_api.py",
    "tests/scores/test_linen_norms.py",
    "tests/scores/test_aum.py",
    "tests/scores/test_batches.py",
    "tests/scores/test_no_tensorflow.py",
)
TEST_TIMEOUT_S = 240
METHODS = ("train", "el2n", "grand", "vmap_grad", "kseed")
# The K-seed training step of the pipeline (benchmarks/train_steps.py): on one device against a
# mesh of every device, and stacked runs against separate ones.
TRAINING = ("train_sharded", "train_stacked")
FULL = (
    "resnet18",
    dict(batch=128, iters=10, fwd_batch=128, fwd_iters=10, jac_batch=8, jac_iters=1),
)
TINY = ("small_cnn", dict(batch=16, iters=2, fwd_batch=16, fwd_iters=2, jac_batch=4, jac_iters=1))
# The small transformers (benchmarks/transformer_models.py): GraNd against vmap(grad) in one
# process, interleaved, compilation left out ('versus' of score_methods), after METHODS.
TRANSFORMERS = ("vit:versus", "text_classifier:versus")
TRANSFORMER_CFG = dict(batch=64, iters=10, fwd_batch=64, fwd_iters=10)
TRANSFORMER_TINY = dict(batch=16, iters=2, fwd_batch=16, fwd_iters=2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny() -> bool:
    return FLAGS.tiny or os.environ.get("DEVICE_CHECK_TINY", "") not in ("", "0")


def _measure(method: str) -> dict:
    """One method in this process; 'machine' describes the backend instead."""
    import jax

    if method == "machine":
        return {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind,
        }
    from benchmarks import score_methods, train_steps

    model_name, cfg = TINY if _tiny() else FULL
    if method in TRAINING:
        fn = getattr(train_steps, method.removeprefix("train_"))
        return {"model": model_name, **fn(model_name, cfg["batch"], cfg["iters"])}
    if ":" in method:  # MODEL:METHOD, a transformer
        model_name, method = method.split(":")
        cfg = TRANSFORMER_TINY if _tiny() else TRANSFORMER_CFG
    return {"model": model_name, **score_methods.run_method(model_name, method, cfg)}


def _run_tests(out_dir: str, timeout_s: float) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"status": "pytest is not installed here; tests not run"}
    log = os.path.join(out_dir, "pytest.log")
    env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        text, status = proc.stdout + proc.stderr, "passed" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as err:
        text, status = f"{err.stdout or ''}{err.stderr or ''}", f"timed out after {timeout_s:.0f} s"
        text = text if isinstance(text, str) else text.decode(errors="replace")
    with open(log, "w") as f:
        f.write(text)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors)", text)}
    return {
        "status": status,
        "counts": counts,
        "seconds": time.perf_counter() - start,
        "log": log,
        "tail": text.strip().splitlines()[-3:],
    }


def _spawn(method: str, timeout_s: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.device_check", f"--measure={method}"]
    cmd += ["--tiny"] if _tiny() else []
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["failed"]
        return {"error": tail[0][-500:]}
    return {**json.loads(lines[-1][len("RESULT ") :]), "seconds": time.perf_counter() - start}


def _ratio(a, b):
    return None if not a or not b else a / b


def _ratios(m: dict) -> dict:
    rate = {k: v.get("examples_per_s") for k, v in m.items()}
    peak = {k: v.get("peak_mb") for k, v in m.items()}
    return {
        "grand_vs_vmap_grad_throughput": _ratio(rate.get("grand"), rate.get("vmap_grad")),
        "grand_vs_train_throughput": _ratio(rate.get("grand"), rate.get("train")),
        "kseed_vs_sequential_throughput": m.get("kseed", {}).get("kseed_speedup"),
        **{
            f"{t.split(':')[0]}_grand_vs_vmap_grad": m.get(t, {}).get("grand_vs_vmap_grad")
            for t in TRANSFORMERS
        },
        "train_mesh_vs_one_device": m.get("train_sharded", {}).get("mesh_speedup"),
        "train_stacked_vs_separate": m.get("train_stacked", {}).get("stacked_speedup"),
        "grand_vs_train_peak_memory": _ratio(peak.get("grand"), peak.get("train")),
        "vmap_grad_vs_train_peak_memory": _ratio(peak.get("vmap_grad"), peak.get("train")),
    }


def _write(out_dir: str, report: dict) -> None:
    path = os.path.join(out_dir, "device_check.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".tmp", path)


def main(argv):
    del argv
    if FLAGS.measure:
        print("RESULT " + json.dumps(_measure(FLAGS.measure)), flush=True)
        return
    deadline = time.perf_counter() + FLAGS.budget_s
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    model_name, cfg = TINY if _tiny() else FULL
    report = {"tiny": _tiny(), "model": model_name, "settings": cfg, "measurements": {}}
    report["machine"] = _spawn("machine", 120)
    _write(FLAGS.out_dir, report)
    logging.info("machine: %s", report["machine"])
    budget = min(TEST_TIMEOUT_S, deadline - time.perf_counter() - 60)
    report["tests"] = _run_tests(FLAGS.out_dir, budget)
    _write(FLAGS.out_dir, report)
    logging.info("tests: %s", report["tests"])
    for method in (*METHODS, *TRANSFORMERS, *TRAINING):
        left = deadline - time.perf_counter()
        if left < 20:
            report["measurements"][method] = {"error": "skipped: out of time budget"}
            continue
        report["measurements"][method] = _spawn(method, left)
        report["ratios"] = _ratios(report["measurements"])
        _write(FLAGS.out_dir, report)
        logging.info("%s: %s", method, report["measurements"][method])
    logging.info("ratios: %s", report.get("ratios"))
    logging.info("wrote %s", os.path.join(FLAGS.out_dir, "device_check.json"))


if __name__ == "__main__":
    app.run(main)
