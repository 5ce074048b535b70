"""Penultimate features: the input of a model's last linear layer, for K stacked seeds at once.

The feature of an example is the classifier's input (the embedding DeepCore's k-center greedy
and herding, Moderate-DS and D2 pruning work on), in eval mode as for the scores. The layer is
found with GraNd's site capture, so any model `model_form.from_pair` takes works: for Linen the
last `nn.Dense` call that GraNd's fast rule covers (`pergrad.linen_sites`), its input captured by
module interception; for NNX models and functions the last 'dense' site of the flat jaxpr
(`pergrad.jaxpr_sites`), batch axis first. A layer input with more than one axis per example
(tokens [B, T, F]) is flattened to [B, T * F]. A model whose last matrix product has no fast-rule
site (a weight used twice, a custom `dot_general`) is refused. Batches stream as in `api`, and a
model whose outputs depend on the rest of its batch is refused on the first batch
(`batch_check`).

Usage:

    feats = penultimate_features(model, variables, images)   # [K, N, D] float32
    feats = penultimate_features(model, variables, ((x, y) for x, y in batches))  # streamed
"""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from datadiet_jax.scores import api, batch_check, batches, decisions, programs
from datadiet_jax.scores import model_form as model_form_lib
from datadiet_jax.scores import seed_axis as seed_axis_lib
from datadiet_jax.scores.pergrad import jaxpr_eval, jaxpr_sites, linen_sites
from datadiet_jax.scores.sharding import Placement


def _flat(x: jax.Array) -> jax.Array:
    return jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)


def _linen_layer(adapted, one, spec):
    """The path of the last Dense call of a Linen model that a fast rule covers, or None."""
    sites, _ = linen_sites.find_sites(programs.linen_apply(adapted), one, spec)
    dense = [s for s in sites if s.kind == "dense"]
    return dense[-1].path if dense else None


def _linen_features(adapted, path, one, images):
    """Input [B, D] of the Linen module at `path` in one model's eval-mode call."""
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and tuple(context.module.path) == path:
            captured["x"] = linen_sites.call_input(args, kwargs)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        programs.linen_apply(adapted)(one, images)
    return _flat(captured["x"])


def _jaxpr_layer(adapted, one, spec):
    """(flat jaxpr, its last 'dense' site) of a pure-form model, or (jaxpr, None)."""
    sites, _, closed = jaxpr_sites.find_sites(adapted.logits, one["params"], one["state"], spec)
    dense = [s for s in sites if s.kind == "dense"]
    return closed, max(dense, key=lambda s: s.eqn) if dense else None


def _jaxpr_features(closed, site, one, images):
    """Batch operand [B, D] of `site`'s equation while evaluating the flat jaxpr on `images`."""
    target = closed.jaxpr.eqns[site.eqn]
    captured = {}

    def override(eqn, invals):
        if eqn is target:
            captured["x"] = jnp.moveaxis(invals[site.act], site.act_axis, 0)
        return None

    args = [*jax.tree.leaves(one["params"]), *jax.tree.leaves(one["state"]), images]
    jaxpr_eval.eval_inlined(closed.jaxpr, closed.consts, args, override)
    return _flat(captured["x"])


def _program(adapted, one, spec, seed_axis):
    """`(stacked variables, images [B, ...]) -> [K, B, D]` float32, jitted."""
    if isinstance(adapted, model_form_lib.LinenModel):
        path = _linen_layer(adapted, one, spec)
        per_seed = path and functools.partial(_linen_features, adapted, path)
    else:
        closed, site = _jaxpr_layer(adapted, one, spec)
        per_seed = site and functools.partial(_jaxpr_features, closed, site)
    if not per_seed:
        raise ValueError(
            "no last linear layer found: the model has no Dense/matmul of a param that GraNd's "
            "fast rule covers (a tied or custom-dot_general classifier); pass a model whose "
            "classifier is a plain Dense/Linear layer or `x @ W`."
        )
    return jax.jit(lambda v, x: seed_axis_lib.over_seeds(lambda o: per_seed(o, x), seed_axis)(v))


def penultimate_features(
    model: Any,
    variables,
    inputs,
    labels=None,
    *,
    batch_size: int = 256,
    seed_axis: str | None = None,
    integer_inputs: bool = False,
) -> np.ndarray:
    """The input of the model's last linear layer (the classifier's input), per seed, eval mode.

    Args:
      model, variables: as in `api.el2n_scores` (a Linen module and its stacked variables, an NNX
        graphdef and stacked state, or `apply_fn` and stacked params), K seeds stacked.
      inputs: [N, ...] array (normalized as the model expects), or an iterable of
        `(inputs [b, ...], labels [b])` batches as in `el2n_scores`.
      labels: [N] int labels of an inputs array, only checked (the features do not use them);
        None is allowed for an array too. Omitted for an iterable.
      batch_size: examples per compiled step (the last batch is padded and masked).
      seed_axis: 'unroll', 'vmap' or 'map', as in `el2n_scores`.
      integer_inputs: the inputs are integer token ids (see `el2n_scores`).
    Returns:
      features: [K, N, D] float32, in example order; D is the last linear layer's input width
        (its per-example input flattened).
    Raises:
      ValueError: as `el2n_scores`, or a model whose last linear layer cannot be found.
    """
    seed_axis = seed_axis_lib.resolve(seed_axis)
    adapted, packed = model_form_lib.from_pair(model, variables)
    if labels is None and not batches.is_stream(inputs):
        labels = np.zeros(np.shape(inputs)[0], np.int32)  # only the features are computed
    check_model = api.model_check(adapted, packed)
    source, num_seeds, total = batches.input_batches(
        check_model, inputs, labels, batch_size, seed_axis, integer_inputs
    )
    placed = jax.device_put(packed)
    source = iter(source)
    head = next(source)  # every input has at least one example (checked)
    start = time.perf_counter()
    batch_check.check_once("features", adapted, seed_axis, Placement(), placed, head)
    decisions.add_setup_seconds(time.perf_counter() - start)
    one = jax.tree.map(lambda v: v[0], packed)
    spec = jax.ShapeDtypeStruct(head[0].shape, head[0].dtype)
    fn = _program(adapted, one, spec, seed_axis)
    out = None
    pending = None
    for x, _, _, count in itertools.chain([head], source):
        result = fn(placed, jnp.asarray(x))  # dispatched asynchronously
        if out is None:
            out = batches.ResultBuffer(num_seeds, total, trailing=result.shape[2:])
        if pending is not None:
            out.append(np.asarray(pending[1])[:, : pending[0]])
        pending = (count, result)
    out.append(np.asarray(pending[1])[:, : pending[0]])
    features = out.result()
    if not np.isfinite(features).all():
        seed, idx = (int(a[0]) for a in np.nonzero(~np.isfinite(features))[:2])
        raise ValueError(
            f"features are NaN or inf for seed {seed}, example {idx}; check that example and "
            "the model weights (e.g. diverged training)."
        )
    return features
