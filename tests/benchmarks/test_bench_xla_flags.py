"""`benchmarks/bench_xla_flags.py`: its verdict and table on made-up records, and its `--quick`
smoke run (EL2N only, two candidates, each in its own process) writing its JSON and table."""

import json
import os
import subprocess
import sys

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
