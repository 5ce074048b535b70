"""Rates of the bench workloads under candidate XLA CPU configurations (`XLA_FLAGS`).

    python -m benchmarks.bench_xla_flags --out=bench [--candidates=default,ynn_off] [--quick]

XLA reads `XLA_FLAGS` once, when JAX's backend starts, so each candidate runs in a fresh process
of its own (one per candidate and model) whose environment holds exactly the candidate's flags
(the caller's `XLA_FLAGS` is recorded and not passed on: the benchmark stays explicit). Each
process measures, on synthetic inputs (random normal images, random labels, K = 1):

- 'train': the pipeline's SGD step (`train.train_step`, BatchNorm in train mode, the fast
  max-pool gradient of the CPU step), jitted, over `train_iters` batches;
- 'el2n' and 'grand': the public `el2n_scores` / `grand_scores` calls over all their batches
  (fewer than 8 batches, so GraNd's method race never runs and every candidate runs the same
  method);
- 'ynn_fusions': how many YNNPACK fusions XLA put in the model's compiled eval forward program
  at the EL2N batch size (evidence that a candidate's flags took effect; not timed). A fusion
  may be one dot or a whole subgraph: by default XLA hands YNNPACK convolutions with their
  element-wise and pooling neighbours (the small CNN's whole forward pass at batch 256 is one).

Every workload is called once untimed (compilation, warm-up), then `--repeats` timed calls, and
the fastest counts (all are kept in the JSON). `--rounds=2` measures every candidate again in
reversed order and keeps the faster of the two rounds, so a burst of other work on a shared CPU
slows no candidate alone.

Candidates (`CANDIDATES`): flags that exist in this jaxlib and change no result beyond float
rounding (which kernels run, not what they compute; no fast-math flag):
- 'default': `XLA_FLAGS` unset;
- 'ynn_off': `--xla_cpu_experimental_ynn_fusion_type=` (no YNNPACK fusions: the dots and
  convolutions XLA gives YNNPACK by default run on XLA's other kernels);
- 'ynn_dots': YNNPACK for single dots only (`individual_dot`): the subgraphs of convolutions
  and their neighbours that XLA gives it by default run on XLA's other kernels;
- 'ynn_convs': every convolution YNNPACK supports given to it, besides the dots;
- 'vector512': `--xla_cpu_prefer_vector_width=512` (512-bit vectors in XLA's own loops, for
  AVX-512 processors; the default is 256).

Writes OUT/xla_flags.json (machine, settings, every record, each candidate's ratios to
'default' and its verdict: `consistent_win`) and OUT/xla_flags.md (rate per workload per
candidate, with its ratio to 'default'; the CPU model and jax version in the caption) and logs
the table. `--quick`: the small CNN at small sizes, 'default' and 'ynn_off' (seconds).
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
# fmt: off
CANDIDATES = {
    "default": "",
    "ynn_off": "--xla_cpu_experimental_ynn_fusion_type=",
    "ynn_dots": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
    "ynn_convs": "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution",
    "vector512": "--xla_cpu_prefer_vector_width=512",
}
WORKLOADS = ("train", "el2n", "grand")
# Per model and workload: (batch size, batches per timed call).
SETTINGS = {
    "small_cnn": {"train": (128, 8), "el2n": (256, 16), "grand": (128, 6)},
    "resnet18": {"train": (32, 2), "el2n": (32, 4), "grand": (32, 2)},
}
QUICK = {"small_cnn": {"train": (32, 2), "el2n": (64, 2), "grand": (32, 2)}}
QUICK_CANDIDATES = ("default", "ynn_off")
# fmt: on
# Ratios to 'default' within this of 1 count as unchanged (run-to-run spread on a shared CPU).
NOISE = 0.05
# The workloads a candidate must speed up (by more than NOISE) to be a consistent win.
SCORED = ("el2n", "grand")


def _train_call(model, images, labels, batch_size: int):
    """A function running the pipeline's jitted SGD step over every batch of `images`."""
    import functools

    import jax
    import jax.numpy as jnp

    from configs import fashion_mnist
    from datadiet_jax.training import train

    tx = train.make_optimizer(fashion_mnist.get_config().train, 1000)
    box = [train.create_train_state(jax.random.key(0), model, tx, images[:1])]
    step = jax.jit(functools.partial(train.train_step, model, tx, fast=True))
    mask = jnp.ones((batch_size,), jnp.float32)
    batches = [
        (jnp.asarray(images[i : i + batch_size]), jnp.asarray(labels[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]

    def run():
        for x, y in batches:
            box[0], metrics = step(box[0], {"image": x, "label": y, "mask": mask})
        return metrics["loss"]

    return run


def _call(name: str, model, variables, images, labels, batch_size: int):
    """A function running workload `name` ('train', 'el2n', 'grand') over all of `images`."""
    import functools

    from datadiet_jax.scores import api

    if name == "train":
        return _train_call(model, images, labels, batch_size)
    fn = api.el2n_scores if name == "el2n" else api.grand_scores
    return functools.partial(fn, model, variables, images, labels, batch_size=batch_size)


def _ynn_fusions(model, variables, images) -> int:
    """YNNPACK fusions in the compiled eval forward program of `model` on `images` (one batch)."""
    import jax

    one = jax.tree.map(lambda v: v[0], variables)
    text = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(one, images)
    lines = text.compile().as_text().splitlines()
    return sum(1 for line in lines if "__ynn_fusion" in line and " fusion(" in line)


def measure(model_name: str, settings: dict, workloads, repeats: int) -> dict:
    """Every workload of `model_name` in this process: best of `repeats` timed calls each.

    Args:
      model_name: a model of `SETTINGS`; settings: {workload: (batch size, batches)};
      workloads: names of `WORKLOADS`; repeats: timed calls of each after the untimed first.
    Returns:
      {'machine': timing.machine(), 'ynn_fusions': int, workload: {'batch_size',
       'num_examples', 'examples_per_s' (the best), 'all_examples_per_s'}}.
    """
    import jax
    import numpy as np

    from benchmarks import score_cases
    from datadiet_jax.scores import api

    record = {"machine": timing.machine()}
    probe = "el2n" if "el2n" in workloads else workloads[0]  # its batch: the fusions counted
    for name in workloads:
        batch_size, batches = settings[name]
        n = batch_size * batches
        rng = np.random.default_rng(0)
        model, images = score_cases.model_and_inputs(model_name, n, rng)
        labels = rng.integers(0, 10, n).astype(np.int32)
        variables = api.init_variables(model, jax.random.key(0), 1, images[:1])
        if name == probe:
            record["ynn_fusions"] = _ynn_fusions(model, variables, images[:batch_size])
        call = _call(name, model, variables, images, labels, batch_size)
        jax.block_until_ready(call())  # compilation, warm-up
        rates = [timing.timed_once(call, n) for _ in range(repeats)]
        record[name] = {
            "batch_size": batch_size,
            "num_examples": n,
            "examples_per_s": max(rates),
            "all_examples_per_s": rates,
        }
        logging.info("%s %s: %.1f examples/s (best of %d)", model_name, name, max(rates), repeats)
    return record


def _spawn(model_name: str, candidate: str) -> dict:
    """The record of `model_name` under `candidate`, measured in a fresh process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if CANDIDATES[candidate]:
        env["XLA_FLAGS"] = CANDIDATES[candidate]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "record.json")
        args = [sys.executable, "-m", "benchmarks.bench_xla_flags", f"--child={model_name}"]
        args += [f"--child_out={path}", f"--repeats={FLAGS.repeats}"]
        args += [f"--workloads={','.join(FLAGS.workloads)}"] + (["--quick"] if FLAGS.quick else [])
        proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, check=False)
        if proc.returncode or not os.path.exists(path):
            logging.error("%s under %s failed: %s", model_name, candidate, proc.stderr[-2000:])
            lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["failed"]
            return {"error": lines[-1][-200:]}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def _best(a: dict | None, b: dict) -> dict:
    """The record `b`, each workload's rate the better of `a`'s and `b`'s (all rates kept)."""
    if a is None or "error" in a:
        return b
    if "error" in b:
        return a
    out = dict(b)
    for name in WORKLOADS:
        if name in a and name in b:
            rates = a[name]["all_examples_per_s"] + b[name]["all_examples_per_s"]
            out[name] = b[name] | {"examples_per_s": max(rates), "all_examples_per_s": rates}
    return out


def verdicts(results: dict) -> dict:
    """Each candidate's ratios to 'default' and whether it is a consistent win: every workload
    at least unchanged (ratio >= 1 - NOISE) and every forward and GraNd workload (`SCORED`)
    faster (ratio > 1 + NOISE).

    Args:
      results: {model: {candidate: record}} as `main` gathers them.
    Returns:
      {candidate: {'ratios': {'model workload': ratio}, 'consistent_win': bool}} ('default' left
      out; a candidate with a failed or missing record is never a win).
    """
    out = {}
    for candidate in {c for by_candidate in results.values() for c in by_candidate}:
        if candidate == "default":
            continue
        ratios, complete = {}, True
        for model_name, by_candidate in results.items():
            base, rec = by_candidate.get("default", {}), by_candidate.get(candidate, {})
            for name in WORKLOADS:
                if name in base and "examples_per_s" in rec.get(name, {}):
                    ratios[f"{model_name} {name}"] = (
                        rec[name]["examples_per_s"] / base[name]["examples_per_s"]
                    )
                elif name in base:
                    complete = False
        win = complete and bool(ratios) and all(r >= 1 - NOISE for r in ratios.values())
        win = win and all(r > 1 + NOISE for k, r in ratios.items() if k.split()[1] in SCORED)
        out[candidate] = {"ratios": ratios, "consistent_win": win}
    return out


def table(result: dict) -> str:
    """The markdown of OUT/xla_flags.md: rates per workload (rows) and candidate (columns)."""
    candidates, results = result["candidates"], result["results"]
    lines = [
        "| workload | batch | " + " | ".join(candidates) + " |",
        "|---|---|" + "---|" * len(candidates),
    ]
    for model_name, by_candidate in results.items():
        base = by_candidate.get("default", {})
        for name in WORKLOADS:
            known = [r[name] for r in by_candidate.values() if name in r]
            if not known:
                continue
            cells = []
            for candidate in candidates:
                rec = by_candidate.get(candidate, {})
                if "error" in rec or name not in rec:
                    cells.append("error" if "error" in rec else "-")
                    continue
                cell = f"{rec[name]['examples_per_s']:.1f}"
                if candidate != "default" and name in base:
                    cell += f" ({rec[name]['examples_per_s'] / base[name]['examples_per_s']:.2f}x)"
                cells.append(cell)
            lines.append(
                f"| {model_name} {name} | {known[0]['batch_size']} | {' | '.join(cells)} |"
            )
        fusions = [str(by_candidate.get(c, {}).get("ynn_fusions", "-")) for c in candidates]
        lines.append(f"| {model_name} YNNPACK fusions (forward) | | {' | '.join(fusions)} |")
    wins = [c for c, v in result["verdicts"].items() if v["consistent_win"]]
    flag_text = "; ".join(f"{c}: `{CANDIDATES[c] or '(unset)'}`" for c in candidates)
    m = result["machine"]
    lines += [
        "",
        f"Examples/s (ratio to default), the fastest of {result['settings']['repeats']} timed "
        f"calls after an untimed first one, best of {result['settings']['rounds']} round(s); "
        f"each candidate and model in a fresh process with XLA_FLAGS: {flag_text}. YNNPACK "
        "fusions: those of the compiled eval forward program at the EL2N batch size. "
        f"Consistent win (every workload within {NOISE:.0%} or faster, EL2N and GraNd faster by "
        f"more): {', '.join(wins) or 'none'}. Machine: {m['cpu']}, {m['cores']} cores, jax "
        f"{m['jax']} on {m['backend']}; 1-minute load average {m['load_before']:.1f} before, "
        f"{m['load_after']:.1f} after.",
    ]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    settings = QUICK if FLAGS.quick else SETTINGS
    unknown = sorted(set(FLAGS.workloads) - set(WORKLOADS))
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; valid names: {', '.join(WORKLOADS)}")
    if FLAGS.child:
        record = measure(FLAGS.child, settings[FLAGS.child], FLAGS.workloads, FLAGS.repeats)
        with open(FLAGS.child_out, "w", encoding="utf-8") as f:
            json.dump(record, f)
        return
    candidates = FLAGS.candidates or list(QUICK_CANDIDATES if FLAGS.quick else CANDIDATES)
    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; valid names: {', '.join(CANDIDATES)}")
    models = [m for m in FLAGS.models if m in settings]
    if os.environ.get("XLA_FLAGS"):
        logging.warning("XLA_FLAGS=%s is not passed to the candidates", os.environ["XLA_FLAGS"])
    result = {
        "machine": timing.machine() | {"load_before": os.getloadavg()[0]},
        "candidates": candidates,
        "candidate_flags": {c: CANDIDATES[c] for c in candidates},
        "settings": {"repeats": FLAGS.repeats, "rounds": FLAGS.rounds, "noise": NOISE}
        | {m: settings[m] for m in models},
        "results": {m: {} for m in models},
    }
    for round_index in range(FLAGS.rounds):
        order = candidates if round_index % 2 == 0 else candidates[::-1]
        for model_name in models:
            for candidate in order:
                start, load = time.perf_counter(), os.getloadavg()[0]
                record = _spawn(model_name, candidate) | {"load_1min": load}
                by_candidate = result["results"][model_name]
                by_candidate[candidate] = _best(by_candidate.get(candidate), record)
                logging.info(
                    "%s under %s: %.0f s", model_name, candidate, time.perf_counter() - start
                )
    result["machine"]["load_after"] = os.getloadavg()[0]
    result["verdicts"] = verdicts(result["results"])
    timing.write_outputs(FLAGS.out, "xla_flags", result, table(result))


def define_flags() -> None:
    """The command line's flags, defined only when this module runs as a program: tests import
    it beside other scripts that define flags of the same names."""
    flags.DEFINE_string("out", "bench", "Output folder for xla_flags.json and xla_flags.md.")
    flags.DEFINE_list("candidates", None, f"Candidates, of {', '.join(CANDIDATES)} (all).")
    flags.DEFINE_list("models", list(SETTINGS), f"Models, of {', '.join(SETTINGS)}.")
    flags.DEFINE_list("workloads", list(WORKLOADS), f"Workloads, of {', '.join(WORKLOADS)}.")
    flags.DEFINE_bool("quick", False, "Smoke test: small CNN, small sizes, two candidates.")
    flags.DEFINE_integer("repeats", 3, "Timed calls per workload after the untimed first.")
    flags.DEFINE_integer("rounds", 1, "Rounds over the candidates (alternating order); best.")
    flags.DEFINE_string("child", None, "Internal: measure one model in this process.")
    flags.DEFINE_string("child_out", None, "Internal: where the child writes its JSON record.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
