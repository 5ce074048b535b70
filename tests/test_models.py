import jax
import jax.numpy as jnp
import pytest

from datadiet_jax import models
from datadiet_jax.scores import model_form
from tests import own_models


def _count(model, shape):
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    return sum(x.size for x in jax.tree.leaves(variables["params"])), variables


def test_small_cnn_parameter_count_by_hand():
    # conv 3*3*1*32 + BN 2*32 + conv 3*3*32*64 + BN 2*64 + dense 7*7*64*128 (no bias) + BN 2*128
    # + dense 128*10+10
    expected = 288 + 64 + 18432 + 128 + 3136 * 128 + 256 + (128 * 10 + 10)
    count, variables = _count(models.get_model("small_cnn", 10), (1, 28, 28, 1))
    assert count == expected
    assert "batch_stats" in variables


@pytest.mark.parametrize(
    "name,num_classes,expected",
    # The CIFAR ResNet counts of the paper's architecture (3x3 stem, no max-pool).
    [("resnet18", 10, 11_173_962), ("resnet50", 10, 23_520_842), ("resnet18", 100, 11_220_132)],
)
def test_resnet_parameter_counts(name, num_classes, expected):
    count, _ = _count(models.get_model(name, num_classes), (1, 32, 32, 3))
    assert count == expected


@pytest.mark.parametrize(
    "name,shape", [("small_cnn", (3, 28, 28, 1)), ("resnet18", (2, 32, 32, 3))]
)
def test_output_shapes_and_modes(name, shape):
    model = models.get_model(name, 7, width=8)
    variables = model.init(jax.random.key(1), jnp.zeros(shape))
    x = jax.random.normal(jax.random.key(2), shape)
    assert model.apply(variables, x, train=False).shape == (shape[0], 7)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (shape[0], 7)
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], updates["batch_stats"]
    )
    assert any(jax.tree.leaves(changed))


def test_resnet_stem_keeps_resolution():
    # 3x3 stride-1 stem and no max-pool: the first stage runs at 32x32.
    model = models.get_model("resnet18", 10, width=4)
    _, state = model.apply(
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))),
        jnp.zeros((1, 32, 32, 3)),
        capture_intermediates=True,
        mutable=["intermediates"],
    )
    stem = state["intermediates"]["Conv_0"]["__call__"][0]
    assert stem.shape == (1, 32, 32, 4)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="resnet18"):
        models.get_model("resnet19", 10)


def _model_cfg(name, **fields):
    import ml_collections

    cfg = ml_collections.ConfigDict(
        {"name": name, "width": 0, "smoke_width": 0, "kwargs": ml_collections.ConfigDict()}
    )
    for key, value in fields.items():
        cfg[key] = value
    return cfg


def test_import_paths_and_their_arguments():
    import ml_collections

    kwargs = ml_collections.ConfigDict({"hidden": 5})
    built = models.build(_model_cfg("tests.own_models:function_net", kwargs=kwargs), 4)
    assert isinstance(built, model_form.FunctionModel)
    assert built.model.hidden == 5 and built.model.num_classes == 4
    linen = models.build(_model_cfg("tests.own_models:LinenNet", smoke_width=8), 7)
    assert linen.module == own_models.LinenNet(num_classes=7)  # no width: smoke_width left out
    cnn = models.build(_model_cfg("small_cnn", smoke_width=8), 10)
    assert cnn.module.width == 8  # a model with a width gets the smoke width
    assert models.build(_model_cfg("small_cnn", width=16, smoke_width=8), 10).module.width == 16
    nnx_model = models.build(_model_cfg("tests.own_models:NNXNet"), 3)
    assert isinstance(nnx_model, model_form.NNXModel)
    assert nnx_model.factory.keywords == {"num_classes": 3}


@pytest.mark.parametrize(
    "name,fields,message",
    [
        ("my_mlp", {}, "Unknown model 'my_mlp'; set config.model.name to one of"),
        ("no_such_package.models:Net", {}, "cannot import 'no_such_package.models'"),
        ("tests.own_models:Missing", {}, "has no attribute 'Missing'"),
        ("tests.own_models:LinenNet", {"width": 8}, "config.model.width is set, but model"),
        (
            "tests.own_models:LinenNet",
            {"kwargs": {"depth": 3}},
            "config.model.kwargs.depth is set, but model 'tests.own_models:LinenNet' takes no "
            "argument 'depth'; it takes ['features', 'num_classes']",
        ),
        ("tests.own_models:FUNCTION_NET", {"kwargs": {"hidden": 3}}, "is a built model"),
    ],
)
def test_bad_model_configs_are_one_line(name, fields, message):
    import ml_collections

    if "kwargs" in fields:
        fields = {**fields, "kwargs": ml_collections.ConfigDict(fields["kwargs"])}
    with pytest.raises(ValueError) as err:
        models.build(_model_cfg(name, **fields), 10)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_register_a_factory(monkeypatch):
    monkeypatch.setattr(models, "MODELS", dict(models.MODELS))
    models.register("linen_net", own_models.LinenNet)
    models.register("linen_net", own_models.LinenNet)  # the same factory again: fine
    assert models.build(_model_cfg("linen_net"), 5).module == own_models.LinenNet(num_classes=5)
    with pytest.raises(ValueError, match="already registered"):
        models.register("linen_net", own_models.NNXNet)
    with pytest.raises(ValueError, match="marks import paths"):
        models.register("a:b", own_models.NNXNet)
