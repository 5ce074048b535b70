"""`benchmarks/bench_xla_flags.py`: its verdict and table on made-up records, its `--quick`
smoke run (EL2N only, two candidates, each in its own process) writing its JSON and table, and
what its 'ynn_off' flag (the one docs/performance.md suggests for ResNet18 scoring) may change:
nothing beyond float rounding. In two fresh processes, with and without it, a tiny CNN gives the
same EL2N and GraNd scores (K = 2) and the same parameters after 3 SGD steps (rtol 1e-5), while
the flagged process compiles no YNNPACK fusion and the default one does (so the comparison is
not vacuous).
"""

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks import bench_xla_flags
from tests.references import ROOT


def _record(train: float, el2n: float, grand: float, ynn: int) -> dict:
    rates = {"train": train, "el2n": el2n, "grand": grand}
    out = {"ynn_fusions": ynn}
    for name, rate in rates.items():
        out[name] = {"batch_size": 32, "examples_per_s": rate, "all_examples_per_s": [rate]}
    return out


def _results() -> dict:
    return {
        "small_cnn": {
            "default": _record(1000, 9000, 1800, 2),
            "ynn_off": _record(990, 9900, 1980, 0),  # train within noise, scores 10% faster
            "vector512": _record(1100, 9000, 1800, 2),  # scores unchanged: no win
        },
        "resnet18": {
            "default": _record(30, 100, 35, 15),
            "ynn_off": _record(30, 130, 40, 0),
            "vector512": _record(20, 130, 40, 15),  # training slower: no win
        },
    }


def test_verdict_needs_every_workload_unchanged_and_the_scores_faster():
    verdicts = bench_xla_flags.verdicts(_results())
    assert set(verdicts) == {"ynn_off", "vector512"}
    assert verdicts["ynn_off"]["consistent_win"]
    assert abs(verdicts["ynn_off"]["ratios"]["resnet18 el2n"] - 1.3) < 1e-9
    assert not verdicts["vector512"]["consistent_win"]
    failed = _results()
    failed["resnet18"]["ynn_off"] = {"error": "boom"}
    assert not bench_xla_flags.verdicts(failed)["ynn_off"]["consistent_win"]


def test_table_shows_rates_ratios_and_the_machine():
    results = _results()
    result = {
        "candidates": ["default", "ynn_off", "vector512"],
        "results": results,
        "verdicts": bench_xla_flags.verdicts(results),
        "settings": {"repeats": 3, "rounds": 1},
        "machine": {
            "cpu": "Intel(R) Xeon(R) Processor",
            "cores": 2,
            "jax": "0.10.2",
            "backend": "cpu",
            "load_before": 0.5,
            "load_after": 1.5,
        },
    }
    text = bench_xla_flags.table(result)
    assert "| resnet18 el2n | 32 | 100.0 | 130.0 (1.30x) | 130.0 (1.30x) |" in text
    assert "| small_cnn YNNPACK fusions (forward) | | 2 | 0 | 2 |" in text
    assert "Intel(R) Xeon(R) Processor" in text and "jax 0.10.2" in text
    assert "Consistent win (" in text and "): ynn_off." in text
    assert "`--xla_cpu_experimental_ynn_fusion_type=`" in text


def test_quick_run_writes_its_json_and_table(tmp_path):
    out = str(tmp_path / "bench")
    args = [sys.executable, "-m", "benchmarks.bench_xla_flags", "--quick", "--workloads=el2n"]
    proc = subprocess.run(
        [*args, "--repeats=1", f"--out={out}"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "xla_flags.json"), encoding="utf-8") as f:
        result = json.load(f)
    assert result["candidates"] == ["default", "ynn_off"]
    by_candidate = result["results"]["small_cnn"]
    assert by_candidate["default"]["machine"]["xla_flags"] == ""
    assert by_candidate["ynn_off"]["machine"]["xla_flags"] == bench_xla_flags.CANDIDATES["ynn_off"]
    assert by_candidate["default"]["el2n"]["examples_per_s"] > 0
    assert by_candidate["ynn_off"]["ynn_fusions"] == 0
    with open(os.path.join(out, "xla_flags.md"), encoding="utf-8") as f:
        text = f.read()
    assert "| small_cnn el2n | 64 |" in text and result["machine"]["cpu"] in text


# EL2N and GraNd (K = 2 seeds) and 3 SGD steps of a tiny CNN on fixed data, in this process's
# XLA configuration; prints one JSON line with the YNNPACK fusions of its compiled forward.
_PROGRAM = """
import json, sys
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from datadiet_jax.scores import api
from datadiet_jax.pipeline.config_base import base_config
from datadiet_jax.training import train

class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1))))

rng = np.random.default_rng(0)
x = rng.normal(size=(48, 12, 12, 3)).astype(np.float32)
y = rng.integers(0, 10, 48).astype(np.int32)
model = Tiny()
variables = api.init_variables(model, jax.random.key(0), 2, x[:1])
el2n = api.el2n_scores(model, variables, x, y, batch_size=16)
grand = api.grand_scores(model, variables, x, y, batch_size=16)
tx = train.make_optimizer(base_config().train, 100)
state = train.create_train_state(jax.random.key(1), model, tx, x[:1])
step = jax.jit(lambda s, b: train.train_step(model, tx, s, b, fast=True))
for i in range(3):
    b = {"image": x[16 * i : 16 * (i + 1)], "label": y[16 * i : 16 * (i + 1)],
         "mask": np.ones(16, np.float32)}
    state, _ = step(state, b)
params = {"/".join(map(str, p)): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(state.params)[0]}
np.savez(sys.argv[1], el2n=el2n, grand=grand, **params)
one = jax.tree.map(lambda v: v[0], variables)
text = jax.jit(lambda v, a: model.apply(v, a)).lower(one, x[:16]).compile().as_text()
print("RESULT " + json.dumps({"ynn": sum("__ynn_fusion" in l and " fusion(" in l
                                          for l in text.splitlines())}))
"""


def _start(xla_flags: str, out: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # each configuration compiles its own programs
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    args = [sys.executable, "-c", _PROGRAM, out]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _ynn_fusions(proc: subprocess.Popen) -> int:
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    line = [row for row in stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])["ynn"]


def test_ynn_off_changes_no_result_beyond_rounding(tmp_path):
    plain, flagged = str(tmp_path / "plain.npz"), str(tmp_path / "flagged.npz")
    procs = _start("", plain), _start(bench_xla_flags.CANDIDATES["ynn_off"], flagged)
    assert _ynn_fusions(procs[0]) > 0  # XLA's default gives YNNPACK some of the work
    assert _ynn_fusions(procs[1]) == 0  # the flags took effect
    a, b = np.load(plain), np.load(flagged)
    assert sorted(a.files) == sorted(b.files) and {"el2n", "grand"} <= set(a.files)
    for name in a.files:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-7, err_msg=name)
