"""Memory per device of the paper's K-seed training step on a mesh, by XLA's compiled memory
analysis (compiled, never run), for the README's multi-device section.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      python -m benchmarks.bench_mesh_memory [--model=resnet18] [--out=bench]

ResNet18 on 32x32x3 inputs, batch 128 per seed, SGD with momentum, the statistics of N = 50,000
examples. Each case (K seeds on a mesh shape) is compiled for every `--seed_axis` mode: 'vmap'
(what 'auto' gives on an accelerator on one device or a mesh without a 'data' axis) and 'map'
(what 'auto' gives there on a mesh with one: `train_mesh.step_seed_axis`). It records the
per-device argument, output, temporary and aliased bytes of the step of `k_step.programs`;
`per_device_mb` is argument + output + temporary - aliased (the state and statistics are
donated), and `activation_all_gathers` counts the 4-d float all-gathers of the compiled step
(whole activations gathered across 'data'). Writes OUT/mesh_memory.json and a table,
OUT/mesh_memory.md.
"""

from __future__ import annotations

import json
import os
import re

from absl import app, flags, logging

from benchmarks import timing

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "resnet18", "Model of the step.")
flags.DEFINE_integer("batch", 128, "Batch size per seed.")
flags.DEFINE_integer("num_examples", 50_000, "N of the training statistics.")
flags.DEFINE_string("out", "bench", "Folder of mesh_memory.json.")
flags.DEFINE_list("seed_axis", ["vmap", "map"], "config.train.seed_axis modes of the step.")
flags.DEFINE_string("cases", "", "K:MESH,... instead of the default cases, e.g. 10:2x4,2:2x4.")
# (K, train.mesh) on the devices JAX sees: the paper's 10 score seeds and 4 retraining seeds.
CASES = ((10, "off"), (10, "2x4"), (4, "off"), (4, "4x2"), (1, "1x8"))


_GATHER = re.compile(r"= f32\[\d+,\d+,\d+,\d+[\],][^ ]* all-gather")


def _case(num_seeds: int, mode: str, axis: str) -> dict:
    import jax
    import numpy as np

    from datadiet_jax.models import get_model
    from datadiet_jax.pipeline.config_base import base_config
    from datadiet_jax.training import k_step, keys, train_mesh

    cfg = base_config().train
    cfg.batch_size, cfg.seed_axis, cfg.mesh = FLAGS.batch, axis, mode
    model = get_model(FLAGS.model, 10)
    mesh = train_mesh.make_mesh(mode, num_seeds, FLAGS.batch, "mesh_memory")
    init_fn, step_fn = k_step.programs(model, cfg, 1000, mesh)
    shape = (32, 32, 3)
    state = jax.eval_shape(
        init_fn, keys.init_keys(0, 1, num_seeds), np.zeros((1, *shape), np.float32)
    )
    stats = jax.eval_shape(lambda: k_step.init_stats(num_seeds, FLAGS.num_examples))
    b = FLAGS.batch
    batch = {
        "image": jax.ShapeDtypeStruct((num_seeds, b, *shape), np.float32),
        "label": jax.ShapeDtypeStruct((num_seeds, b), np.int32),
        "index": jax.ShapeDtypeStruct((num_seeds, b), np.int64),
        "mask": jax.ShapeDtypeStruct((num_seeds, b), np.float32),
        "rng": jax.ShapeDtypeStruct((num_seeds, 2), np.uint32),
    }
    compiled = step_fn.lower(state, stats, batch).compile()
    mem = compiled.memory_analysis()
    parts = {k: getattr(mem, f"{k}_size_in_bytes") for k in ("argument", "output", "temp", "alias")}
    total = parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]
    seeds, data = (mesh.shape["seed"], mesh.shape["data"]) if mesh is not None else (1, 1)
    return {
        "num_seeds": num_seeds,
        "mesh": mode,
        "seed_axis": axis,
        "seeds_per_device": num_seeds // seeds,
        "examples_per_device": num_seeds // seeds * FLAGS.batch // data,
        "activation_all_gathers": len(_GATHER.findall(compiled.as_text())),
        **{f"{k}_mb": v / 2**20 for k, v in parts.items()},
        "per_device_mb": total / 2**20,
    }


def main(argv):
    del argv
    import jax

    rows = []
    cases = CASES
    if FLAGS.cases:
        cases = [(int(k), m) for k, m in (c.split(":") for c in FLAGS.cases.split(","))]
    for num_seeds, mode in cases:
        for axis in FLAGS.seed_axis:
            rows.append(_case(num_seeds, mode, axis))
            logging.info("%s", rows[-1])
    os.makedirs(FLAGS.out, exist_ok=True)
    out = {
        "model": FLAGS.model,
        "batch_per_seed": FLAGS.batch,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "cases": rows,
        "machine": timing.machine(),
    }
    path = os.path.join(FLAGS.out, "mesh_memory.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(FLAGS.out, "mesh_memory.md"), "w") as f:
        f.write(_table(rows) + "\n" + timing.machine_line(out["machine"]) + "\n")
    logging.info("wrote %s and mesh_memory.md", path)


def _table(rows: list[dict]) -> str:
    """The Markdown table of the cases: one line per K, mesh and seed_axis."""
    lines = [
        "| K | train.mesh | seed_axis | seeds / device | examples / device | "
        "activation all-gathers | temporaries | per device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_seeds']} | {r['mesh']} | {r['seed_axis']} | "
            f"{r['seeds_per_device']} | {r['examples_per_device']} | "
            f"{r['activation_all_gathers']} | {r['temp_mb']:,.0f} MB | "
            f"{r['per_device_mb']:,.0f} MB |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app.run(main)
