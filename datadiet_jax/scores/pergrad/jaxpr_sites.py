"""Where the fast per-example gradient-norm rules apply in any JAX model: sites in its jaxpr.

For models in the pure form `apply(params, state, images) -> logits` (`model_form/`: Flax NNX,
plain functions), the model is traced to one flat jaxpr (nested `jit` calls inlined) and every
value is classified by dataflow: batch-dependent or batch-free, and by the param leaves it
depends on. A param leaf's use (a batch-free value of it entering a batch-dependent equation) is
a site when a rule of `rules` covers it (`JaxprSite.kind`):

- 'dense': `dot_general` of a batch operand and a param (through reshape, transpose or convert
  only), the batch axis not contracted: nnx.Linear, `x @ W`, equinox's `W @ x` under vmap.
- 'conv': `conv_general_dilated` of a param, undilated, one group, the batch leading, any layout.
- 'scale' / 'shift': `a * q` / `a + q` with `q` batch-free and broadcast along the batch: biases,
  position embeddings, BatchNorm scales, LayerNorm and RMSNorm scales.
- 'concat': a broadcast batch-free value concatenated along a non-batch axis (a class token).
- 'embed': a `gather` of whole rows of a [V, D] param table by integer ids (nn.Embed,
  `table[ids]`).

A use is kept only if its leaves have no other use (no weight tying), its operand and output
follow the batch, and all of this holds in two traces at different batch sizes. Every other leaf
goes to the exact `vmap(grad)` fallback; what dataflow cannot see is caught by `guard`.

Usage:

    sites, fallback_leaves, closed = jaxpr_sites.find_sites(form.logits, params, state, images)
    # sites: JaxprSite's (key, kind, eqn, leaves, ...); fallback_leaves: param leaf indices
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp

from datadiet_jax.scores.pergrad import jaxpr_eval

# Equations that map a param leaf to a dot/conv operand without changing its gradient's norm.
NORM_PRESERVING = ("reshape", "transpose", "convert_element_type", "copy", "copy_p")
ELEMENTWISE = {"mul": "scale", "add": "shift"}


@dataclasses.dataclass(frozen=True)
class JaxprSite:
    """One equation of the flat jaxpr whose param leaves a fast rule covers.

    key: the covered leaves' names joined with '+' (stable across batch sizes, used in messages
    and by the guard's `exclude`); kind: 'dense' | 'conv' | 'embed' | 'scale' | 'shift' |
    'concat'; eqn: index of the equation in the flat jaxpr; act: position of the batch operand
    (an embedding's ids); leaves: covered param leaf indices; out_shape/out_dtype: the equation's
    output; param_var_eqn: for 'scale'/'shift'/'concat', the index of the `broadcast_in_dim` or
    `tile` equation whose input is the broadcast value (None when the operand itself is broadcast
    by a leading 1); slice_eqns: for those kinds, the equations computing that value from the
    leaves, in order; span: for 'concat', (axis, start, stop) of the operand in the output;
    act_axis/out_axis: the batch axis of the batch operand and of the output (0 but for some
    'dense' sites: a param on the left of the `dot_general`, a batch on a later axis of `a`).
    """

    key: str
    kind: str
    eqn: int
    act: int
    leaves: tuple[int, ...]
    out_shape: tuple[int, ...]
    out_dtype: Any
    param_var_eqn: int | None = None
    slice_eqns: tuple[int, ...] = ()
    span: tuple[int, int, int] | None = None
    act_axis: int = 0
    out_axis: int = 0


def leaf_names(params) -> list[str]:
    """'a/b/kernel'-style names of the param leaves, in `jax.tree.leaves` order."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = []
        for entry in path:
            if isinstance(entry, jax.tree_util.DictKey):
                parts.append(str(entry.key))
            elif isinstance(entry, jax.tree_util.SequenceKey):
                parts.append(str(entry.idx))
            elif isinstance(entry, jax.tree_util.GetAttrKey):
                parts.append(entry.name)
            else:
                parts.append(str(entry))
        if len(parts) > 1 and parts[-1] == "value":  # an NNX Variable's array
            parts.pop()
        names.append("/".join(parts) or "params")
    return names


def flat_jaxpr(apply: Callable, params, state, images) -> jex.ClosedJaxpr:
    """The flat jaxpr of `apply` with inputs (*param leaves, *state leaves, images).

    Args: arrays, tracers or ShapeDtypeStructs (only shapes and dtypes are used).
    """
    spec = lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype)  # noqa: E731
    p_leaves, p_tree = jax.tree.flatten(params)
    s_leaves, s_tree = jax.tree.flatten(state)

    def traced(pl, sl, x):
        return apply(jax.tree.unflatten(p_tree, pl), jax.tree.unflatten(s_tree, sl), x)

    closed = jax.make_jaxpr(traced)(
        [spec(v) for v in p_leaves], [spec(v) for v in s_leaves], spec(images)
    )
    return jax.make_jaxpr(lambda *args: jaxpr_eval.eval_inlined(closed.jaxpr, closed.consts, args))(
        *[spec(v) for v in (*p_leaves, *s_leaves, images)]
    )


def _flow(jaxpr, num_params: int):
    """(batch-dependence, param-dependence bit mask, defining equation index) of every var."""
    batch, dep, defn = {}, {}, {}
    invars = jaxpr.invars
    for i, v in enumerate(invars):
        batch[v] = i == len(invars) - 1
        dep[v] = 1 << i if i < num_params else 0
    for v in jaxpr.constvars:
        batch[v], dep[v] = False, 0
    for n, eqn in enumerate(jaxpr.eqns):
        ins = [v for v in eqn.invars if not isinstance(v, jex.Literal)]
        b = any(batch[v] for v in ins)
        d = 0
        for v in ins:
            d |= dep[v]
        for v in eqn.outvars:
            batch[v], dep[v], defn[v] = b, d, n
    return batch, dep, defn


def _bits(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(mask.bit_length()) if (mask >> i) & 1)


def _chain_leaf(var, jaxpr, defn, num_params: int) -> int | None:
    """The param leaf `var` is made from by norm-preserving equations only, else None."""
    while var not in jaxpr.invars:
        if isinstance(var, jex.Literal) or var not in defn:
            return None
        eqn = jaxpr.eqns[defn[var]]
        if eqn.primitive.name not in NORM_PRESERVING or len(eqn.invars) != 1:
            return None
        var = eqn.invars[0]
    i = jaxpr.invars.index(var)
    return i if i < num_params else None


def _slice(var, jaxpr, dep, defn) -> tuple[int, ...]:
    """Indices of the equations computing `var` from the params (param-free inputs are read)."""
    needed, stack = set(), [var]
    while stack:
        v = stack.pop()
        if isinstance(v, jex.Literal) or not dep.get(v) or v not in defn or defn[v] in needed:
            continue
        needed.add(defn[v])
        stack.extend(jaxpr.eqns[defn[v]].invars)
    return tuple(sorted(needed))


def _broadcasts_to(shape, out_shape) -> bool:
    """Whether `shape` (same rank) broadcasts to `out_shape` keeping the batch axis."""
    shape, out_shape = tuple(shape), tuple(out_shape)
    return (
        len(shape) == len(out_shape)
        and shape[:1] == out_shape[:1]
        and all(d in (1, o) for d, o in zip(shape, out_shape, strict=True))
    )


def _batch_broadcast(v, jaxpr, defn):
    """(equation index, its input q) if `v` is q broadcast along a new or size-1 batch axis
    (`broadcast_in_dim`, `tile`), else (None, None)."""
    src = jaxpr.eqns[defn[v]] if v in defn else None
    if src is None or src.primitive.name not in ("broadcast_in_dim", "tile"):
        return None, None
    q = src.invars[0]
    if isinstance(q, jex.Literal):
        return None, None
    if src.primitive.name == "tile":
        return (defn[v], q) if q.aval.shape[:1] == (1,) else (None, None)
    dims = tuple(src.params["broadcast_dimensions"])
    if 0 in dims and q.aval.shape[dims.index(0)] != 1:
        return None, None
    return defn[v], q


def _is_lookup(eqn) -> bool:
    """Whether a `gather` reads whole rows of a [V, D] table by ids [B, ..., 1] (an embedding)."""
    table, ids = (x.aval for x in eqn.invars)
    out = eqn.outvars[0].aval
    dn = eqn.params["dimension_numbers"]
    return (
        len(table.shape) == 2
        and jnp.issubdtype(ids.dtype, jnp.integer)
        and tuple(ids.shape[-1:]) == (1,)
        and len(ids.shape) == len(out.shape)
        and tuple(dn.offset_dims) == (len(out.shape) - 1,)
        and tuple(dn.collapsed_slice_dims) == (0,)
        and tuple(dn.start_index_map) == (0,)
        and not dn.operand_batching_dims
        and not dn.start_indices_batching_dims
        and tuple(eqn.params["slice_sizes"]) == (1, table.shape[1])
    )


def _dense_candidate(n, pos, jaxpr, batch, defn, num_params, size):
    """The 'dense' site of param operand `pos` (0 or 1) of a `dot_general`, or None.

    The activation's batch axis is its leading axis (which must not be contracted), else its one
    free axis of the batch's size; the output's axes are the left operand's free axes, then the
    right one's, which places the batch.
    """
    eqn = jaxpr.eqns[n]
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    act = 1 - pos
    a, v = eqn.invars[act], eqn.invars[pos]
    leaf = _chain_leaf(v, jaxpr, defn, num_params)
    if lb or rb or leaf is None or isinstance(a, jex.Literal) or not batch[a] or not a.aval.shape:
        return None
    contract, shape = (lc, rc)[act], tuple(a.aval.shape)
    free = [d for d in range(len(shape)) if d not in contract]
    sized = [d for d in free if shape[d] == size]
    if shape[0] == size:
        if 0 in contract:
            return None
        act_axis = 0
    elif len(sized) == 1:
        act_axis = sized[0]
    else:
        return None
    out_axis = (len(v.aval.shape) - len((lc, rc)[pos]) if pos == 0 else 0) + free.index(act_axis)
    out = tuple(eqn.outvars[0].aval.shape)
    drop = lambda t, ax: (*t[:ax], *t[ax + 1 :])  # noqa: E731
    sig = (n, act, drop(out, out_axis), tuple(v.aval.shape), act_axis, drop(shape, act_axis))
    return "dense", (leaf,), None, (), sig, {"act_axis": act_axis, "out_axis": out_axis}


def _concat_candidate(n, pos, jaxpr, batch, dep, defn):
    """The 'concat' site of a param broadcast along the batch and concatenated (a class token)."""
    eqn = jaxpr.eqns[n]
    axis, v = eqn.params["dimension"], eqn.invars[pos]
    if axis == 0 or isinstance(v, jex.Literal):
        return None
    bcast, q = _batch_broadcast(v, jaxpr, defn)
    if bcast is None or batch.get(q, False):
        return None
    acts = [i for i, x in enumerate(eqn.invars) if not isinstance(x, jex.Literal) and batch[x]]
    start = sum(x.aval.shape[axis] for x in eqn.invars[:pos])
    span = (axis, start, start + v.aval.shape[axis])
    out = eqn.outvars[0].aval
    sig = (n, acts[0], tuple(out.shape[1:]), tuple(v.aval.shape[1:]), span, tuple(q.aval.shape))
    extra = {"act": acts[0], "span": span}
    return "concat", _bits(dep[v]), bcast, _slice(q, jaxpr, dep, defn), sig, extra


def _candidate(n, pos, jaxpr, batch, dep, defn, num_params, size):
    """The site of param operand `pos` of equation `n`, or None. size: the batch size."""
    eqn = jaxpr.eqns[n]
    name, p = eqn.primitive.name, eqn.params
    out = eqn.outvars[0].aval
    act = 1 - pos
    if len(eqn.outvars) != 1 or not out.shape:
        return None
    if name == "dot_general":
        return _dense_candidate(n, pos, jaxpr, batch, defn, num_params, size)
    if out.shape[0] != size:
        return None
    if name == "concatenate":
        return _concat_candidate(n, pos, jaxpr, batch, dep, defn)
    if len(eqn.invars) != 2:
        return None
    a = eqn.invars[act]
    if isinstance(a, jex.Literal) or not batch[a] or not a.aval.shape or a.aval.shape[0] != size:
        return None
    v = eqn.invars[pos]
    sig = (n, act, tuple(out.shape[1:]), tuple(getattr(v.aval, "shape", ()))[1:])
    if name == "conv_general_dilated":
        dn = p["dimension_numbers"]
        leaf = _chain_leaf(v, jaxpr, defn, num_params)
        ok = (
            pos == 1
            and leaf is not None
            and dn.lhs_spec[0] == 0
            and dn.out_spec[0] == 0
            and p["feature_group_count"] == 1
            and p["batch_group_count"] == 1
            and all(d == 1 for d in (*p["lhs_dilation"], *p["rhs_dilation"]))
            and not isinstance(p["padding"], str)
        )
        return ("conv", (leaf,), None, (), sig, {}) if ok else None
    if name == "gather":
        leaf = _chain_leaf(v, jaxpr, defn, num_params)
        return ("embed", (leaf,), None, (), sig, {}) if pos == 0 and _is_lookup(eqn) else None
    if name in ELEMENTWISE and _broadcasts_to(a.aval.shape, out.shape):
        shape = tuple(v.aval.shape)
        bcast, q = _batch_broadcast(v, jaxpr, defn) if shape else (None, None)
        if bcast is None:
            q = v
            if shape and (len(shape) != len(out.shape) or shape[0] != 1):
                return None
        if batch.get(q, False):
            return None
        sig = (*sig, tuple(getattr(q.aval, "shape", ())))
        return ELEMENTWISE[name], _bits(dep[v]), bcast, _slice(q, jaxpr, dep, defn), sig, {}
    return None


def _analyse(closed: jex.ClosedJaxpr, num_params: int, size: int, names: list[str]) -> dict:
    """{site key: (JaxprSite, signature)} of one flat jaxpr traced at batch `size`."""
    jaxpr = closed.jaxpr
    batch, dep, defn = _flow(jaxpr, num_params)
    uses: dict[int, set] = {i: set() for i in range(num_params)}
    for n, eqn in enumerate(jaxpr.eqns):
        if not any(batch.get(v, False) for v in eqn.invars if not isinstance(v, jex.Literal)):
            continue
        for pos, v in enumerate(eqn.invars):
            if not isinstance(v, jex.Literal) and not batch[v] and dep[v]:
                for i in _bits(dep[v]):
                    uses[i].add((n, pos))
    for v in jaxpr.outvars:
        if not isinstance(v, jex.Literal) and not batch[v]:
            for i in _bits(dep[v]):
                uses[i].add((-1, 0))
    found = {}
    for n, pos in {next(iter(u)) for u in uses.values() if len(u) == 1}:
        if n < 0:
            continue
        cand = _candidate(n, pos, jaxpr, batch, dep, defn, num_params, size)
        if cand is None:
            continue
        kind, leaves, bcast, slice_eqns, sig, extra = cand
        if not leaves or any(uses[i] != {(n, pos)} for i in leaves):
            continue
        key = "+".join(names[i] for i in leaves)
        out = jaxpr.eqns[n].outvars[0].aval
        site = JaxprSite(
            key,
            kind,
            n,
            extra.get("act", 1 - pos),
            leaves,
            tuple(out.shape),
            out.dtype,
            bcast,
            slice_eqns,
            extra.get("span"),
            extra.get("act_axis", 0),
            extra.get("out_axis", 0),
        )
        found[key] = (site, (kind, leaves, sig))
    return found


def find_sites(
    apply: Callable, params, state, images, exclude: Iterable[str] = ()
) -> tuple[tuple[JaxprSite, ...], tuple[int, ...], jex.ClosedJaxpr]:
    """The fast-rule sites of a pure-form model and the param leaves left to the fallback.

    Args:
      apply: `(params, state, images [B, ...]) -> logits [B, C]` of one model in eval mode.
      params, state: one model's pytrees (arrays, tracers or ShapeDtypeStructs).
      images: [B, ...] array or ShapeDtypeStruct.
      exclude: site keys to leave to the fallback (see `guard`).
    Returns:
      (sites, fallback leaf indices in `jax.tree.leaves(params)` order, the flat jaxpr at B whose
      equation indices the sites refer to).
    """
    batch = images.shape[0]
    names = leaf_names(params)
    num = len(names)
    closed = flat_jaxpr(apply, params, state, images)
    other_batch = 1 if batch > 1 else 2
    other_images = jax.ShapeDtypeStruct((other_batch, *images.shape[1:]), images.dtype)
    other = _analyse(flat_jaxpr(apply, params, state, other_images), num, other_batch, names)
    sites = []
    for key, (site, sig) in _analyse(closed, num, batch, names).items():
        if key in exclude or key not in other or other[key][1][:2] != sig[:2]:
            continue
        if other[key][1][2][1:] != sig[2][1:]:  # same operand and output shapes, eqn aside
            continue
        sites.append(site)
    covered = {i for s in sites for i in s.leaves}
    return tuple(sites), tuple(i for i in range(num) if i not in covered), closed
