"""The researcher's own models through every stage: NNX, plain-function and outside Linen."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from datadiet_jax import models
from datadiet_jax.pipeline import artifacts, data, run
from datadiet_jax.scores import model_form
from datadiet_jax.training import initial, input_pipeline, keys, loop
from tests.conftest import restore_checkpoint, smoke_config
from tests.references import grad_norm_loop, seed

OWN = {
    "nnx": ("tests.own_models:NNXNet", {}),
    "function": ("tests.own_models:function_net", {"hidden": 32}),
    "linen": ("tests.own_models:LinenNet", {"features": 3}),
}


def own_config(kind):
    name, kwargs = OWN[kind]
    # At 0.1 (the small CNN's rate, with BatchNorm) these 8-step runs barely move.
    config = smoke_config(**{"model.name": name, "train.learning_rate": 0.03})
    config.model.kwargs = ml_collections.ConfigDict(kwargs)
    return config


@pytest.fixture(scope="module", params=sorted(OWN))
def own_run(request, tmp_path_factory):
    config = own_config(request.param)
    workdir = str(tmp_path_factory.mktemp(request.param) / "run")
    return request.param, config, workdir, run.run(config, workdir)


def _spec(config, workdir, split):
    spe = input_pipeline.steps_per_epoch(split.num_examples, config.train.batch_size)
    return loop.TrainSpec(
        train_cfg=config.train,
        num_seeds=config.score.num_seeds,
        seed=config.seed,
        purpose=keys.Purpose.SCORE,
        num_steps=spe,
        schedule_steps=config.train.num_epochs * spe,
        ckpt_dir=os.path.join(workdir, "scores", "train", "ckpt"),
        augment=False,
    ), spe


def test_a_smoke_run_of_an_own_model_ends_with_every_result(own_run):
    kind, config, workdir, out = own_run
    model = models.build(config.model, 10)
    want = {"nnx": model_form.NNXModel, "function": model_form.FunctionModel}.get(
        kind, model_form.LinenModel
    )
    assert isinstance(model, want)
    assert len(out["runs"]) == 3  # EL2N-pruned, random, full
    for result in out["runs"]:
        assert result["status"] == ["ok"], result  # each learned (above chance, loss fell)
    for score in ("el2n_epoch001", "grand_epoch000", "grand_epoch001", "forgetting_epoch001"):
        scores = artifacts.load_scores(os.path.join(workdir, "scores", f"{score}.npz"))
        assert scores["per_seed"].shape == (2, 128)
        assert scores["provenance"]["model"] == config.model.name


def test_grand_of_an_own_model_is_the_per_example_gradient_norm(own_run):
    # Epoch 1's GraNd against a jax.grad loop on the state restored from its checkpoint: the
    # scores, the train-mode state updates and the checkpoint round trip are all the model's.
    kind, config, workdir, _ = own_run
    split, _ = data.load_splits(config.data)
    model = models.build(config.model, split.num_classes)
    spec, spe = _spec(config, workdir, split)
    state = restore_checkpoint(model, split, spec, spe)
    images, labels = split.model_inputs(), split.labels
    saved = artifacts.load_scores(os.path.join(workdir, "scores", "grand_epoch001.npz"))
    for k in range(2):
        model_state = seed(state.model_state, k)
        want = grad_norm_loop(
            lambda p, x, s=model_state: model.logits(p, s, x),
            seed(state.params, k),
            images,
            labels,
        )
        np.testing.assert_allclose(saved["per_seed"][k], want, rtol=2e-4, atol=1e-6)
    start = initial.initial_states(model, split, spec).params
    moved = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state.params, start)
    )
    assert min(moved) > 0  # it trained


def test_an_own_model_run_resumes(own_run):
    kind, config, workdir, out = own_run
    score = os.path.join(workdir, "scores", "grand_epoch001.npz")
    before = artifacts.load_scores(score)["per_seed"]
    first = out["runs"][0]["name"]
    os.remove(score)
    os.remove(os.path.join(workdir, "retrain", first, "result.json"))
    again = run.run(config, workdir)
    np.testing.assert_allclose(artifacts.load_scores(score)["per_seed"], before, rtol=1e-6)
    assert again["runs"] == out["runs"]


def test_a_model_field_it_does_not_take_is_refused_before_anything_is_written(tmp_path):
    config = smoke_config(**{"model.name": "tests.own_models:LinenNet", "model.width": 8})
    with pytest.raises(ValueError, match="config.model.width is set, but model") as err:
        run.run(config, str(tmp_path / "w"))
    assert "\n" not in str(err.value) and not os.path.exists(tmp_path / "w")


def test_a_model_that_does_not_fit_the_data_is_refused_and_the_fixed_config_runs(tmp_path):
    config = own_config("linen")
    config.model.kwargs.num_classes = 3
    workdir = str(tmp_path / "w")
    with pytest.raises(
        ValueError,
        match=r"returns \(1, 3\) for one example, but the dataset has "
        "10 classes",
    ):
        run.run(config, workdir)
    assert not os.path.exists(workdir)  # refused before anything is written
    config.model.kwargs = ml_collections.ConfigDict({"features": 3})
    config.score.grand_epochs, config.score.el2n_epochs = (), (0,)
    config.score.forgetting = config.score.aum = False
    config.prune.scores, config.retrain.num_seeds = ("el2n@0",), 1
    config.prune.random_baseline = config.prune.full_baseline = False
    out = run.run(config, workdir)  # the same folder takes the fixed config
    assert [r["status"] for r in out["runs"]] == [["ok"]]
