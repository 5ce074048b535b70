"""Score files of another run: the lookup of forgetting files, transfer needs permission; the
score epochs' fixed costs and their record."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax.pipeline import artifacts, config_check, plan, score_stage
from datadiet_jax.pipeline.config_base import base_config
from tests.conftest import smoke_config, split_shape
from tests.references import make_split


def _external(config, split):
    """`score_stage.external_scores` of `config`'s specs."""
    spec, prune = config_check.score_spec(config), config_check.prune_spec(config)
    return score_stage.external_scores(spec, prune, split)


def _pruning_scores(config, split, files):
    """`score_stage.pruning_scores` of `config`'s specs."""
    spec, prune = config_check.score_spec(config), config_check.prune_spec(config)
    return score_stage.pruning_scores(spec, prune, split, files)


def _save(config, workdir, kind, epoch, split):
    path = score_stage.score_path(str(workdir), kind, epoch)
    prov = score_stage.provenance(config_check.score_spec(config), split, kind, epoch)
    artifacts.save_scores(
        path, np.ones((2, split.num_examples)), np.arange(split.num_examples), prov
    )
    return path


def test_forgetting_lookup_stays_inside_the_score_workdir(tmp_path):
    # `runs/n10000` once matched `runs/n1_seed7_0/...` ('000' -> '*' rewrote the folder name).
    config = smoke_config(
        **{"prune.scores": ("forgetting",), "score.workdir": str(tmp_path / "n10000")}
    )
    split = split_shape()
    own = _save(config, tmp_path / "n10000", "forgetting", 2, split)
    _save(config, tmp_path / "n1_seed7_0", "forgetting", 200, split)
    _save(config, tmp_path / "n10000x", "forgetting", 300, split)
    assert _external(config, split) == {"forgetting": own}
    # The highest epoch of the folder's own files wins.
    later = _save(config, tmp_path / "n10000", "forgetting", 1000, split)
    assert _external(config, split) == {"forgetting": later}


@pytest.mark.parametrize("field,value", [("seed", 7), ("model.name", "resnet18")])
def test_scores_of_another_seed_or_model_need_allow_transfer(tmp_path, field, value):
    split = split_shape()
    _save(smoke_config(**{field: value}), tmp_path / "scores_run", "el2n", 1, split)
    config = smoke_config(**{"score.workdir": str(tmp_path / "scores_run")})
    with pytest.raises(ValueError, match=r"allow_transfer=True") as err:
        _external(config, split)
    assert field.split(".")[0] in str(err.value)
    config.score.allow_transfer = True
    assert set(_external(config, split)) == {"el2n@1"}


def test_prune_num_score_seeds_averages_the_first_k_seeds(tmp_path):
    split = make_split(n=8)
    config = base_config()
    config.prune.scores, config.prune.fractions = ("el2n@1",), (0.5,)
    config.score.el2n_epochs = (1,)
    config.prune.full_baseline = config.prune.random_baseline = False
    # Seed 0 ranks 0..3 hardest; seeds 1 and 2 rank 4..7 hardest. The mean of all three is
    # (10 + i) / 3, so it keeps 4..7; the first seed alone keeps 0..3; the first two average to a
    # constant 4.5, and ties go to the lower index: 0..3.
    per_seed = np.stack([np.arange(8, 0, -1), np.arange(1, 9), np.arange(1, 9)]).astype(np.float32)
    path = str(tmp_path / "el2n_epoch001.npz")
    expect = score_stage.score_expectation(config_check.score_spec(config), split)
    artifacts.save_scores(path, per_seed, split.index, dict(expect))
    for k, kept in ((0, [4, 5, 6, 7]), (3, [4, 5, 6, 7]), (1, [0, 1, 2, 3]), (2, [0, 1, 2, 3])):
        config.prune.num_score_seeds = k
        scores = _pruning_scores(config, split, {"el2n@1": path})
        ((_, got),) = plan.kept_sets(config_check.prune_spec(config), split, scores)
        assert got.tolist() == kept, k
    config.prune.num_score_seeds = 4
    with pytest.raises(ValueError, match="holds 3 seeds"):
        _pruning_scores(config, split, {"el2n@1": path})
    config.prune.num_score_seeds = -1
    with pytest.raises(ValueError, match="must be >= 0"):
        config_check.validate(config)


def test_refused_score_file_of_this_run_says_which_file_to_delete(tmp_path):
    config = smoke_config()
    path = _save(
        smoke_config(**{"data.name": "mnist"}),
        tmp_path,
        "el2n",
        1,
        type(split_shape())(**{**vars(split_shape()), "name": "mnist"}),
    )
    with pytest.raises(ValueError) as err:
        score_stage.load_checked_scores(config_check.score_spec(config), split_shape(), path)
    message = str(err.value)
    assert path in message and "dataset='mnist'" in message
    assert "belongs to a run of mnist:train (N=128), model small_cnn, seed 0" in message
    assert "delete it and rerun the same command: the score stage recomputes it" in message


def test_refused_score_file_of_another_run_names_that_run(tmp_path):
    source = tmp_path / "source"
    split = split_shape()
    path = score_stage.score_path(str(source), "el2n", 1)
    prov = score_stage.provenance(config_check.score_spec(smoke_config()), split, "el2n", 1)
    per_seed = np.ones((2, split.num_examples))
    per_seed[1, 3] = np.nan
    artifacts.save_scores(path, per_seed, np.arange(split.num_examples), prov)
    config = smoke_config(**{"score.workdir": str(source)})
    with pytest.raises(ValueError) as err:
        _external(config, split)
    message = str(err.value)
    assert "NaN" in message and "examples [3]" in message
    assert f"it comes from config.score.workdir={source}: delete it and rerun that run" in message


def test_features_prune_with_the_first_k_seeds_as_the_peers_single_run(tmp_path):
    from datadiet_jax.scores import pruning

    split = make_split(n=12)
    config = base_config()
    config.score.el2n_epochs, config.score.feature_epochs = (1,), (1,)
    config.prune.strategy, config.prune.scores = "kcenter", ("features@1",)
    config.prune.fractions = (0.5,)
    config.prune.full_baseline = config.prune.random_baseline = False
    feats = np.random.default_rng(0).normal(size=(2, 12, 3)).astype(np.float32)
    path = str(tmp_path / "features_epoch001.npz")
    expect = score_stage.score_expectation(config_check.score_spec(config), split)
    artifacts.save_scores(path, feats, split.index, dict(expect))
    for k, want in ((0, feats), (1, feats[:1]), (2, feats)):
        config.prune.num_score_seeds = k
        scores = _pruning_scores(config, split, {"features@1": path})
        np.testing.assert_array_equal(scores["features@1"], want)
        ((_, kept),) = plan.kept_sets(config_check.prune_spec(config), split, scores)
        ref = pruning.kept_indices(
            None,
            "kcenter",
            prune_fraction=0.5,
            labels=split.labels,
            seed=config.seed,
            features=want,
        )
        np.testing.assert_array_equal(kept, ref)
    # One seed's features [N, D] select as that seed's slice [1, N, D] does.
    one = pruning.kept_indices(
        None, "kcenter", prune_fraction=0.5, labels=split.labels, features=feats[0]
    )
    sliced = pruning.kept_indices(
        None, "kcenter", prune_fraction=0.5, labels=split.labels, features=feats[:1]
    )
    np.testing.assert_array_equal(one, sliced)
    config.prune.num_score_seeds = 3
    with pytest.raises(ValueError, match="holds 2 seeds"):
        _pruning_scores(config, split, {"features@1": path})


@pytest.mark.parametrize("overrides", [{}, {"data.label_noise.fraction": 0.1, "seed": 4}])
def test_provenance_from_the_score_spec_is_what_the_whole_config_gave(overrides):
    """Score files record the same provenance as before specs (so old files stay accepted)."""
    from datadiet_jax.pipeline.config_base import config_to_dict

    config, split = smoke_config(**overrides), split_shape()
    noise = config.data.label_noise
    old = {
        "dataset": split.name,
        "split": split.split,
        "num_examples": split.num_examples,
        "label_noise": config_to_dict(noise) if noise.fraction else None,
        "data_source": getattr(split, "source", None),
        "inputs": getattr(split, "kind", "images"),
        "seed": config.seed,
        "num_seeds": config.score.num_seeds,
        "model": config.model.name,
        "epoch": 1,
        "normalization": {
            "mean": np.asarray(split.mean).tolist(),
            "std": np.asarray(split.std).tolist(),
        },
        "score": "el2n",
        # Without config.track (added since; it changes no score), so files agree either way.
        "config": {k: v for k, v in config_to_dict(config).items() if k != "track"},
    }
    spec = config_check.validate(config).score
    assert list(score_stage.provenance(spec, split, "el2n", 1).items()) == list(old.items())


def _mlp(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def test_score_epochs_pay_the_fixed_costs_once_and_record_them(tmp_path):
    """Two score epochs of one run: the second runs no site finder, guard or race (only the
    batch check, its values being new), and `timings.jsonl` gives each computation's fixed
    costs beside its seconds; a line of an older run, without them, still reads."""
    from datadiet_jax.report import methods
    from datadiet_jax.scores import api, decisions

    decisions.clear()
    rng = np.random.default_rng(0)
    images, labels = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 3, 40)
    (tmp_path / "scores").mkdir()  # the stage makes it before scoring
    files = score_stage._ScoreFiles(None, str(tmp_path), None, set())
    counts = []
    for epoch in (0, 1):  # 10 batches each: the first epoch races the two GraNd programs
        params = {"w1": rng.normal(size=(2, 4, 5)), "w2": rng.normal(size=(2, 5, 3))}
        params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
        before = decisions.stats()
        files.timed("grand", epoch, api.grand_scores, _mlp, params, images, labels, batch_size=4)
        counts.append({k: decisions.stats()[k] - before[k] for k in decisions.COUNTED})
    fixed = ("site_finders", "guards", "races", "batch_checks")
    assert [[c[k] for k in fixed] for c in counts] == [[1, 1, 1, 1], [0, 0, 0, 1]], counts
    path = score_stage.timings_path(str(tmp_path))
    lines = [json.loads(line) for line in open(path)]
    assert [line["epoch"] for line in lines] == [0, 1]
    assert all(0 < line["setup_seconds"] <= line["seconds"] for line in lines), lines
    assert lines[1]["setup_seconds"] < lines[0]["setup_seconds"], lines
    with open(path, "a") as f:  # an older run's line
        f.write(json.dumps({"score": "el2n", "epoch": 1, "seconds": 2.0}) + "\n")
    assert methods.score_seconds(str(tmp_path)) == {
        "grand@0": lines[0]["seconds"],
        "grand@1": lines[1]["seconds"],
        "el2n@1": 2.0,
    }
