"""GraNd's fast rules on the idioms of other JAX libraries, reproduced in plain JAX, against
per-example `jax.grad` loops: equinox's `W @ x` under `jax.vmap` (the param on the left of the
`dot_general`) and haiku's `jnp.broadcast_to(b, out.shape)` biases and LayerNorm scales."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax.scores import api
from datadiet_jax.scores.pergrad import jaxpr_norms, jaxpr_sites
from tests.references import function_grand_loop, guard_warnings, seed

T, D, H, C = 3, 4, 5, 3  # positions, input features, hidden width, classes


def _eqx_linear(w, b, x):
    """equinox.nn.Linear on one example: w [O, D], x [D] -> [O]."""
    return w @ x + b


def equinox_style(params, x):
    """Per example [T, D]: a Linear vmapped over positions, `W @ X` over [D, T], a Linear head."""

    def one(xi):  # xi: [T, D]
        h = jnp.tanh(jax.vmap(lambda t: _eqx_linear(params["w1"], params["b1"], t))(xi))  # [T, H]
        h = jnp.tanh(params["w2"] @ h.T)  # [H, T]: the activation keeps a free axis
        return _eqx_linear(params["w3"], params["b3"], h.mean(axis=1))

    return jax.vmap(one)(x)


def _hk_linear(w, b, x):
    """haiku.Linear: x [B, ..., D] @ w [D, O] plus `jnp.broadcast_to(b, out.shape)`."""
    out = jnp.dot(x, w)
    return out + jnp.broadcast_to(b, out.shape)


def _hk_layer_norm(scale, offset, x):
    """haiku.LayerNorm over the last axis: scale and offset broadcast to the input's shape."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    inv = jnp.broadcast_to(scale, x.shape) * jax.lax.rsqrt(var + 1e-5)
    return inv * (x - jnp.broadcast_to(mean, x.shape)) + jnp.broadcast_to(offset, x.shape)


def haiku_style(params, x):
    """x [B, T, D]: LayerNorm, Linear over positions, mean, Linear head."""
    h = _hk_layer_norm(params["ln_scale"], params["ln_offset"], x)
    h = jnp.tanh(_hk_linear(params["w1"], params["b1"], h))
    return _hk_linear(params["w3"], params["b3"], h.mean(axis=1))


SHAPES = {
    "equinox": {"w1": (H, D), "b1": (H,), "w2": (H, H), "w3": (C, H), "b3": (C,)},
    "haiku": {
        "ln_scale": (D,),
        "ln_offset": (D,),
        "w1": (D, H),
        "b1": (H,),
        "w3": (H, C),
        "b3": (C,),
    },
}
MODELS = {"equinox": equinox_style, "haiku": haiku_style}


def _case(name, n=7, k=2):
    rng = np.random.default_rng(0)
    shapes = SHAPES[name].items()
    params = {p: jnp.asarray(rng.normal(size=(k, *s)), jnp.float32) for p, s in shapes}
    x = rng.normal(size=(n, T, D)).astype(np.float32)
    return MODELS[name], params, x, rng.integers(0, C, n)


@pytest.mark.parametrize("name", ["equinox", "haiku"])
def test_idioms_are_exact_and_fully_covered(name):
    fn, params, x, y = _case(name)
    got = api.grand_scores(fn, params, x, y, batch_size=4)
    np.testing.assert_allclose(got, function_grand_loop(fn, params, x, y), rtol=1e-4)
    sites, rest, _ = jaxpr_sites.find_sites(lambda p, s, xx: fn(p, xx), seed(params, 0), {}, x)
    kinds = {s.key: s.kind for s in sites}
    assert rest == (), kinds
    if name == "equinox":
        assert {kinds[w] for w in ("w1", "w2", "w3")} == {"dense"}, kinds
        assert {s.key: s.out_axis for s in sites if s.kind == "dense"}["w2"] == 1
    else:
        assert kinds["ln_scale"] == "scale" and kinds["b1"] == kinds["ln_offset"] == "shift"


def test_planted_fault_in_the_left_param_rule_is_caught_by_the_guard(monkeypatch, caplog):
    dense = jaxpr_norms._dense_sq_norm
    monkeypatch.setattr(  # only param-on-the-left sites are wrong
        jaxpr_norms, "_dense_sq_norm", lambda e, s, a, g: (1.0 + s.act) * dense(e, s, a, g)
    )
    fn, params, x, y = _case("equinox", n=9)
    call = lambda: api.grand_scores(fn, params, x, y, batch_size=8)  # noqa: E731
    got, warned = guard_warnings(call, caplog)
    assert "w2" in warned and "b1" not in warned, warned
    np.testing.assert_allclose(got, function_grand_loop(fn, params, x, y), rtol=1e-4)
