"""Other formulations of a convolution's kernel gradient, measured by `bench_backward`.

Both give `dW[kh, kw, c, o] = sum_{b, h, w} x_pad[b, h*s + kh, w*s + kw, c] * g[b, h, w, o]` for
NHWC inputs and HWIO kernels without dilation or groups:
- 'offsets': one contraction over (b, h, w) per kernel offset, of a strided slice of the input
  and the output gradient (the form GraNd's per-example rule uses);
- 'gshift': the output gradient dilated by the strides and shifted to every offset, concatenated
  along the features, then one contraction with the input (`[C, B*H*W] x [B*H*W, k*k*O]`).
`with_kernel_grad(fn, form)` differentiates `fn` with every plain convolution's kernel gradient
computed that way (input gradients stay XLA's); 'xla' keeps XLA's and only adds the custom-VJP
indirection, to show what it costs.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from datadiet_jax.scores.pergrad import fast_pools, jaxpr_eval

FORMS = ("xla", "offsets", "gshift")
_DN = ("NHWC", "HWIO", "NHWC")


def conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)


def kernel_grad_offsets(x, g, ksize, strides, padding):
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    b, ho, wo, _ = g.shape
    out = []
    for i, j in itertools.product(range(ksize[0]), range(ksize[1])):
        limit = (b, i + (ho - 1) * strides[0] + 1, j + (wo - 1) * strides[1] + 1, x.shape[-1])
        piece = lax.slice(xp, (0, i, j, 0), limit, (1, *strides, 1))
        out.append(lax.dot_general(piece, g, (((0, 1, 2), (0, 1, 2)), ((), ()))))
    return jnp.stack(out).reshape(*ksize, x.shape[-1], g.shape[-1])


def kernel_grad_gshift(x, g, ksize, strides, padding):
    _, h, w, c = x.shape
    zero = jnp.zeros((), g.dtype)
    dilated = lax.pad(
        g, zero, ((0, 0, 0), (0, 0, strides[0] - 1), (0, 0, strides[1] - 1), (0, 0, 0))
    )
    hd, wd = dilated.shape[1:3]
    shifted = []
    for i, j in itertools.product(range(ksize[0]), range(ksize[1])):
        lo_h, lo_w = i - padding[0][0], j - padding[1][0]
        pads = ((0, 0, 0), (lo_h, h - hd - lo_h, 0), (lo_w, w - wd - lo_w, 0), (0, 0, 0))
        shifted.append(lax.pad(dilated, zero, pads))
    dw = lax.dot_general(x, jnp.concatenate(shifted, -1), (((0, 1, 2), (0, 1, 2)), ((), ())))
    return dw.reshape(c, *ksize, g.shape[-1]).transpose(1, 2, 0, 3)


KERNEL_GRADS = {"offsets": kernel_grad_offsets, "gshift": kernel_grad_gshift}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, form):
    return conv(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding, form):
    return conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, form, res, g):
    x, w = res
    dx = jax.vjp(lambda x: conv(x, w, strides, padding), x)[1](g)[0]
    if form == "xla":
        dw = jax.vjp(lambda w: conv(x, w, strides, padding), w)[1](g)[0]
    else:
        dw = KERNEL_GRADS[form](x, g, w.shape[:2], strides, padding)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def _plain(params) -> bool:
    dn = params["dimension_numbers"]
    return (
        params["feature_group_count"] == 1
        and params["batch_group_count"] == 1
        and all(d == 1 for d in (*params["lhs_dilation"], *params["rhs_dilation"]))
        and tuple(dn.lhs_spec) == (0, 3, 1, 2)
        and tuple(dn.rhs_spec) == (3, 2, 0, 1)
        and tuple(dn.out_spec) == (0, 3, 1, 2)
    )


def with_kernel_grad(fn, form: str):
    """`fn(arg)` with its plain convolutions' kernel gradients in `form`, max-pools as in
    training (`fast_pools`)."""

    def override(eqn, invals):
        if eqn.primitive.name == "conv_general_dilated" and _plain(eqn.params):
            strides = tuple(eqn.params["window_strides"])
            padding = tuple(map(tuple, eqn.params["padding"]))
            return [_conv(invals[0], invals[1], strides, padding, form)]
        return fast_pools.pool_override(eqn, invals)

    def wrapped(arg):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(arg)
        outs = jaxpr_eval.eval_inlined(closed.jaxpr, closed.consts, jax.tree.leaves(arg), override)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped
