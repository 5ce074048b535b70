"""Command-line overrides (`pipeline/overrides.py`): an unknown key in one line naming it, the
close matches, and the dict form of model kwargs; a too-large example count names its field."""

import numpy as np
import pytest

from datadiet_jax.pipeline import data, overrides
from tests.conftest import run_main, smoke_config

SMOKE = "--config=configs/fashion_mnist.py:smoke"


def _error_line(proc):
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    return lines[-1]


def test_a_model_kwarg_override_names_the_dict_form(tmp_path):
    proc = run_main(SMOKE, f"--workdir={tmp_path / 'run'}", "--config.model.kwargs.hidden=32")
    line = _error_line(proc)
    assert line == (
        "error: --config.model.kwargs.hidden=32: config.model.kwargs has no key 'hidden'; set "
        "model keyword arguments as --config.model.kwargs='{\"hidden\": 32}' (a dict; it "
        "replaces the config's kwargs, so name them all)."
    )
    assert not (tmp_path / "run").exists()


def test_the_dict_form_reaches_the_model_check(tmp_path):
    # The dict is parsed (ml_collections) and checked against the model's arguments.
    proc = run_main(SMOKE, f"--workdir={tmp_path / 'run'}", '--config.model.kwargs={"hiden": 16}')
    assert "config.model.kwargs.hiden is set, but model 'small_cnn' takes no argument" in (
        _error_line(proc)
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "--config.data.num_train_exmples=3",
            "--config.data.num_train_exmples=3: config.data has no key 'num_train_exmples'; did "
            "you mean config.data.num_train_examples or config.data.num_test_examples?",
        ),
        (
            "--config.trian.batch_size=3",
            "config has no key 'trian'; did you mean config.train or config.retrain or "
            "config.track?",
        ),
        ("--config.model.name=small_cnn", None),
    ],
)
def test_unknown_keys_are_named_with_close_matches(override, expected):
    line = overrides.unknown_key(["main", SMOKE, override])
    assert line == expected or (expected and line.endswith(expected))


def test_too_many_examples_name_the_config_field(tmp_path):
    for split, n in (("train", 30), ("test", 10)):
        np.savez(
            tmp_path / f"{split}.npz", image=np.zeros((n, 4, 4), np.uint8), label=np.arange(n) % 2
        )
    paths = {f"data.arrays.{s}": str(tmp_path / f"{s}.npz") for s in ("train", "test")}
    config = smoke_config(**{"data.name": "arrays", "data.num_test_examples": 0, **paths})
    match = (
        r"config.data.num_train_examples=128 exceeds the 30 examples of config.data.arrays.train; "
        r"set it to at most 30, or 0"
    )
    with pytest.raises(ValueError, match=match):
        data.load_splits(config.data)
