"""The orchestrator's checks that need no training: score lookup, run names, config values."""

import math
import os
import types

import numpy as np
import pytest

from datadiet_jax import artifacts, run_names
from datadiet_jax import run as run_lib
from datadiet_jax.config_base import base_config, smoke


def _config(**overrides):
    config = smoke(base_config())
    config.data.name = "fashion_mnist"
    config.model.name = "small_cnn"
    config.update_from_flattened_dict(overrides)
    return config


def _split(n=128):
    return types.SimpleNamespace(name="fashion_mnist", split="train", num_examples=n)


def _save(config, workdir, kind, epoch, split):
    path = run_lib.score_path(str(workdir), kind, epoch)
    prov = run_lib.provenance(config, split, kind, epoch)
    artifacts.save_scores(
        path, np.ones((2, split.num_examples)), np.arange(split.num_examples), prov
    )
    return path


def test_forgetting_lookup_stays_inside_the_score_workdir(tmp_path):
    # `runs/n10000` once matched `runs/n1_seed7_0/...` ('000' -> '*' rewrote the folder name).
    config = _config(**{"prune.scores": ("forgetting",), "score.workdir": str(tmp_path / "n10000")})
    split = _split()
    own = _save(config, tmp_path / "n10000", "forgetting", 2, split)
    _save(config, tmp_path / "n1_seed7_0", "forgetting", 200, split)
    _save(config, tmp_path / "n10000x", "forgetting", 300, split)
    assert run_lib.external_scores(config, split) == {"forgetting": own}
    # The highest epoch of the folder's own files wins.
    later = _save(config, tmp_path / "n10000", "forgetting", 1000, split)
    assert run_lib.external_scores(config, split) == {"forgetting": later}


@pytest.mark.parametrize("field,value", [("seed", 7), ("model.name", "resnet18")])
def test_scores_of_another_seed_or_model_need_allow_transfer(tmp_path, field, value):
    split = _split()
    _save(_config(**{field: value}), tmp_path / "scores_run", "el2n", 1, split)
    config = _config(**{"score.workdir": str(tmp_path / "scores_run")})
    with pytest.raises(ValueError, match=r"allow_transfer=True") as err:
        run_lib.external_scores(config, split)
    assert field.split(".")[0] in str(err.value)
    config.score.allow_transfer = True
    assert set(run_lib.external_scores(config, split)) == {"el2n@1"}


def test_fraction_tags_are_unique_and_keep_two_decimals_when_exact():
    assert run_names.fraction_tag(0.5) == "0.50"
    assert run_names.fraction_tag(0.3) == "0.30"
    assert run_names.fraction_tag(0.304) == "0.304"
    assert run_names.fraction_tag(0.3 + 1e-12) != run_names.fraction_tag(0.3)
    fractions = [0.3, 0.304, 0.305, 0.3049, 1 / 3, 0.33, 0.125, 0.12]
    assert len({run_names.fraction_tag(f) for f in fractions}) == len(fractions)
    for f in fractions:
        assert float(run_names.fraction_tag(f)) == f


def test_plan_names_of_close_fractions_differ_and_repeats_are_refused(tmp_path):
    config = _config(**{"prune.fractions": (0.3, 0.304)})
    names = run_names.plan_names(config)
    assert names == [
        "full",
        "el2n-1_hardest_f0.30",
        "random_subset_f0.30",
        "el2n-1_hardest_f0.304",
        "random_subset_f0.304",
    ]
    run_lib.validate(config)
    config.prune.fractions = (0.5, 0.5)
    with pytest.raises(ValueError, match="share the names.*el2n-1_hardest_f0.50"):
        run_lib.validate(config)
    config = _config(**{"prune.strategy": "offset", "prune.offsets": (0, 3, 3)})
    with pytest.raises(ValueError, match="share the names.*_o3"):
        run_lib.run(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


# One case per class of field: (override, value, words the error must hold).
BAD_VALUES = [
    ("train.batch_size", 0, "an integer >= 1"),
    ("score.batch_size", -1, "an integer >= 1"),
    ("train.eval_batch_size", 0, "an integer >= 1"),
    ("train.num_epochs", 0, "an integer >= 1"),
    ("score.num_seeds", 0, "an integer >= 1"),
    ("retrain.num_seeds", 0, "an integer >= 1"),
    ("train.learning_rate", 0.0, "a finite number > 0"),
    ("train.learning_rate", math.inf, "a finite number > 0"),
    ("train.learning_rate", math.nan, "a finite number > 0"),
    ("train.lr_drop_factor", -0.2, "a finite number > 0"),
    ("train.momentum", 1.0, "a number in [0, 1)"),
    ("train.momentum", -0.1, "a number in [0, 1)"),
    ("train.weight_decay", -1e-4, "a finite number >= 0"),
    ("train.checkpoint_every_epochs", -1, "an integer >= 0"),
    ("train.lr_drop_fractions", (0.3, 1.0), "each a number in (0, 1)"),
    ("train.lr_drop_fractions", (0.0,), "each a number in (0, 1)"),
    ("data.label_noise.fraction", 1.5, "a number in [0, 1]"),
    ("data.label_noise.seed", -1, "an integer >= 0"),
    ("data.num_train_examples", -5, "an integer >= 0"),
    ("data.num_test_examples", -5, "an integer >= 0"),
    ("model.width", -8, "an integer >= 0"),
    ("seed", -1, "an integer >= 0"),
    ("prune.fractions", (-0.1,), "outside [0, 1)"),
    ("prune.offsets", (-3,), "each an integer >= 0"),
    ("prune.ccs_beta", 1.0, "a number in [0, 1)"),
    ("score.el2n_epochs", (-1,), "each an integer >= 0"),
    ("score.grand_epochs", (0, 3), "use epochs <= config.train.num_epochs"),
    ("score.train_epochs", 3, "-1 (up to the last score epoch) or an integer in [0, 2]"),
    ("score.train_epochs", -2, "-1 (up to the last score epoch)"),
    ("train.seed_axis", "pmap", "'auto', 'vmap', 'unroll' or 'map'"),
    ("data.label_noise.mode", "swap", "one of"),
]


@pytest.mark.parametrize("field,value,requirement", BAD_VALUES)
def test_bad_numeric_fields_are_refused_before_anything_is_written(
    tmp_path, field, value, requirement
):
    config = _config(**{field: value})
    with pytest.raises(ValueError) as err:
        run_lib.run(config, str(tmp_path / "w"))
    message = str(err.value)
    assert f"config.{field}" in message and requirement in message, message
    assert "\n" not in message
    assert not os.path.exists(tmp_path / "w")


def test_warmup_epochs_is_checked_when_the_config_has_it(tmp_path):
    config = _config()
    config.train.warmup_epochs = -1.0
    with pytest.raises(ValueError, match=r"config.train.warmup_epochs is -1.0.*>= 0"):
        run_lib.validate(config)
    config.train.warmup_epochs = 0.5
    run_lib.validate(config)


def test_forgetting_without_score_training_is_refused():
    config = _config(
        **{"score.el2n_epochs": (), "score.grand_epochs": (0,), "prune.scores": ("grand@0",)}
    )
    with pytest.raises(ValueError, match="config.score.forgetting.*train_epochs >= 1"):
        run_lib.validate(config)
