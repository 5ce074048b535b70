"""Models train in train mode whatever their mode flag is called, checked on their checkpoints;
a flag no convention names is refused in one line until `train_arg` names it."""

import glob
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from datadiet_jax.pipeline import data, notebook
from datadiet_jax.scores import model_form
from tests import own_models
from tests.conftest import SMOKE_ARGS, run_main

# name -> the keyword arguments that mean train mode, written out by hand.
CONVENTIONS = {
    "TrainNet": {"train": True},
    "TrainingNet": {"training": True},
    "IsTrainingNet": {"is_training": True},
    "DeterministicNet": {"deterministic": False},
    "RunningAverageNet": {"use_running_average": False},
}


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    return data.split_from_arrays(images, rng.integers(0, 10, 64), num_classes=10)


def _train(model, split, workdir, **kw):
    return notebook.train_seeds(
        model, split, num_seeds=2, num_steps=2, batch_size=16, workdir=str(workdir), **kw
    )


def _checkpoint_model_state(ckpt_dir):
    """The model state of the latest checkpoint, read back by orbax alone (no template)."""
    manager = ocp.CheckpointManager(os.path.abspath(ckpt_dir))
    saved = manager.restore(manager.latest_step())
    manager.close()
    return saved["state"]["model_state"]


def _assert_statistics_moved(model_state, num_seeds=2):
    # BatchNorm starts at mean 0 and variance 1; a train-mode step moves both in every seed.
    stats = model_state["batch_stats"]["BatchNorm_0"]
    for k in range(num_seeds):
        assert not np.allclose(stats["mean"][k], 0.0), k
        assert not np.allclose(stats["var"][k], 1.0), k


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_each_convention_trains_in_train_mode(name, split, tmp_path):
    module = getattr(own_models, name)()
    form = model_form.model_form(module)
    assert form.mode_kwargs(True) == CONVENTIONS[name]
    assert form.mode_kwargs(False) == {k: not v for k, v in CONVENTIONS[name].items()}
    _train(module, split, tmp_path)
    _assert_statistics_moved(_checkpoint_model_state(tmp_path / "ckpt"))


def test_an_unnamed_flag_is_refused_in_one_line_until_named(split, tmp_path):
    with pytest.raises(ValueError) as err:
        _train(own_models.FrozenNet(), split, tmp_path / "a")
    message = str(err.value)
    assert "\n" not in message
    assert "BatchNorm statistics) did not change in seed 0" in message
    assert "['frozen']" in message and "config.model.train_arg" in message
    _train(own_models.FrozenNet(), split, tmp_path / "b", train_arg="not frozen")
    _assert_statistics_moved(_checkpoint_model_state(tmp_path / "b" / "ckpt"))


def test_dropout_without_state_is_checked_by_its_logits(split, tmp_path):
    with pytest.raises(ValueError, match="has Dropout, but its train-mode and eval-mode logits"):
        _train(own_models.FrozenDropoutNet(), split, tmp_path / "a")
    trained = _train(own_models.FrozenDropoutNet(), split, tmp_path / "b", train_arg="not frozen")
    x = split.model_inputs()[:8]
    one = jax.tree.map(lambda v: v[0], trained.variables)
    train, _ = trained.model.apply(
        one["params"], one["state"], x, train=True, rng=jax.random.key(3)
    )
    assert not np.allclose(train, trained.model.logits(one["params"], one["state"], x))


def test_nnx_and_function_models_move_their_state(split, tmp_path):
    _train(own_models.NNXNet, split, tmp_path / "nnx")
    saved = _checkpoint_model_state(tmp_path / "nnx" / "ckpt")
    for k in range(2):
        assert not np.allclose(saved["bn"]["mean"][k], 0.0)
    _train(own_models.FunctionNet(), split, tmp_path / "fn")
    saved = _checkpoint_model_state(tmp_path / "fn" / "ckpt")
    assert np.all(np.abs(saved["mean"]) > 0)


def test_a_model_without_a_mode_passes(split, tmp_path):
    trained = _train(own_models.LinenNet(), split, tmp_path)
    assert trained.num_steps == 2 and trained.model.mode_kwargs(True) == {}


def test_flag_errors_are_one_line():
    with pytest.raises(ValueError, match=r"no argument 'frozn'; its arguments .* \['frozen'\]"):
        model_form.model_form(own_models.FrozenNet(), train_arg="not frozn")
    with pytest.raises(ValueError, match="write 'name' .* or 'not name'"):
        model_form.model_form(own_models.FrozenNet(), train_arg="not so frozen")
    with pytest.raises(ValueError, match="names a Flax Linen module's mode flag"):
        model_form.model_form(own_models.NNXNet, train_arg="train")

    class Required(own_models.nn.Module):
        @own_models.nn.compact
        def __call__(self, x, mode_on: bool):
            return own_models.nn.Dense(3)(x)

    with pytest.raises(ValueError, match="needs argument 'mode_on'.*train_arg='mode_on'"):
        model_form.model_form(Required())


# Only the score stage's training: one score epoch, no retraining.
_TRAIN_ONLY = (
    "--config.score.grand_epochs=()",
    "--config.prune.fractions=()",
    "--config.prune.full_baseline=False",
)


def _main(workdir, model_name, *overrides):
    return run_main(
        *SMOKE_ARGS, f"--workdir={workdir}", f"--config.model.name={model_name}", *overrides
    )


def _cli_checkpoint_state(workdir):
    (ckpt,) = glob.glob(str(workdir / "scores" / "train" / "ckpt"))
    return _checkpoint_model_state(ckpt)


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_each_convention_trains_in_train_mode_from_the_command_line(name, tmp_path):
    done = _main(tmp_path, f"tests.own_models:{name}", *_TRAIN_ONLY)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_statistics_moved(_cli_checkpoint_state(tmp_path))


def test_nnx_and_function_models_move_their_state_from_the_command_line(tmp_path):
    done = _main(tmp_path / "nnx", "tests.own_models:NNXNet", *_TRAIN_ONLY)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = _cli_checkpoint_state(tmp_path / "nnx")
    for k in range(2):
        assert not np.allclose(saved["bn"]["mean"][k], 0.0)
    done = _main(tmp_path / "fn", "tests.own_models:function_net", *_TRAIN_ONLY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.all(np.abs(_cli_checkpoint_state(tmp_path / "fn")["mean"]) > 0)


def test_the_command_line_refuses_then_trains_with_train_arg(tmp_path):
    refused = _main(tmp_path / "a", "tests.own_models:FrozenNet")
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert "did not change" in last and "config.model.train_arg" in last
    done = _main(
        tmp_path / "b", "tests.own_models:FrozenNet", "--config.model.train_arg=not frozen"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_statistics_moved(_cli_checkpoint_state(tmp_path / "b"))
