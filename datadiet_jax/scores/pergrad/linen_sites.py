"""Where the fast per-example gradient-norm rules apply: finding the sites of a Flax Linen model.

A site is one call of a Dense, Conv or BatchNorm module whose parameters a rule in `rules`
covers. A call is a site only if all of these hold; every parameter of a call that fails one of
them is left to the exact `vmap(grad)` fallback:

1. The module and its configuration have a rule (`classify`): plain `nn.Dense`; `nn.Conv` of
   rank <= 3 without dilation, groups, mask or circular/reflect/causal padding; `nn.BatchNorm`
   with running statistics whose feature axes exclude the batch axis (batch statistics raise).
2. The module is called exactly once, at the top level (not inside a lifted transform such as
   `nn.scan` or `nn.remat`); modules sharing one scope count as one module.
3. Its input's and output's leading axis is the batch in abstract traces at two batch sizes (B
   and 1, or B and 2), so an axis that merely has the batch's size is rejected.
4. Each covered parameter reaches the logits only through this call (no weight tying): a forward
   dependence walk over the jaxpr, with each candidate call's output cut from its own
   parameters (`_cut_here`), can over-report a use (sending a parameter to the fallback), never
   miss one.

The checks use shapes and the jaxpr only (no values); what they cannot see is caught by `guard`.

Usage:

    apply_fn = lambda v, x: model.apply(v, x, train=False)
    sites, fallback = linen_sites.find_sites(apply_fn, one_seed_vars, images)
    # sites: LinenSite's (key 'Dense_0', kind, leaves, ...); fallback: ('params', ...) paths
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Iterable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.extend.core as jex
from absl import logging

ApplyFn = Callable[[Any, jax.Array], jax.Array]
ParamPath = tuple[str, ...]  # ('params', *module_path, leaf)


@dataclasses.dataclass(frozen=True)
class LinenSite:
    """One layer call whose parameters a fast rule covers.

    key: module path joined with '/' (the layer's name in messages); kind: 'dense' | 'conv' |
    'batchnorm'; path: the module's scope path; leaves: covered parameter names under `path`;
    out_shape/out_dtype: the call's output; conv: (kernel_size, strides, padding) of a
    convolution; feature_axes: a BatchNorm's feature axes (canonical, sorted).
    """

    key: str
    kind: str
    path: tuple[str, ...]
    leaves: tuple[str, ...]
    out_shape: tuple[int, ...]
    out_dtype: Any
    conv: tuple | None = None
    feature_axes: tuple[int, ...] | None = None

    @property
    def param_paths(self) -> tuple[ParamPath, ...]:
        return tuple(("params", *self.path, leaf) for leaf in self.leaves)


def _tuple(value, rank: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    if isinstance(value, int):
        return (value,) * rank
    return tuple(value)


def call_input(args, kwargs):
    """The first positional input of a layer call."""
    return args[0] if args else kwargs.get("inputs", kwargs.get("x"))


def batchnorm_feature_axes(module: nn.BatchNorm, ndim: int) -> tuple[int, ...]:
    return tuple(sorted(nn.normalization._canonicalize_axes(ndim, module.axis)))


def classify(module: nn.Module, args, kwargs) -> tuple[str, tuple[str, ...], dict] | None:
    """(kind, covered leaves, site config) if a fast rule covers this call, else None."""
    cls = type(module)
    x = call_input(args, kwargs)
    if not isinstance(x, jax.Array | jax.ShapeDtypeStruct) or x.ndim < 2:
        return None
    params = module.variables.get("params", {})
    if isinstance(module, nn.Dense) and cls.__call__ is nn.Dense.__call__:
        if module.dot_general is not None or module.dot_general_cls is not None:
            return None
        kernel = params.get("kernel")
        if kernel is None or kernel.shape != (x.shape[-1], module.features):
            return None
        return "dense", ("kernel", "bias") if module.use_bias else ("kernel",), {}
    if isinstance(module, nn.Conv) and cls.__call__ is nn.Conv.__call__:
        ksize = _tuple(module.kernel_size, 1)
        rank = len(ksize)
        padding = nn.linear.canonicalize_padding(module.padding, rank)
        ok = (
            rank <= 3
            and x.ndim == rank + 2
            and module.feature_group_count == 1
            and _tuple(module.input_dilation, rank) == (1,) * rank
            and _tuple(module.kernel_dilation, rank) == (1,) * rank
            and module.mask is None
            and module.conv_general_dilated is None
            and module.conv_general_dilated_cls is None
            and padding not in ("CIRCULAR", "REFLECT", "CAUSAL")
        )
        kernel = params.get("kernel")
        if not ok or kernel is None or kernel.shape != (*ksize, x.shape[-1], module.features):
            return None
        if not isinstance(padding, str):
            padding = tuple(tuple(p) for p in padding)
        leaves = ("kernel", "bias") if module.use_bias else ("kernel",)
        return "conv", leaves, {"conv": (ksize, _tuple(module.strides, rank), padding)}
    if isinstance(module, nn.BatchNorm) and cls.__call__ is nn.BatchNorm.__call__:
        use_ra = args[1] if len(args) > 1 else kwargs.get("use_running_average")
        use_ra = nn.merge_param("use_running_average", module.use_running_average, use_ra)
        if not use_ra:
            raise ValueError(
                f"BatchNorm {'/'.join(module.path)} uses batch statistics, which mixes examples; "
                "call the model with train=False (running statistics) to compute scores."
            )
        axes = batchnorm_feature_axes(module, x.ndim)
        if 0 in axes:
            return None
        leaves = tuple(
            name for name, used in (("scale", module.use_scale), ("bias", module.use_bias)) if used
        )
        return "batchnorm", leaves, {"feature_axes": axes}
    return None


@dataclasses.dataclass
class _Call:
    kind: tuple | None  # classify() result, None when no rule applies
    path: tuple[str, ...]
    leads: tuple  # (input leading dim, output leading dim), None where not an array
    out: tuple | None  # (shape, dtype)


def _cut_here(out, x):
    """Marker for the dependence walk: a candidate call's output `out`, computed from `x`."""
    del x
    return out


_CUT = jax.jit(_cut_here)


def _trace(apply_fn: ApplyFn, variables, batch: int, image_shape, image_dtype):
    """Traces the model at `batch`; returns ({module key: [_Call]}, closed jaxpr, param paths)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
    paths = list(flat)
    spec = lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype)  # noqa: E731
    leaves = [spec(flat[p]) for p in paths]
    others = {k: jax.tree.map(spec, v) for k, v in variables.items() if k != "params"}
    images = jax.ShapeDtypeStruct((batch, *image_shape), image_dtype)
    calls: dict[str, list[_Call]] = {}
    top = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        module = context.module
        kind = classify(module, args, kwargs)
        x = call_input(args, kwargs)
        # Calls inside lifted transforms (scan, remat, ...) run under another trace; their
        # values cannot be captured from outside, so their params use the fallback.
        if getattr(out, "_trace", None) is not top["trace"] or not hasattr(out, "shape"):
            kind = None
        leads = tuple(v.shape[0] if getattr(v, "ndim", 0) else None for v in (x, out))
        shape = (tuple(out.shape), out.dtype) if hasattr(out, "shape") else None
        key = "/".join(module.path)
        calls.setdefault(key, []).append(_Call(kind, tuple(module.path), leads, shape))
        return _CUT(out, x) if kind is not None else out

    def traced(param_leaves, others, x):
        top["trace"] = getattr(x, "_trace", None)
        params = flax.traverse_util.unflatten_dict(dict(zip(paths, param_leaves, strict=True)))
        with nn.intercept_methods(interceptor):
            return apply_fn({**others, "params": params}, x)

    jaxpr = jax.make_jaxpr(traced)(leaves, others, images)
    return calls, jaxpr, [("params", *p) for p in paths]


def _dependence(jaxpr, in_masks: list[int]) -> list[int]:
    """Bit masks of the inputs each output depends on, cut at `_cut_here` markers."""
    env = dict(zip(jaxpr.invars, in_masks, strict=True))

    def read(v):
        return 0 if isinstance(v, jex.Literal) else env.get(v, 0)

    for eqn in jaxpr.eqns:
        masks = [read(v) for v in eqn.invars]
        inner = eqn.params.get("jaxpr")
        if eqn.primitive.name in ("jit", "pjit") and isinstance(inner, jex.ClosedJaxpr):
            if eqn.params.get("name") == _cut_here.__name__:  # depends on x, not the params
                outs = [masks[1]]
            else:
                outs = _dependence(inner.jaxpr, masks)
        else:
            outs = [functools.reduce(operator.or_, masks, 0)] * len(eqn.outvars)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _follows_batch(entries: list[_Call], batch: int) -> bool:
    return len(entries) == 1 and entries[0].kind is not None and entries[0].leads == (batch,) * 2


def find_sites(
    apply_fn: ApplyFn, variables, images, exclude: Iterable[str] = ()
) -> tuple[tuple[LinenSite, ...], tuple[ParamPath, ...]]:
    """The fast-rule sites of a model and the parameters left to the exact fallback.

    Args:
      apply_fn: `(variables, images [B, ...]) -> logits [B, C]` in eval mode.
      variables: one model's variables (arrays, tracers or ShapeDtypeStructs).
      images: [B, ...] array or ShapeDtypeStruct (only its shape and dtype are used).
      exclude: site keys (module paths joined with '/') to leave to the fallback.
    Returns:
      (sites, fallback): the sites, and the `('params', ...)` paths of every parameter no site
      covers, in `flatten_dict` order.
    """
    batch, shape, dtype = images.shape[0], tuple(images.shape[1:]), images.dtype
    try:
        calls, jaxpr, paths = _trace(apply_fn, variables, batch, shape, dtype)
        other_batch = 1 if batch > 1 else 2
        other, _, _ = _trace(apply_fn, variables, other_batch, shape, dtype)
    except (jax.errors.UnexpectedTracerError, jax.errors.TracerArrayConversionError) as err:
        logging.warning("Per-layer capture failed (%s); using vmap(grad) for all params.", err)
        paths = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
        return (), tuple(("params", *p) for p in paths)
    num = len(paths)
    masks = [1 << i for i in range(num)] + [0] * (len(jaxpr.jaxpr.invars) - num)
    reach = functools.reduce(operator.or_, _dependence(jaxpr.jaxpr, masks), 0)
    index = {p: i for i, p in enumerate(paths)}
    sites = []
    for key, entries in calls.items():
        if key in exclude or not _follows_batch(entries, batch):
            continue
        if not _follows_batch(other.get(key, []), other_batch):
            continue
        call = entries[0]
        if other[key][0].kind[0] != call.kind[0]:
            continue
        kind, leaves, config = call.kind
        # A parameter the logits depend on other than through this call is tied (used twice).
        leaves = tuple(
            leaf
            for leaf in leaves
            if ("params", *call.path, leaf) in index
            and not (reach >> index[("params", *call.path, leaf)]) & 1
        )
        tied = [leaf for leaf in call.kind[1] if leaf not in leaves]
        if tied:
            logging.info("GraNd: %s/%s is used outside its layer; exact fallback.", key, tied)
        if leaves:
            sites.append(LinenSite(key, kind, call.path, leaves, *call.out, **config))
    covered = {p for s in sites for p in s.param_paths}
    return tuple(sites), tuple(p for p in paths if p not in covered)
