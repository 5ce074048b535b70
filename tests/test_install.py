"""The bare install and the project's metadata: `pip install datadiet_jax` (no extras, the versions
of constraints.txt) into a fresh venv gives the scores library without TensorFlow, TFDS or
ml_collections; LICENSE and CITATION.cff say what setup.cfg says."""

import configparser
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml

from tests.references import ROOT

# The package as pip sees it: sources, metadata, README (the long description), LICENSE.
PACKAGE_FILES = ("datadiet_jax", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")

SCRIPT = """
import importlib.util, json
import numpy as np
import datadiet_jax
from datadiet_jax import el2n_scores, grand_scores

def linear(params, x):
    return x @ params["w"] + params["b"]

data = json.loads(input())
params = {k: np.asarray(v, np.float32) for k, v in data["params"].items()}
x, y = np.asarray(data["x"], np.float32), np.asarray(data["y"])
blocked = ("tensorflow", "tensorflow_datasets", "ml_collections")
print(json.dumps({
    "file": datadiet_jax.__file__,
    "importable": [m for m in blocked if importlib.util.find_spec(m) is not None],
    "el2n": np.asarray(el2n_scores(linear, params, x, y)).tolist(),
    "grand": np.asarray(grand_scores(linear, params, x, y)).tolist(),
}))
"""


def _setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    return parser


def _reference(params, x, y):
    """EL2N and GraNd of the linear model `x @ w + b` by hand: with e = softmax - onehot, the
    cross-entropy gradient is outer(x, e) for w and e for b, so GraNd = |e| sqrt(|x|^2 + 1)."""
    logits = np.einsum("nd,kdc->knc", x, params["w"]) + params["b"][:, None]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    e = np.linalg.norm(p - np.eye(logits.shape[-1])[y], axis=-1)
    return e, e * np.sqrt((x**2).sum(-1) + 1.0)


def test_the_bare_install_scores_without_tensorflow(tmp_path):
    source = tmp_path / "src"
    for name in PACKAGE_FILES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            os.makedirs(source, exist_ok=True)
            shutil.copy(path, source / name)
    venv = tmp_path / "venv"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    constraints = os.path.join(ROOT, "constraints.txt")
    # --no-compile: byte-compiling jax and scipy would nearly double the time of the install.
    pip = [python, "-m", "pip", "install", "-q", "--no-compile", "-c", constraints, str(source)]
    proc = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = time.perf_counter() - start

    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(2, 3, 4)), "b": rng.normal(size=(2, 4))}
    x, y = rng.normal(size=(5, 3)), np.array([0, 1, 2, 3, 1])
    data = {"params": {k: v.tolist() for k, v in params.items()}, "x": x.tolist(), "y": y.tolist()}
    proc = subprocess.run(
        [python, "-c", SCRIPT],
        input=json.dumps(data),
        cwd=tmp_path,  # not the repository: the installed copy is imported
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(venv)), out["file"]
    assert out["importable"] == []
    el2n, grand = _reference({k: v.astype(np.float32) for k, v in params.items()}, x, y)
    np.testing.assert_allclose(out["el2n"], el2n, rtol=1e-4)
    np.testing.assert_allclose(out["grand"], grand, rtol=1e-4)
    print(f"bare install: {installed:.0f} s")


def test_the_library_requires_ranges_and_no_pipeline_packages():
    cfg = _setup_cfg()
    requires = [r for r in cfg["options"]["install_requires"].split("\n") if r.strip()]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires}
    assert names == {"jax", "flax", "numpy", "absl-py"}
    assert not [r for r in requires if "==" in r]  # ranges, not pins
    extras = cfg["options.extras_require"]
    assert {"pipeline", "hf", "cuda12", "dev"} <= set(extras)
    assert "tensorflow-cpu" in extras["pipeline"] and "datasets" in extras["hf"]


def test_constraints_pin_what_make_install_installs():
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        pins = dict(
            line.strip().split("==") for line in f if line.strip() and not line.startswith("#")
        )
    norm = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    for name in ("jax", "flax", "numpy", "tensorflow-cpu", "datasets", "pytest"):
        assert name in norm, name
    with open(os.path.join(ROOT, "Makefile")) as f:
        makefile = f.read()
    assert "-c constraints.txt -e '.[pipeline,hf,dev]'" in makefile
    assert "$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt" in makefile


def test_license_and_citation_say_what_setup_cfg_says():
    cfg = _setup_cfg()
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert "Apache License" in f.read(300) and cfg["metadata"]["license"] == "Apache-2.0"
    with open(os.path.join(ROOT, "CITATION.cff")) as f:
        cff = yaml.safe_load(f)
    # The keys CFF 1.2.0 requires, of the software and of the paper it cites.
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert {"message", "title", "authors"} <= set(cff) and cff["authors"]
    assert cff["version"] == cfg["metadata"]["version"] and cff["license"] == "Apache-2.0"
    paper = cff["preferred-citation"]
    assert paper["type"] == "conference-paper" and paper["year"] == 2021
    assert paper["title"].startswith("Deep Learning on a Data Diet")
    assert [a["family-names"] for a in paper["authors"]] == ["Paul", "Ganguli", "Dziugaite"]
