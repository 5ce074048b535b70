"""The public call `grand_scores(...)` as a user makes it, cold and warm, beside `vmap(grad)`.

    python -m benchmarks.bench_public_call --out=bench [--models=small_cnn,wide_text] [--quick]

For each model, in a fresh process of its own, on N synthetic examples (random normal images or
random token ids, random labels) in N / batch batches, K = 1:

- 'cold': the first `grand_scores(model, variables, x, y, batch_size=B)` of the process, its
  compilation, checks, guard and method race included (10 batches, so the race runs: see
  SETTINGS);
- 'warm': a later call, the same arguments, in the same process (the decisions and programs
  of the first reused, `scores/decisions.py`);
- 'vmap_grad': a jitted `vmap(grad)` of every param, then the per-example norms, at the same
  batch size on the same batches, compiled on the first batch first, then timed over all of them
  (host-to-device copies of each batch included, as in the public call).

Warm calls and vmap_grad passes alternate, `--repeats` of each (default 3), and the fastest of
each is reported (all are in the JSON): other work on a shared CPU then slows both alike.

Reported: seconds and examples/s of each, the warm ratio (vmap_grad seconds over warm seconds;
higher is better), the fixed cost of each call (the difference of
`decisions.stats()['setup_seconds']` around it: checks, guard, the race's extra seconds) and its
share of the call, and the largest relative difference of the warm scores from the vmap_grad
norms, beside the 1-minute load average of the machine when the model's process started.
Writes OUT/public_call.json and OUT/public_call.md (the table, with the CPU model and
XLA_FLAGS in its caption) and logs the table. `--merge` keeps the rows of models not run now.

Models: those of `bench_scores` (small_cnn, resnet18, vit, text_classifier), the NNX small CNN
(`score_cases.nnx_small_cnn`) and wide_text (`transformer_models`: width 256, MLP 1024, 16
positions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

from benchmarks import timing

FLAGS = flags.FLAGS
MODELS = ("small_cnn", "resnet18", "nnx_small_cnn", "vit", "text_classifier", "wide_text")

# num_examples: N; batch: the batch size of every call. N / batch = 10 batches, more than the
# `pergrad.method.MIN_BATCHES` (8) a race needs, so the cold call races.
# fmt: off
SETTINGS = {
    "small_cnn": dict(num_examples=2560, batch=256),
    "resnet18": dict(num_examples=320, batch=32),
    "nnx_small_cnn": dict(num_examples=2560, batch=256),
    "vit": dict(num_examples=640, batch=64),
    "text_classifier": dict(num_examples=640, batch=64),
    "wide_text": dict(num_examples=640, batch=64),
}
QUICK = {
    "small_cnn": dict(num_examples=320, batch=32),
    "resnet18": dict(num_examples=40, batch=4),
    "nnx_small_cnn": dict(num_examples=320, batch=32),
    "vit": dict(num_examples=160, batch=16),
    "text_classifier": dict(num_examples=160, batch=16),
    "wide_text": dict(num_examples=160, batch=16),
}
# fmt: on


def build(model_name: str, num_examples: int):
    """(model, variables [K=1], inputs [N, ...] float32, labels [N] int) of a bench model."""
    import jax
    import numpy as np

    from benchmarks import score_cases
    from datadiet_jax.scores import api

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, num_examples)
    if model_name == "nnx_small_cnn":
        from flax import nnx

        keys = jax.random.split(jax.random.key(0), 1)
        graphdef, state = nnx.split(
            nnx.vmap(lambda k: score_cases.nnx_small_cnn(k), in_axes=0)(keys)
        )
        images = rng.normal(size=(num_examples, 28, 28, 1)).astype(np.float32)
        return graphdef, state, images, labels
    model, images = score_cases.model_and_inputs(model_name, num_examples, rng)
    return model, api.init_variables(model, jax.random.key(0), 1, images[:1]), images, labels


def vmap_grad_pass(model, variables, images, labels, batch_size: int):
    """A jitted `vmap(grad)` of every param, then the norms, of seed 0 of `variables`, compiled.

    Returns:
      (run: () -> per-example gradient norms [N] float32, one pass over all batches;
       seconds of the first batch, compilation included).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from datadiet_jax.scores import model_form
    from datadiet_jax.scores.pergrad import fallback

    form, packed = model_form.from_pair(model, variables)
    one = jax.device_put(jax.tree.map(lambda v: v[0], packed))

    @jax.jit
    def step(v, x, y):
        return jnp.sqrt(sum(fallback.pure_leaf_sq_norms(form.logits, v, x, y).values()))

    n = len(images)
    batches = [
        (images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, n, batch_size)
    ]

    def run(chosen=batches):
        out = [step(one, jnp.asarray(x), jnp.asarray(y, jnp.int32)) for x, y in chosen]
        return np.concatenate([np.asarray(v) for v in jax.block_until_ready(out)])

    start = time.perf_counter()
    run(batches[:1])
    return run, time.perf_counter() - start


def _timed_call(model, variables, images, labels, batch_size: int) -> tuple:
    """(scores [K, N], seconds, {fixed-cost seconds and decision counters of this call})."""
    from datadiet_jax.scores import api, decisions

    before = decisions.stats()
    start = time.perf_counter()
    scores = api.grand_scores(model, variables, images, labels, batch_size=batch_size)
    seconds = time.perf_counter() - start
    after = decisions.stats()
    return scores, seconds, {name: after[name] - before[name] for name in after}


def _record_call(record: dict, name: str, n: int, seconds: float, counts: dict) -> None:
    record[f"{name}_s"] = seconds
    record[f"{name}_examples_per_s"] = n / seconds
    record[f"{name}_setup_s"] = counts.pop("setup_seconds")
    record[f"{name}_fixed_share"] = record[f"{name}_setup_s"] / seconds
    record[f"{name}_counts"] = counts


def measure(model, variables, images, labels, batch_size: int, repeats: int = 1) -> tuple:
    """Times the cold and warm public call and the `vmap(grad)` reference in this process.

    The first call is cold only if this process has made no call of the same signature before
    (a fresh process, or after `decisions.clear()`). Then `repeats` warm calls and `repeats`
    timed `vmap(grad)` passes, interleaved (so a burst of other work on a shared CPU slows
    both); the fastest of each is reported, all times kept.

    Args:
      model, variables: as `grand_scores` takes them (K = 1); images: [N, ...]; labels: [N] int;
      batch_size: of every call; N must be a multiple of it; repeats: warm calls and passes.
    Returns:
      (record: dict of JSON values, warm scores [1, N] float32, vmap_grad norms [N] float32).
    """
    import numpy as np

    n = len(images)
    if n % batch_size:
        raise ValueError(f"N={n} is not a multiple of batch_size={batch_size}")
    record = {"num_examples": n, "batch_size": batch_size, "num_batches": n // batch_size}
    _record_call(record, "cold", n, *_timed_call(model, variables, images, labels, batch_size)[1:])
    run, record["vmap_grad_first_batch_s"] = vmap_grad_pass(
        model, variables, images, labels, batch_size
    )
    warm, passes = [], []
    for _ in range(repeats):
        warm.append(_timed_call(model, variables, images, labels, batch_size))
        start = time.perf_counter()
        reference = run()
        passes.append(time.perf_counter() - start)
    scores, seconds, counts = min(warm, key=lambda call: call[1])
    _record_call(record, "warm", n, seconds, counts)
    record["warm_all_s"], record["vmap_grad_all_s"] = [call[1] for call in warm], passes
    record["vmap_grad_s"] = min(passes)
    record["vmap_grad_examples_per_s"] = n / record["vmap_grad_s"]
    record["warm_ratio"] = record["vmap_grad_s"] / record["warm_s"]
    record["cold_ratio"] = record["vmap_grad_s"] / record["cold_s"]
    rel = np.abs(scores[0] - reference) / np.maximum(np.abs(reference), 1e-12)
    record["max_rel_diff"] = float(np.max(rel))
    return record, scores, reference


def machine() -> dict:
    """The CPU model (/proc/cpuinfo), cores, XLA_FLAGS, jax version and backend."""
    return timing.machine()


def _spawn(model_name: str) -> dict:
    """The record of `model_name`, measured in a fresh process (so its first call is cold)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "record.json")
        args = [sys.executable, "-m", "benchmarks.bench_public_call", f"--child={model_name}"]
        args += [f"--child_out={path}", f"--repeats={FLAGS.repeats}"]
        args += ["--quick"] if FLAGS.quick else []
        proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, check=False)
        if proc.returncode or not os.path.exists(path):
            logging.error("%s failed: %s", model_name, proc.stderr[-2000:])
            lines = [line for line in proc.stderr.splitlines() if "Error" in line] or ["failed"]
            return {"error": lines[-1]}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def table(results: dict) -> str:
    """The markdown table of a results dict (`{'machine': ..., 'results': {model: record}}`)."""
    rows = [
        "| model | N | batch | cold s | warm s | vmap_grad s | warm examples/s "
        "| vmap_grad examples/s | warm ratio | fixed-cost share | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(MODELS)}
    for name, r in sorted(results["results"].items(), key=lambda kv: order.get(kv[0], len(order))):
        if "error" in r:
            rows.append(f"| {name} | error: {r['error'][:60]} | | | | | | | | | |")
            continue
        rows.append(
            f"| {name} | {r['num_examples']} | {r['batch_size']} | {r['cold_s']:.2f} "
            f"| {r['warm_s']:.2f} | {r['vmap_grad_s']:.2f} | {r['warm_examples_per_s']:.1f} "
            f"| {r['vmap_grad_examples_per_s']:.1f} | {r['warm_ratio']:.2f}x "
            f"| {100 * r['warm_fixed_share']:.1f}% | {r.get('load_1min', float('nan')):.1f} |"
        )
    m = results["machine"]
    rows += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, jax {m['jax']} on {m['backend']}; "
        f"XLA_FLAGS={m['xla_flags'] or '(unset)'}. K = 1; cold: the first call of a fresh "
        f"process; warm: the fastest of {m.get('repeats', 1)} later calls in it, alternating "
        "with as many vmap_grad passes (the fastest counted); warm ratio: vmap_grad s / warm s; "
        "fixed-cost share: the warm call's setup seconds over its time; load: the 1-minute load "
        "average when the model's process started (above the core count: the CPU was shared).",
    ]
    return "\n".join(rows)


def main(argv):
    del argv
    settings = QUICK if FLAGS.quick else SETTINGS
    if FLAGS.child:
        cfg = settings[FLAGS.child]
        model, variables, images, labels = build(FLAGS.child, cfg["num_examples"])
        record = measure(model, variables, images, labels, cfg["batch"], FLAGS.repeats)[0]
        with open(FLAGS.child_out, "w", encoding="utf-8") as f:
            json.dump(record, f)
        return
    unknown = sorted(set(FLAGS.models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; valid names: {', '.join(MODELS)}")
    os.makedirs(FLAGS.out, exist_ok=True)
    json_path = os.path.join(FLAGS.out, "public_call.json")
    results = {"results": {}}
    if FLAGS.merge and os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as f:
            results = json.load(f)
    results["machine"] = machine() | {"repeats": FLAGS.repeats}
    results["quick"] = FLAGS.quick
    for name in FLAGS.models:
        start, load = time.perf_counter(), os.getloadavg()[0]  # others' work on the CPU too
        results["results"][name] = _spawn(name) | {"settings": settings[name], "load_1min": load}
        logging.info("%s measured in %.1f s", name, time.perf_counter() - start)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    text = table(results)
    with open(os.path.join(FLAGS.out, "public_call.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    logging.info("public call against vmap(grad):\n%s", text)


def define_flags() -> None:
    """The command line's flags, defined only when this module runs as a program: tests import
    it beside other scripts that define flags of the same names."""
    flags.DEFINE_string("out", "bench", "Output folder for public_call.json and public_call.md.")
    flags.DEFINE_list("models", list(MODELS), f"Models, of {', '.join(MODELS)}.")
    flags.DEFINE_bool(
        "quick", False, "Smoke test: every model at small sizes (mostly compilation)."
    )
    flags.DEFINE_integer(
        "repeats", 3, "Warm calls and vmap_grad passes, interleaved; best of each."
    )
    flags.DEFINE_bool("merge", False, "Keep the rows of OUT/public_call.json for models not run.")
    flags.DEFINE_string("child", None, "Internal: measure one model in this process.")
    flags.DEFINE_string("child_out", None, "Internal: where the child writes its JSON record.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
