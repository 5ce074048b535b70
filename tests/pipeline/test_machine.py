"""`pipeline/machine.py`: the processor and XLA_FLAGS of a process, and score files recording
them in their provenance."""

import numpy as np

from datadiet_jax.pipeline import artifacts, config_check, machine, score_stage
from tests.conftest import smoke_config
from tests.references import make_split


def test_cpu_model_reads_the_first_model_name(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n")
    assert machine.cpu_model(str(path)) == "Intel(R) Xeon(R) Processor"
    assert machine.cpu_model(str(tmp_path / "absent")) == "unknown"


def test_environment_holds_the_flags_of_the_environment(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    env = machine.environment()
    assert set(env) == {"cpu", "backend", "jax", "xla_flags"} and env["xla_flags"] == ""
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    assert machine.environment()["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type="


def test_score_files_record_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    split = make_split(n=16)
    spec = config_check.validate(smoke_config()).score
    (tmp_path / "scores").mkdir()
    files = score_stage._ScoreFiles(spec, str(tmp_path), split, set())
    files.write("el2n", 1, np.zeros((2, 16), np.float32))
    loaded = artifacts.load_scores(score_stage.score_path(str(tmp_path), "el2n", 1))
    assert loaded["provenance"]["environment"] == machine.environment()
    assert loaded["provenance"]["environment"]["xla_flags"].endswith("ynn_fusion_type=")
