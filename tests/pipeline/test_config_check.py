"""Config values are checked before anything is written: one line naming the field and the fix."""

import dataclasses
import math
import os

import pytest

from datadiet_jax.pipeline import config_check, run
from datadiet_jax.pipeline.config_base import config_to_dict
from tests.conftest import smoke_config

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
    ("train.fast_backward", "yes", "'auto', 'on' or 'off'"),
    ("train.mesh", "2by4", "'auto', 'off' or 'SEEDSxDATA' (e.g. '2x4')"),
    ("train.mesh", "0x8", "'auto', 'off' or 'SEEDSxDATA'"),
    ("data.label_noise.mode", "swap", "one of"),
    ("score.logit_epochs", (3,), "use epochs <= config.train.num_epochs"),
    ("score.feature_epochs", (-1,), "each an integer >= 0"),
    ("score.dynamics_window", 1, "an integer >= 2"),
    ("score.prototypes_per_class", 0, "an integer >= 1"),
]


@pytest.mark.parametrize("field,value,requirement", BAD_VALUES)
def test_bad_numeric_fields_are_refused_before_anything_is_written(
    tmp_path, field, value, requirement
):
    config = smoke_config(**{field: value})
    with pytest.raises(ValueError) as err:
        run.run(config, str(tmp_path / "w"))
    message = str(err.value)
    assert f"config.{field}" in message and requirement in message, message
    assert "\n" not in message
    assert not os.path.exists(tmp_path / "w")


def test_warmup_epochs_is_checked_when_the_config_has_it(tmp_path):
    config = smoke_config()
    config.train.warmup_epochs = -1.0
    with pytest.raises(ValueError, match=r"config.train.warmup_epochs is -1.0.*>= 0"):
        config_check.validate(config)
    config.train.warmup_epochs = 0.5
    config_check.validate(config)


def test_forgetting_without_score_training_is_refused():
    config = smoke_config(
        **{"score.el2n_epochs": (), "score.grand_epochs": (0,), "prune.scores": ("grand@0",)}
    )
    with pytest.raises(ValueError, match="config.score.forgetting.*train_epochs >= 1"):
        config_check.validate(config)


@pytest.mark.parametrize(
    "overrides,words",
    [
        # Two epochs of score training cannot hold a window of 2 and the epoch after it.
        ({"score.dynamics": True, "score.dynamics_window": 2}, "config.score.dynamics needs 3"),
        ({"prune.strategy": "kcenter", "prune.scores": ("features@1",)}, "feature_epochs is ()"),
        (
            {
                "prune.strategy": "d2",
                "prune.scores": ("el2n@1",),
                "score.feature_epochs": (1,),
                "prune.features": "features@2",
            },
            "config.prune.features is 'features@2'",
        ),
        ({"prune.strategy": "dual_sampling", "prune.scores": ("el2n@1",)}, "score.dynamics=True"),
        ({"prune.scores": ("entropy@1",)}, "which this config does not compute"),
    ],
)
def test_the_new_scores_need_what_they_are_made_from(overrides, words):
    config = smoke_config(**overrides)
    with pytest.raises(ValueError) as err:
        config_check.validate(config)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert "--config." in str(err.value) or "config.score" in str(err.value)


def test_the_new_score_names_are_computed_by_the_fields_that_make_them():
    config = smoke_config(
        **{
            "score.logit_epochs": (1,),
            "score.feature_epochs": (2,),
            "score.dynamics": True,
            "score.dynamics_window": 2,
            "train.num_epochs": 3,
            "score.train_epochs": 3,
        }
    )
    names = config_check.available_scores(config)
    for name in (
        "entropy@1",
        "least_confidence@1",
        "margin@1",
        "loss@1",
        "features@2",
        "moderate@2",
        "prototype@2",
        "dyn_unc",
        "tdds",
        "dual",
        "mean_prob",
    ):
        assert name in names, name
    config.prune.strategy, config.prune.scores = "kcenter", ("features@2",)
    config_check.validate(config)


def test_validate_builds_the_stage_specs_once():
    config = smoke_config(**{"prune.fractions": (0.5, 0.25), "score.train_epochs": -1})
    specs = config_check.validate(config)
    score, prune, retrain = specs.score, specs.prune, specs.retrain
    assert score.epochs == tuple(config_check.score_epochs(config)[0])
    assert score.train_epochs == max(score.epochs)  # -1: up to the last score epoch
    assert score.names == tuple(config_check.available_scores(config))
    assert (score.seed, score.num_seeds, score.model) == (
        config.seed,
        config.score.num_seeds,
        config.model.name,
    )
    # Score files record the config without `track` (which changes no score).
    record = config_to_dict(config)
    assert record.pop("track") and score.record == record and score.label_noise is None
    assert [r.prune_fraction for r in prune.runs if r.score == "el2n@1"] == [0.5, 0.25]
    assert prune.features == "" and prune.fractions == (0.5, 0.25)
    assert (retrain.num_seeds, retrain.budget) == (config.retrain.num_seeds, "steps")
    assert "stack" not in retrain.settings["retrain"]  # a neutral field: not in the record
    assert retrain.settings["train"]["learning_rate"] == config.train.learning_rate
    with pytest.raises(dataclasses.FrozenInstanceError):
        score.seed = 1
