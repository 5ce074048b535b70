"""Exact per-example gradient norms of any pure-form JAX model from one backward pass.

The pure-form counterpart of `linen_norms`: for `apply(params, state, images) -> logits` (see
`model_form/`), `jaxpr_sites.find_sites` finds the equations of the model's flat jaxpr that a
rule covers. The flat jaxpr is then evaluated with a zero perturbation added to each site's output
and its batch operand captured; ONE backward pass of the summed per-example losses w.r.t. the
perturbations gives every site's per-example output gradient `g_i`. 'dense', 'conv' and 'embed'
sites then use the `rules` on the captured operand (its batch, contraction and feature axes moved
where the rules expect them); 'scale', 'shift' and 'concat' pull `g_i * a_i` (or `g_i`, or its
slice) back to the param leaves through the broadcast value's own batch-free function, one small
vector-Jacobian product per example. Param leaves no site covers get exact per-example gradients
from `vmap(grad)` (`fallback.pure_leaf_sq_norms`); `exact_site_sq_norms` is the guard's reference.

Usage:

    form, packed = model_form.from_pair(model, variables)   # stacked over K
    one = jax.tree.map(lambda v: v[0], packed)
    norms, per_site = norms_and_site_sq_norms(form.logits, one, images, labels)  # [B]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import jax
import jax.extend.core as jex
import jax.numpy as jnp

from datadiet_jax.scores.losses import cross_entropy
from datadiet_jax.scores.pergrad import fallback, fast_pools, jaxpr_sites, rules
from datadiet_jax.scores.pergrad.jaxpr_sites import JaxprSite

PureApply = Callable  # (params, state, images [B, ...]) -> logits [B, C]


def _read(env, v):
    return v.val if isinstance(v, jex.Literal) else env[v]


def _bind(eqn, invals):
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return out if eqn.primitive.multiple_results else [out]


def _param_var(jaxpr, site: JaxprSite):
    """The batch-free value a 'scale'/'shift' site broadcasts (before any broadcast_in_dim)."""
    if site.param_var_eqn is not None:
        return jaxpr.eqns[site.param_var_eqn].invars[0]
    return jaxpr.eqns[site.eqn].invars[1 - site.act]


def _external(jaxpr, site: JaxprSite) -> list:
    """Vars the site's slice reads that it does not compute and that are not its param leaves."""
    made = {v for n in site.slice_eqns for v in jaxpr.eqns[n].outvars}
    leaves = {jaxpr.invars[i] for i in site.leaves}
    ext = []
    for n in site.slice_eqns:
        for v in jaxpr.eqns[n].invars:
            if not isinstance(v, jex.Literal) and v not in made and v not in leaves:
                if v not in ext:
                    ext.append(v)
    q = _param_var(jaxpr, site)
    if not site.slice_eqns and q not in leaves and not isinstance(q, jex.Literal):
        ext.append(q)  # q does not depend on the leaves: cannot happen for a site, kept safe
    return ext


def _evaluate(closed: jex.ClosedJaxpr, args, sites, eps):
    """Evaluates the flat jaxpr with `eps[key]` added to each site's output.

    Returns: (logits, {site key: {'a': batch operand, 'ext': values the site's slice reads}}).
    """
    jaxpr = closed.jaxpr
    by_eqn = {s.eqn: s for s in sites}
    env = dict(zip(jaxpr.constvars, closed.consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    captured = {}
    for n, eqn in enumerate(jaxpr.eqns):
        invals = [_read(env, v) for v in eqn.invars]
        outvals = _bind(eqn, invals)
        site = by_eqn.get(n)
        if site is not None:
            captured[site.key] = {"a": jax.lax.stop_gradient(invals[site.act])}
            outvals = [outvals[0] + eps[site.key]]
        env.update(
            (v, val)
            for v, val in zip(eqn.outvars, outvals, strict=True)
            if not isinstance(v, jex.DropVar)
        )
    for s in sites:
        if s.kind in ("scale", "shift", "concat"):
            captured[s.key]["ext"] = [jax.lax.stop_gradient(env[v]) for v in _external(jaxpr, s)]
    return _read(env, jaxpr.outvars[0]), captured


def _dense_sq_norm(eqn, site: JaxprSite, a, g):
    """`dot_general` of the activation `a` (operand `site.act`, batch axis `site.act_axis`) and
    a param. The output's axes are the left operand's free axes, then the right one's: a param
    on the left puts its free axes first and the batch at `site.out_axis`. -> [B] float32."""
    contract = eqn.params["dimension_numbers"][0][site.act]
    free = [d for d in range(a.ndim) if d not in contract]  # the batch axis among them
    first = 0 if site.act == 0 else g.ndim - len(free)  # a's free axes in the output
    w_axes = [d for d in range(g.ndim) if not first <= d < first + len(free)]
    others = [(d, first + k) for k, d in enumerate(free) if d != site.act_axis]
    b, t = a.shape[site.act_axis], math.prod(a.shape[d] for d, _ in others)
    a2 = jnp.transpose(a, (site.act_axis, *(d for d, _ in others), *contract))
    g2 = jnp.transpose(g, (site.out_axis, *(o for _, o in others), *w_axes))
    return rules.matmul_sq_norm(a2.reshape(b, t, -1), g2.reshape(b, t, -1))


def _conv_sq_norm(eqn, a, g):
    p = eqn.params
    dn = p["dimension_numbers"]
    x = jnp.transpose(a, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    g = jnp.transpose(g, (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1]))
    kernel = eqn.invars[1].aval.shape
    ksize = tuple(kernel[d] for d in dn.rhs_spec[2:])
    padding = tuple(tuple(pad) for pad in p["padding"])
    return rules.conv_sq_norm(x, g, ksize, tuple(p["window_strides"]), padding)


def _embed_sq_norm(eqn, ids, g):
    table = eqn.invars[0].aval.shape
    clip = eqn.params["mode"] != jax.lax.GatherScatterMode.FILL_OR_DROP
    b = ids.shape[0]
    return rules.embed_sq_norm(ids.reshape(b, -1), g.reshape(b, -1, table[1]), table[0], clip)


def _row(jaxpr, site: JaxprSite, value, row_shape):
    """One example's row of the broadcast operand, made from the batch-free value."""
    if site.param_var_eqn is None:
        return jnp.broadcast_to(value, row_shape)
    src = jaxpr.eqns[site.param_var_eqn]
    if src.primitive.name == "tile":
        return jnp.tile(value, (1, *src.params["reps"][1:]))
    return jax.lax.broadcast_in_dim(value, row_shape, src.params["broadcast_dimensions"])


def _elementwise_sq_norm(jaxpr, site: JaxprSite, leaves, cap, g):
    """'scale'/'shift'/'concat': per-example cotangents pulled back through the broadcast value."""
    ext_vars = _external(jaxpr, site)
    q = _param_var(jaxpr, site)
    row_shape = (1, *site.out_shape[1:])
    if site.span is not None:  # 'concat': the operand's part of the output gradient
        axis, start, stop = site.span
        g = jax.lax.slice_in_dim(g, start, stop, axis=axis)
        row_shape = (1, *g.shape[1:])

    def row(vals):
        env = dict(zip(ext_vars, cap["ext"], strict=True))
        env.update((jaxpr.invars[i], v) for i, v in zip(site.leaves, vals, strict=True))
        for n in site.slice_eqns:
            eqn = jaxpr.eqns[n]
            outs = _bind(eqn, [_read(env, v) for v in eqn.invars])
            env.update(zip(eqn.outvars, outs, strict=True))
        return _row(jaxpr, site, _read(env, q), row_shape)

    primal, vjp_fn = jax.vjp(row, [leaves[i] for i in site.leaves])
    ct = g * cap["a"].astype(jnp.float32) if site.kind == "scale" else g
    grads = jax.vmap(lambda c: vjp_fn(c[None].astype(primal.dtype))[0])(ct)
    return sum(jnp.sum(x.astype(jnp.float32).reshape(x.shape[0], -1) ** 2, axis=1) for x in grads)


def site_sq_norms(
    apply: PureApply, variables, images, labels, mask=None, *, exclude: Iterable[str] = ()
) -> tuple[dict[str, jax.Array], tuple[int, ...]]:
    """Per-site per-example squared norms of the cross-entropy gradient, by the fast rules.

    Args: as `norms_and_site_sq_norms`.
    Returns:
      ({site key: [B] float32}, fallback param leaf indices no site covers).
    """
    params, state = variables["params"], variables["state"]
    sites, leftover, closed = jaxpr_sites.find_sites(apply, params, state, images, exclude)
    if not sites:
        return {}, leftover
    leaves = jax.tree.leaves(params)
    args = [*leaves, *jax.tree.leaves(state), images]
    weight = fallback.example_weights(labels, mask)
    eps = fallback.vary_like(
        {s.key: jnp.zeros(s.out_shape, s.out_dtype) for s in sites}, images, variables
    )

    def summed(eps):
        logits, captured = _evaluate(closed, args, sites, eps)
        return jnp.sum(cross_entropy(logits, labels) * weight), captured

    grads, captured = jax.grad(fast_pools.with_fast_pools(summed), has_aux=True)(eps)
    norms = {}
    for s in sites:
        eqn = closed.jaxpr.eqns[s.eqn]
        g = grads[s.key].astype(jnp.float32)
        a = captured[s.key]["a"]
        if s.kind == "embed":
            norms[s.key] = _embed_sq_norm(eqn, a, g)
        elif s.kind == "dense":
            norms[s.key] = _dense_sq_norm(eqn, s, a.astype(jnp.float32), g)
        elif s.kind == "conv":
            norms[s.key] = _conv_sq_norm(eqn, a.astype(jnp.float32), g)
        else:
            norms[s.key] = _elementwise_sq_norm(closed.jaxpr, s, leaves, captured[s.key], g)
    return norms, leftover


def norms_and_site_sq_norms(
    apply: PureApply, variables, images, labels, mask=None, *, exclude: Iterable[str] = ()
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Exact per-example gradient norms of a pure-form model, and the per-site parts.

    Args:
      apply: `(params, state, images [B, ...]) -> logits [B, C]` in eval mode (no equation may
        mix examples).
      variables: `{'params': ..., 'state': ...}` of one model (no seed axis); every params leaf
        is differentiated, state is constant.
      images: [B, ...] float; labels: [B] int in [0, C); mask: optional [B] {0, 1}.
      exclude: site keys whose leaves go to the `vmap(grad)` fallback.
    Returns:
      (norms [B] float32, {site key: [B] float32 squared norm of the site's leaves}).
    """
    norms, leftover = site_sq_norms(apply, variables, images, labels, mask, exclude=exclude)
    total = sum(norms.values(), jnp.zeros(labels.shape, jnp.float32))
    if leftover:
        exact = fallback.pure_leaf_sq_norms(apply, variables, images, labels, leftover)
        total = total + sum(exact.values()) * fallback.example_weights(labels, mask)
    return jnp.sqrt(total), norms


def exact_site_sq_norms(apply: PureApply, variables, images, labels):
    """Each site's per-example squared norm by `vmap(grad)` (the guard's reference).

    Args: as `norms_and_site_sq_norms`, for the m examples to check.
    Returns:
      ({site key: exact [m]}, total [m]) float32, `total` over all params.
    """
    sites, _, _ = jaxpr_sites.find_sites(apply, variables["params"], variables["state"], images)
    leaves = fallback.pure_leaf_sq_norms(apply, variables, images, labels)
    exact = {s.key: sum(leaves[i] for i in s.leaves) for s in sites}
    return exact, sum(leaves.values())
