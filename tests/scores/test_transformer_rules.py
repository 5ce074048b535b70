"""GraNd's transformer rules (LayerNorm/RMSNorm scales, attention projections, embeddings,
position embeddings, class tokens) and the plan's choice, against per-example `jax.grad` loops."""

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datadiet_jax.scores import api, decisions, model_form
from datadiet_jax.scores.pergrad import jaxpr_norms, jaxpr_sites, rules
from datadiet_jax.scores.pergrad import method as method_lib
from tests.references import function_grand_loop, guard_warnings, linen_grand_loop, seed

DIM, VOCAB = 8, 6


class Block(nn.Module):
    """Pre-norm transformer block: LayerNorm, 2-head attention, LayerNorm, MLP."""

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2)(y, y)
        y = nn.Dense(2 * DIM)(nn.LayerNorm()(x))
        return x + nn.Dense(DIM)(nn.gelu(y))


class TinyViT(nn.Module):
    """Patch conv, class token (concatenated), position embedding (added), a block, LayerNorm."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(DIM, (4, 4), strides=(4, 4), padding="VALID")(x)
        x = x.reshape(x.shape[0], -1, DIM)
        cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, DIM))
        x = jnp.concatenate([jnp.tile(cls, (x.shape[0], 1, 1)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(1.0), (1, x.shape[1], DIM))
        return nn.Dense(3)(nn.LayerNorm()(Block()(x))[:, 0])


class TinyText(nn.Module):
    """Embed (token ids given as floats, cast here), position embedding, a block, mean, Dense."""

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, DIM)(tokens.astype(jnp.int32))
        x = x + self.param("pos", nn.initializers.normal(1.0), (1, tokens.shape[1], DIM))
        return nn.Dense(3)(Block()(x).mean(axis=1))


class NnxNorms(nnx.Module):
    """nnx.Embed, nnx.LayerNorm, nnx.RMSNorm and nnx.Linear over token ids given as floats."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(VOCAB, DIM, rngs=rngs)
        self.ln = nnx.LayerNorm(DIM, rngs=rngs)
        self.rms = nnx.RMSNorm(DIM, rngs=rngs)
        self.head = nnx.Linear(DIM, 3, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens.astype(jnp.int32))
        x = self.rms(jax.nn.gelu(self.ln(x)))
        return self.head(x.mean(axis=1))


def _perturb(tree, key):
    """Random values on every leaf (norm scales and biases away from 1 and 0)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [
        0.5 * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, keys, strict=True)
    ]
    return treedef.unflatten([v + e for v, e in zip(leaves, noise, strict=True)])


def _linen_case(name, n=7):
    rng = np.random.default_rng(0)
    if name == "vit":
        model, x = TinyViT(), rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
    else:  # ids repeat within an example, so the embedding rule groups positions
        model, x = TinyText(), rng.integers(0, VOCAB, (n, 5)).astype(np.float32)
    variables = jax.vmap(lambda k: _perturb(model.init(k, x[:1]), k))(
        jax.random.split(jax.random.key(1), 2)
    )
    return model, variables, x, rng.integers(0, 3, n)


@pytest.mark.parametrize("name", ["vit", "text"])
def test_linen_transformers_are_exact_and_fully_covered(name):
    model, variables, x, y = _linen_case(name)
    got = api.grand_scores(model, variables, x, y, batch_size=4)
    want = linen_grand_loop(lambda v, xx: model.apply(v, xx), variables, x, y)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    adapted, packed = model_form.from_pair(model, variables)
    one = seed(packed, 0)
    spec = jax.ShapeDtypeStruct((4, *x.shape[1:]), x.dtype)
    assert method_lib.sites_method(True, adapted.logits, one, spec) == "jaxpr_sites"
    counts = method_lib.coverage("jaxpr_sites", adapted.logits, one, spec)
    assert counts["fallback"] == 0, counts
    assert {"scale", "shift", "dense"} <= set(counts)
    assert ("concat" if name == "vit" else "embed") in counts


def test_nnx_layernorm_rmsnorm_embed_are_exact():
    model = nnx.vmap(lambda k: NnxNorms(nnx.Rngs(k)), in_axes=0)(
        jax.random.split(jax.random.key(2), 2)
    )
    graphdef, state = nnx.split(model)
    state = _perturb(state, jax.random.key(3))
    rng = np.random.default_rng(1)
    x = rng.integers(0, VOCAB, (6, 7)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    got = api.grand_scores(graphdef, state, x, y, batch_size=4)
    adapted, packed = model_form.from_pair(graphdef, state)
    assert not jax.tree.leaves(packed["state"])  # params only: one loop serves both seeds
    want = function_grand_loop(
        lambda p, xx: adapted.logits(p, packed["state"], xx), packed["params"], x, y
    )
    np.testing.assert_allclose(got, want, rtol=1e-4)
    sites, rest, _ = jaxpr_sites.find_sites(
        adapted.logits, seed(packed, 0)["params"], seed(packed, 0)["state"], jnp.asarray(x)
    )
    kinds = {s.key: s.kind for s in sites}
    assert rest == () and kinds["embed/embedding"] == "embed", kinds
    assert kinds["ln/scale"] == kinds["rms/scale"] == "scale", kinds


@pytest.mark.parametrize("clip", [True, False])
def test_embedding_rule_equals_the_dense_table_gradient(clip):
    rng = np.random.default_rng(4)
    ids = np.array([[0, 2, 2, 5, 7, -1], [1, 1, 1, 1, 3, 3]])  # 7 and -1 are out of range
    g = rng.normal(size=(2, 6, 3)).astype(np.float32)
    table = np.zeros((2, 6, 3))
    for b, t in np.ndindex(ids.shape):
        v = ids[b, t]
        if clip or 0 <= v < 6:
            np.add.at(table[b], np.clip(v, 0, 5), g[b, t])
    got = rules.embed_sq_norm(jnp.asarray(ids), jnp.asarray(g), 6, clip)
    np.testing.assert_allclose(got, np.sum(table**2, axis=(1, 2)), rtol=1e-6)


def test_planted_embedding_fault_is_caught_by_the_guard(monkeypatch, caplog):
    embed = jaxpr_norms._embed_sq_norm
    monkeypatch.setattr(jaxpr_norms, "_embed_sq_norm", lambda *a: 1.5 * embed(*a))
    model, variables, x, y = _linen_case("text", n=9)
    call = lambda: api.grand_scores(model, variables, x, y, batch_size=8)  # noqa: E731
    got, warned = guard_warnings(call, caplog)
    assert "layer Embed_0/embedding " in warned and "Dense" not in warned, warned
    want = linen_grand_loop(lambda v, xx: model.apply(v, xx), variables, x, y)
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("winner", ["jaxpr_sites", "vmap_grad"])
def test_a_call_of_several_batches_runs_the_faster_exact_program(monkeypatch, caplog, winner):
    """Both programs (the sites' plan, here with a tied param on the fallback, and vmap(grad))
    score the first batches in turns, the choice is logged once and used by the rest of the call
    and by the next one, and either gives the exact scores."""

    def tied(params, x):
        h = jnp.tanh(x.reshape(len(x), -1) @ params["w"])
        return (h @ params["w"].T) @ params["head"]

    rng = np.random.default_rng(5)
    params = {"w": rng.normal(size=(2, 6, 6)), "head": rng.normal(size=(2, 6, 3))}
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)
    x, y = rng.normal(size=(9, 6)).astype(np.float32), rng.integers(0, 3, 9)
    monkeypatch.setattr(method_lib, "fastest", lambda seconds: winner)
    monkeypatch.setattr(method_lib, "REPEATS", 1)
    monkeypatch.setattr(method_lib, "MIN_BATCHES", 4)  # 2 programs x (1 + 1 timed run)
    decisions.clear()
    with caplog.at_level(logging.INFO):
        got = api.grand_scores(tied, params, x, y, batch_size=2)  # 1 guard batch, 4 raced
        again = api.grand_scores(tied, params, x, y, batch_size=2)
    logged = [r.getMessage() for r in caplog.records if "raced on the first" in r.getMessage()]
    assert len(logged) == 1 and f"using {winner} from now on" in logged[0], logged
    assert "jaxpr_sites" in logged[0] and "vmap_grad" in logged[0], logged
    want = function_grand_loop(tied, params, x, y)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(again, want, rtol=1e-4)
