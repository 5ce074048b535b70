"""Evaluating a jaxpr equation by equation, with nested jit calls inlined and an override hook.

Used to re-trace a model's program with some equations replaced (`fast_pools`: non-overlapping
max-pools by a cheaper-to-differentiate block max) or just flattened (`jaxpr_sites`: one flat
jaxpr whose parameter uses can be followed). An `Override`, `(eqn, invals) -> outputs or None`,
may compute an equation's outputs itself.

Usage:

    closed = jax.make_jaxpr(fn)(x)
    outs = jaxpr_eval.eval_inlined(closed.jaxpr, closed.consts, [x], override=None)  # a list
"""

from __future__ import annotations

from collections.abc import Callable

import jax.extend.core as jex

# override(eqn, invals) -> list of output values, or None to evaluate the equation as it is.
Override = Callable[[object, list], list | None]


def eval_inlined(jaxpr, consts, args, override: Override | None = None) -> list:
    """Evaluates `jaxpr` on `args`, inlining `jit`/`pjit` calls (recursively).

    Args:
      jaxpr: an open `Jaxpr`; consts: its constants; args: one value per input variable.
      override: optional hook that may return an equation's outputs itself.

    Returns:
      The output values, one per output variable. Traced under a transform, this gives a flat
      program: the nested calls' equations appear in line.
    """
    env = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inner = eqn.params.get("jaxpr")
        outvals = override(eqn, invals) if override else None
        if outvals is not None:
            pass
        elif eqn.primitive.name in ("jit", "pjit") and isinstance(inner, jex.ClosedJaxpr):
            outvals = eval_inlined(inner.jaxpr, inner.consts, invals, override)
        else:
            with eqn.ctx.manager:
                outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = outvals if eqn.primitive.multiple_results else [outvals]
        env.update(
            (v, val)
            for v, val in zip(eqn.outvars, outvals, strict=True)
            if not isinstance(v, jex.DropVar)
        )
    return [read(v) for v in jaxpr.outvars]
