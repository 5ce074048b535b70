"""Inputs that are not images: a feature-vector MLP and a token-id text classifier, scored exactly
(GraNd against the per-example `jax.grad` loop, EL2N against a hand computation) and retrained
through the pipeline (an `.npz` feature dataset, a function returning token ids)."""

import dataclasses
import functools
import hashlib
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax import models
from datadiet_jax.pipeline import artifacts, config_check, data, run, score_stage
from datadiet_jax.scores import api
from tests.conftest import smoke_config
from tests.references import function_grand_loop, linen_grand_loop, seed

VOCAB, LENGTH, DIM, CLASSES = 12, 10, 6, 3


class MLP(nn.Module):
    """Dense(width) + ReLU + Dense(num_classes) on feature vectors [B, D]."""

    num_classes: int
    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.width)(x)))


class TextClassifier(nn.Module):
    """Embed(vocab_size, width) of token ids [B, T], mean over tokens, Dense + ReLU, Dense."""

    num_classes: int
    width: int = 16
    vocab_size: int = VOCAB

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Embed(self.vocab_size, self.width, name="embed")(x).mean(axis=1)
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.width)(h)))


def features(n, seed_=0):
    """[n, DIM] float32 features whose class sets their mean (far from standardized), labels."""
    rng = np.random.default_rng(seed_)
    labels = rng.integers(0, CLASSES, n)
    x = 5.0 + 3.0 * (np.eye(CLASSES, DIM)[labels] * 2 + rng.normal(size=(n, DIM)))
    return x.astype(np.float32), labels.astype(np.int64)


def tokens(n, seed_=0):
    """[n, LENGTH] int64 token ids, 90% from the class's own 4 ids, and labels."""
    rng = np.random.default_rng(seed_)
    labels = rng.integers(0, CLASSES, n)
    own = labels[:, None] * 4 + rng.integers(0, 4, (n, LENGTH))
    ids = np.where(rng.random((n, LENGTH)) < 0.9, own, rng.integers(0, VOCAB, (n, LENGTH)))
    return ids.astype(np.int64), labels.astype(np.int64)


def load_tokens():
    """The `config.data.function` of the token run: {'train': ..., 'test': ..., 'num_classes'}."""
    (x, y), (tx, ty) = tokens(160, 1), tokens(100, 2)
    return {
        "train": {"image": x, "label": y},
        "test": {"image": tx, "label": ty},
        "num_classes": CLASSES,
    }


def hand_el2n(model, variables, x, y) -> np.ndarray:
    """`[K, N]` ||softmax(logits) - onehot||_2 in float64 numpy, from each seed's logits."""
    out = []
    for k in range(2):
        logits = np.asarray(model.apply(seed(variables, k), x), np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out.append(np.linalg.norm(p - np.eye(logits.shape[1])[y], axis=1))
    return np.array(out)


@pytest.fixture(scope="module")
def text_scored():
    model = TextClassifier(CLASSES, width=8)
    x, y = tokens(40)
    x = x.astype(np.int32)
    variables = api.init_variables(model, jax.random.key(3), 2, x[:1])
    kw = dict(batch_size=16, integer_inputs=True)
    return model, variables, x, y, api.grand_scores(model, variables, x, y, **kw)


def test_mlp_scores_are_exact():
    model = MLP(CLASSES, width=8)
    x, y = features(40)
    variables = api.init_variables(model, jax.random.key(1), 2, x[:1])
    el2n = api.el2n_scores(model, variables, x, y, batch_size=16)
    np.testing.assert_allclose(el2n, hand_el2n(model, variables, x, y), rtol=1e-5, atol=1e-6)
    grand = api.grand_scores(model, variables, x, y, batch_size=16)
    np.testing.assert_allclose(grand, linen_grand_loop(model.apply, variables, x, y), rtol=1e-4)


def test_token_scores_are_exact_with_the_embedding_table(text_scored):
    model, variables, x, y, grand = text_scored
    el2n = api.el2n_scores(model, variables, x, y, batch_size=16, integer_inputs=True)
    np.testing.assert_allclose(el2n, hand_el2n(model, variables, x, y), rtol=1e-5, atol=1e-6)
    want = linen_grand_loop(model.apply, variables, x, y)
    np.testing.assert_allclose(grand, want, rtol=1e-4)
    # The embedding table's share is large enough that leaving it out would fail the check.
    embed_only = []
    for k in range(2):
        one = seed(variables, k)

        def loss(table, x1, y1, one=one):
            params = {**one["params"], "embed": {"embedding": table}}
            logits = model.apply({"params": params}, x1[None])
            return -jax.nn.log_softmax(logits)[0, y1]

        grad = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))
        g = grad(one["params"]["embed"]["embedding"], x, y)
        embed_only.append(np.sqrt((np.asarray(g, np.float64) ** 2).sum(axis=(1, 2))))
    without = np.sqrt(np.maximum(want**2 - np.array(embed_only) ** 2, 0))
    assert np.median(np.abs(without - want) / want) > 10 * 1e-4  # 10x the tolerance above


def test_token_scores_of_a_plain_function_gathering_from_its_table_are_exact():
    """The jaxpr path: a table indexed by token ids is no site (a gather), so `vmap(grad)`."""

    def apply_fn(p, x):
        return jnp.tanh(p["table"][x].mean(1) @ p["w"]) @ p["v"]

    k = jax.random.split(jax.random.key(5), 3)
    params = {
        "table": jax.random.normal(k[0], (2, VOCAB, 8)),
        "w": jax.random.normal(k[1], (2, 8, 8)) / 3,
        "v": jax.random.normal(k[2], (2, 8, CLASSES)) / 3,
    }
    x, y = tokens(20)
    x = x.astype(np.int32)
    got = api.grand_scores(apply_fn, params, x, y, batch_size=8, integer_inputs=True)
    np.testing.assert_allclose(got, function_grand_loop(apply_fn, params, x, y), rtol=1e-4)


def test_token_scores_from_a_stream_match_the_arrays(text_scored):
    model, variables, x, y, grand = text_scored
    stream = [(x[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)]
    got = api.grand_scores(model, variables, stream, batch_size=16, integer_inputs=True)
    np.testing.assert_allclose(got, grand, rtol=1e-6)


def test_integer_inputs_are_refused_unless_declared(text_scored):
    model, variables, x, y, _ = text_scored
    with pytest.raises(ValueError, match="not a float type.*integer_inputs=True"):
        api.el2n_scores(model, variables, x, y)
    with pytest.raises(ValueError, match="integer_inputs=True takes integer token ids"):
        api.el2n_scores(model, variables, x.astype(np.float32), y, integer_inputs=True)
    bad = x.copy()
    bad[5, 2] = -1
    with pytest.raises(ValueError, match=r"negative token ids at rows \[5\]"):
        api.grand_scores(model, variables, bad, y, integer_inputs=True)


# --- Through the pipeline ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(models.MODELS, "test_mlp", MLP)
        mp.setitem(models.MODELS, "test_text", functools.partial(TextClassifier, vocab_size=VOCAB))
        yield


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    paths = {}
    for split, (n, s) in {"train": (160, 1), "test": (100, 2)}.items():
        x, y = features(n, s)
        paths[split] = str(folder / f"{split}.npz")
        np.savez(paths[split], image=x, label=y)
    return paths


def feature_config(paths, **overrides):
    return smoke_config(
        **{
            "data.name": "arrays",
            "data.arrays.train": paths["train"],
            "data.arrays.test": paths["test"],
            "model.name": "test_mlp",
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def feature_run(registered, feature_files, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("feature_run") / "run")
    config = feature_config(feature_files)
    return config, workdir, run.run(config, workdir)


@pytest.fixture(scope="module")
def token_run(registered, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("token_run") / "run")
    # 6 epochs at rate 0.5: at the smoke 2 epochs and 0.1, the width-8 embedding model had not
    # learned (marked 'collapsed'), which the run reports rather than hides.
    config = smoke_config(
        **{
            "data.name": "function",
            "model.name": "test_text",
            "data.function": f"{__name__}:load_tokens",
            "train.num_epochs": 6,
            "train.learning_rate": 0.5,
        }
    )
    return config, workdir, run.run(config, workdir)


def _scores(workdir, name):
    return artifacts.load_scores(os.path.join(workdir, "scores", f"{name}.npz"))


def test_feature_run_standardizes_with_the_training_statistics(feature_run, feature_files):
    config, workdir, results = feature_run
    assert {r["name"] for r in results["runs"]} == {
        "full",
        "el2n-1_hardest_f0.50",
        "random_subset_f0.50",
    }
    assert all(r["status"] == ["ok"] for r in results["runs"])
    x = features(160, 1)[0][:128].astype(np.float64)  # the first 128 rows (smoke N)
    for name in ("el2n_epoch001", "grand_epoch000", "grand_epoch001"):
        s = _scores(workdir, name)
        assert s["per_seed"].shape == (2, 128) and "tfds_id" not in s
        np.testing.assert_array_equal(s["index"], np.arange(128))
        p = s["provenance"]
        assert p["inputs"] == "features" and p["dataset"] == "arrays"
        np.testing.assert_allclose(p["normalization"]["mean"], x.mean(0), rtol=1e-5)
        np.testing.assert_allclose(p["normalization"]["std"], x.std(0), rtol=1e-5)
        with open(feature_files["train"], "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        files = {os.path.abspath(feature_files["train"]): sha}
        assert p["data_source"] == {"kind": "arrays", "files": files}


def test_feature_inputs_are_standardized(feature_run):
    config, _, _ = feature_run
    train, _ = data.load_splits(config.data)
    x = train.model_inputs()
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, rtol=1e-4)


def test_scores_of_other_array_data_are_refused(feature_run):
    config, workdir, _ = feature_run
    train, _ = data.load_splits(config.data)
    path = os.path.join(workdir, "scores", "el2n_epoch001.npz")
    spec = config_check.score_spec(config)
    score_stage.load_checked_scores(spec, train, path)  # the same data: accepted
    other = {"kind": "arrays", "files": {next(iter(train.source["files"])): "0" * 64}}
    with pytest.raises(ValueError, match="data_source="):
        score_stage.load_checked_scores(spec, dataclasses.replace(train, source=other), path)


def test_token_run_passes_token_ids_as_they_are(token_run):
    config, workdir, results = token_run
    assert all(r["status"] == ["ok"] for r in results["runs"])
    s = _scores(workdir, "grand_epoch001")
    p = s["provenance"]
    assert p["inputs"] == "tokens" and p["normalization"] is None and "tfds_id" not in s
    assert p["data_source"]["kind"] == "function"
    assert p["data_source"]["function"] == f"{__name__}:load_tokens"
    train, _ = data.load_splits(config.data)
    assert train.inputs.dtype == np.int32 and train.num_classes == CLASSES
    np.testing.assert_array_equal(train.model_inputs(), tokens(160, 1)[0][:128])
