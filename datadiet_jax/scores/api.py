"""Per-example data-pruning scores (EL2N and GraNd) for K stacked initializations at once.

EL2N of an example is `||softmax(logits) - onehot(label)||_2`; GraNd is the L2 norm of the gradient
of its cross-entropy loss with respect to ALL trainable parameters ('params'; BatchNorm statistics
and other collections are constants). Both use the model in eval mode (`train=False`, BatchNorm with
running statistics), as the authors did. At initialization eval-mode BatchNorm is the identity, and
GraNd there mostly tracks the input norm (an independent reproduction found it no better than
random): average several seeds and prefer scores from a few epochs into training. A model whose
logits for one example depend on the rest of its batch (batch statistics) is refused on the
first batch (`batch_check.py`); images that do not fit the model are refused naming the layer
that refuses them (`image_fit.py`).

The K models are one pytree with a leading seed axis. Data are streamed from host memory in
fixed-size padded batches with a mask (`batches.py`), so shapes never change, nothing
recompiles, and device memory does not depend on N; the input is arrays or a stream of batches,
checked alike (`inputs.py`). GraNd is exact and computed from one batched backward pass per batch
(see `pergrad/`), not by materializing per-example gradients; on the first batch, a guard checks
every fast layer rule against `vmap(grad)` for each seed and sends a layer that disagrees to the
exact fallback (`pergrad/guard.py`). Images must be float (normalized as the model expects);
integer images are refused rather than silently cast, unless `integer_inputs=True` says that they
are token ids of a model whose first layer is an embedding (its table's per-example gradient is
exact by the `vmap(grad)` fallback: no fast rule covers a lookup).

Models of any framework meet the library through `model_form.from_pair`, which turns a Flax
Linen `(module, variables)`, a Flax NNX `nnx.split(module)`, a plain `(apply_fn, params)` or a
trained model form with its `{'params', 'state'}` into one form (`model_form/`). Linen layers
find their fast GraNd rules by module interception (`pergrad/linen_sites.py`), other models by
their jaxpr (`pergrad/jaxpr_sites.py`); both share the rules (`pergrad/rules.py`), the
`vmap(grad)` fallback and the guard.

Usage:

    model = get_model('small_cnn', num_classes=10)
    variables = init_variables(model, jax.random.key(0), num_seeds=4, sample_input=images[:1])
    el2n = el2n_scores(model, variables, images, labels)    # [4, N] float32
    grand = grand_scores(model, variables, images, labels)  # [4, N] float32
    keep = np.argsort(-grand.mean(axis=0))[: len(images) // 2]
    # Or streamed, without holding the dataset: any iterable of (images, labels) batches.
    el2n = el2n_scores(model, variables, ((x, y) for x, y in batches))  # [4, N]
    # Flax NNX (K seeds from nnx.vmap over a constructor) and plain functions:
    grand = grand_scores(*nnx.split(nnx_model), images, labels)       # [K, N]
    grand = grand_scores(apply_fn, stacked_params, images, labels)    # apply_fn(params, x)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from datadiet_jax.scores import batch_check, batches, inputs, uncertainty
from datadiet_jax.scores import model_form as model_form_lib
from datadiet_jax.scores import seed_axis as seed_axis_lib
from datadiet_jax.scores.pergrad import fallback, guard, jaxpr_norms, linen_norms, plan
from datadiet_jax.scores.progress import Progress


def _linen_apply(form: model_form_lib.ModelForm):
    """`(variables {'params', 'state'}, images) -> logits`, the form `linen_norms` expects."""
    return lambda v, images: form.logits(v["params"], v["state"], images)


def init_variables(model: nn.Module, key: jax.Array, num_seeds: int, sample_input) -> Any:
    """Initializes `num_seeds` models stacked on a leading seed axis.

    Args:
      model: a Flax Linen module (its mode flag found as `model_form.LinenModel` finds it).
      key: PRNG key; seed k is initialized with `jax.random.split(key, num_seeds)[k]`.
      num_seeds: K >= 1.
      sample_input: [b, ...] example batch fixing the input shape (e.g. `images[:1]`).
    Returns:
      variables: the `model.init` pytree with every leaf of shape [K, ...].
    """
    if int(num_seeds) < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}; pass a positive seed count.")
    kwargs = model_form_lib.LinenModel.of(model).mode_kwargs(False)
    sample = jnp.asarray(sample_input)
    keys = jax.random.split(key, int(num_seeds))
    return jax.jit(lambda ks: jax.lax.map(lambda k: model.init(k, sample, **kwargs), ks))(keys)


def _per_seed_scores(model, kind, method, exclude, variables, images, labels, mask):
    """Scores of one model on one batch. images: [B, ...], labels/mask: [B].

    model: a `model_form.ModelForm`; variables: one seed's `{'params', 'state'}`.
    method: GraNd's method (`pergrad.plan.METHODS`); exclude: GraNd layers (site keys) the guard
    sent to the exact fallback.
    Returns ([B] float32 scores, {site key: [B]} GraNd per-layer squared norms; {} for EL2N).
    """
    if kind in uncertainty.LOGIT_SCORES:  # one forward pass: EL2N, the loss, the uncertainties
        logits = model.logits(variables["params"], variables["state"], images)
        return uncertainty.LOGIT_SCORES[kind](logits, labels), {}
    if method == "linen_sites":
        return linen_norms.norms_and_site_sq_norms(
            _linen_apply(model), variables, images, labels, mask, exclude=exclude
        )
    if method == "vmap_grad":
        exact = fallback.pure_leaf_sq_norms(model.logits, variables, images, labels)
        return jnp.sqrt(sum(exact.values()) * fallback.example_weights(labels, mask)), {}
    return jaxpr_norms.norms_and_site_sq_norms(
        model.logits, variables, images, labels, mask, exclude=exclude
    )


def _batch_scores(model, kind, method, seed_axis, exclude, variables, images, labels, mask):
    """Scores of K stacked models on one batch -> ([K, B] float32, {site key: [K, B]}).

    seed_axis (see `seed_axis.resolve`): 'unroll' runs the seeds one after another inside the
    jit (the CPU default; a `lax.map` loop ran ResNet18 about 2x slower than separate calls);
    'vmap' batches the seeds (the GPU/TPU default); 'map' loops with `lax.map`.
    """
    per_seed = functools.partial(_per_seed_scores, model, kind, method, exclude)
    if jax.tree.leaves(variables)[0].shape[0] == 1:  # one seed: no loop or batching needed
        one = jax.tree.map(lambda v: v[0], variables)
        return jax.tree.map(lambda a: a[None], per_seed(one, images, labels, mask))
    return seed_axis_lib.over_seeds(lambda v: per_seed(v, images, labels, mask), seed_axis)(
        variables
    )


def _build(model, kind, seed_axis, mesh, exclude=frozenset(), method=None):
    method = method or default_method(model)

    def local(variables, images, labels, mask):
        args = (variables, images, labels, mask)
        return _batch_scores(model, kind, method, seed_axis, exclude, *args)

    if mesh is None:
        return jax.jit(local)
    from datadiet_jax.scores import sharding

    return sharding.shard_scores_fn(local, mesh)


_build_cached = functools.lru_cache(maxsize=32)(_build)


def _cached(build, cached, *args):
    try:
        return cached(*args)
    except TypeError:  # an unhashable module: build it for this call only
        return build(*args)


def default_method(model: model_form_lib.ModelForm) -> str:
    """GraNd's site finder when none was chosen: module interception for Linen, else the jaxpr."""
    return "linen_sites" if isinstance(model, model_form_lib.LinenModel) else "jaxpr_sites"


def batch_program(
    model: model_form_lib.ModelForm,
    kind: str,
    seed_axis: str,
    mesh=None,
    exclude=frozenset(),
    method=None,
):
    """The jitted batch function of a score, cached across calls.

    Args:
      model: a `model_form.ModelForm`; kind: 'el2n' or 'grand'; seed_axis: a resolved mode;
      mesh: a ('seed', 'data') mesh or None; exclude: GraNd site keys left to the fallback;
      method: GraNd's method (`pergrad.plan.METHODS`; default `default_method(model)`).
    Returns:
      `(variables [K, ...], images [B, ...], labels [B], mask [B]) -> ([K, B] float32 scores,
      {site key: [K, B]} GraNd per-site squared norms; {} for EL2N)`.
    """
    return _cached(_build, _build_cached, model, kind, seed_axis, mesh, exclude, method)


def _build_exact(model, method=None):
    if (method or default_method(model)) == "linen_sites":
        return jax.jit(functools.partial(guard.exact_layer_sq_norms, _linen_apply(model)))
    return jax.jit(functools.partial(jaxpr_norms.exact_site_sq_norms, model.logits))


_exact_cached = functools.lru_cache(maxsize=32)(_build_exact)


def exact_program(model: model_form_lib.ModelForm, method=None):
    """The jitted guard reference of a model (see `guard`) for the sites of `method` (a
    `pergrad.plan.SITES_METHODS` entry, default `default_method(model)`), cached across calls:
    `(variables of one seed, images [m, ...], labels [m]) -> ({site key: [m]}, total [m])`."""
    return _cached(_build_exact, _exact_cached, model, method)


def clear_programs() -> None:
    """Forgets every cached compiled program (e.g. after a rule was changed for a test)."""
    _build_cached.cache_clear()
    _exact_cached.cache_clear()
    batch_check.clear_programs()


def _guard(model, method, seed_axis, mesh, variables, placed, first_batch, put, fetch):
    """Checks GraNd's layer rules on the first batch of every seed (see `pergrad/guard.py`).

    Args: the call's arguments; `method` the site finder (`pergrad.plan.SITES_METHODS`);
      `variables` as given (host), `placed` on the devices; `first_batch` the call's first
      padded batch `(images, labels, mask, count)`.
    Returns:
      (site keys to leave to the exact fallback, the first batch's result to reuse or None).
    """
    start = time.perf_counter()
    x, y, mask, count = first_batch
    on_cpu = jax.default_backend() == "cpu"  # XLA:CPU float32 dots are float32 at any precision
    with contextlib.nullcontext() if on_cpu else jax.default_matmul_precision("highest"):
        program = batch_program(model, "grand", seed_axis, mesh, method=method)
        result = program(placed, put(x), put(y), put(mask))
        idx = guard.checked_examples(fetch(result[0]), count)
        fast = {key: fetch(v)[:, idx] for key, v in result[1].items()}
    if not fast:  # no layer has a fast rule: nothing to check
        return frozenset(), result if on_cpu else None
    exact_fn = exact_program(model, method)
    num_seeds = len(next(iter(fast.values())))
    per_seed = (jax.tree.map(lambda v, k=k: v[k], variables) for k in range(num_seeds))
    exclude = guard.guard(
        exact_fn, fast, per_seed, jnp.asarray(x[idx]), jnp.asarray(y[idx]), positions=idx
    )
    logging.info(
        "grand guard: %d layers x %d seeds checked on %d examples in %.1f s; %d to the fallback",
        len(fast),
        num_seeds,
        len(idx),
        time.perf_counter() - start,
        len(exclude),
    )
    return exclude, result if on_cpu and not exclude else None


def _plan(model, seed_axis, mesh, variables, placed, head, put, fetch, total):
    """GraNd's method for this call (`pergrad/plan.py`), its guard's exclusions, and the first
    batch's result to reuse (or None). `total`: the number of examples, None for a stream."""
    one = jax.tree.map(lambda v: v[0], variables)
    spec = jax.ShapeDtypeStruct(head[0].shape, head[0].dtype)
    linen = isinstance(model, model_form_lib.LinenModel)
    method = plan.sites_method(linen, model.logits, one, spec, sharded=mesh is not None)
    exclude, first = _guard(model, method, seed_axis, mesh, variables, placed, head, put, fetch)
    if total is None or total < plan.MIN_BATCHES * len(head[0]):  # a stream, or too short
        return method, exclude, first
    programs = {
        m: batch_program(
            model, "grand", seed_axis, mesh, exclude if m == method else frozenset(), m
        )
        for m in (method, "vmap_grad")
    }
    best, result = plan.choose(programs, (placed, *map(put, head[:3])))
    return best, exclude, result


def _model_check(form, packed):
    """`(example_shape, dtype, num_examples=None) -> (K, num_classes)`, checking the variables
    against the model (and the images' shape against both)."""
    if isinstance(form, model_form_lib.LinenModel):
        variables = {**packed["state"], "params": packed["params"]}
        mode = tuple(form.mode_kwargs(False).items())
        return functools.partial(inputs.check_model, form.module, variables, mode=mode)
    return functools.partial(model_form_lib.check_pure, form, packed)


def _scores(
    kind, model, variables, images, labels, batch_size, mesh, seed_axis, integer_inputs
) -> np.ndarray:
    """Streams padded batches through the compiled [K, B] function; returns [K, N] float32."""
    seed_axis = seed_axis_lib.resolve(seed_axis)
    model, given = model_form_lib.from_pair(model, variables)  # one form for every framework
    check_model = _model_check(model, given)
    source, num_seeds, total = batches.input_batches(
        check_model, images, labels, batch_size, seed_axis, integer_inputs
    )
    variables = given
    if mesh is None:
        variables = jax.device_put(variables)
        put, fetch = jnp.asarray, np.asarray
    else:
        from datadiet_jax.scores import sharding

        sharding.check_mesh(mesh, num_seeds, batch_size)
        variables = sharding.put_variables(variables, mesh)
        put = functools.partial(sharding.put_batch, mesh=mesh)
        fetch = sharding.fetch
    source = iter(source)
    head = next(source)  # every input has at least one example (checked)
    batch_check.check(kind, model, seed_axis, mesh, variables, head, put, fetch)
    exclude, first, method = frozenset(), None, None
    if kind == "grand":
        method, exclude, first = _plan(
            model, seed_axis, mesh, given, variables, head, put, fetch, total
        )
    fn = batch_program(model, kind, seed_axis, mesh, exclude, method)
    out = batches.ResultBuffer(num_seeds, total)
    progress = Progress(kind, total, unit="example")
    seeds_note = f"x {num_seeds} seeds"
    pending, done = None, 0
    for i, (x, y, mask, count) in enumerate(itertools.chain([head], source)):
        if i == 0 and first is not None:  # the guard's run of the first batch
            result = first[0]
        else:
            result = fn(variables, put(x), put(y), put(mask))[0]  # dispatched asynchronously
        if pending is not None:
            out.append(fetch(pending[1])[:, : pending[0]])
        pending = (count, result)
        done += count
        progress.update(done, seeds_note, pending=result)
    out.append(fetch(pending[1])[:, : pending[0]])
    progress.finish(done, seeds_note)
    out = out.result()
    seeds, idx = np.nonzero(~np.isfinite(out))
    if idx.size:
        pairs = list(zip(seeds[:10].tolist(), idx[:10].tolist(), strict=True))
        raise ValueError(
            f"{kind} scores are NaN or inf for (seed, example) {pairs}; "
            "check those examples and the model weights (e.g. diverged training)."
        )
    return out


def el2n_scores(
    model: Any,
    variables,
    images,
    labels=None,
    *,
    batch_size: int = 256,
    mesh: jax.sharding.Mesh | None = None,
    seed_axis: str | None = None,
    integer_inputs: bool = False,
) -> np.ndarray:
    """EL2N scores `||softmax(f(x)) - onehot(y)||_2` of every example under every seed.

    Args:
      model: a Flax Linen module, applied in eval mode (`train=False`, `deterministic=True`, ...:
        its mode flag found by convention); an NNX graphdef (from `nnx.split`), or an NNX module
        with `variables=None`, run after `module.eval()`; a function `apply_fn(params, images)`
        (`stateful(fn)` for `fn(params, state, images)`); or a model form (`model_form.py`, e.g.
        `train_seeds(...).model`). Must return logits [B, C].
      variables: K models stacked on a leading axis: Linen variables (see `init_variables`), the
        NNX state (`nnx.vmap` over a constructor), the params pytree of `apply_fn`, or
        `{'params': ..., 'state': ...}` for `stateful` and a model form.
      images: [N, ...] float numpy or jax array, normalized as the model expects (integer
        images are refused); or an iterable of `(images [b, ...], labels [b])`
        batches of any sizes (a generator, a `tf.data` dataset as numpy), read once, in order,
        and re-chunked into `batch_size` batches; host memory then does not grow with N beyond
        the result.
      labels: [N] int in [0, C) for an images array; omitted (None) for an iterable.
      batch_size: examples per compiled step (the last batch is padded and masked).
      mesh: optional `jax.sharding.Mesh` with axes ('seed', 'data') to shard seeds and data.
      seed_axis: 'unroll' (seeds one after another inside the jit, default on CPU), 'vmap'
        (default on GPU/TPU) or 'map' (`lax.map` over seeds).
      integer_inputs: images are integer token ids [N, T] (>= 0), passed to the model as they
        are, for a model whose first layer is an embedding (`nn.Embed`); float inputs are then
        refused.
    Returns:
      scores: [K, N] float32, in example order (iteration order for a stream, N learned from it).
    Raises:
      ValueError: bad labels, lengths, variables without a seed axis, images that do not fit
        the model (naming the layer that refuses them), NaN inputs/scores, a malformed stream
        item (named by its position), or a model whose logits for an example depend on the rest
        of its batch (checked on the first batch; see `batch_check`).
    """
    return _scores(
        "el2n", model, variables, images, labels, batch_size, mesh, seed_axis, integer_inputs
    )


def grand_scores(
    model: Any,
    variables,
    images,
    labels=None,
    *,
    batch_size: int = 128,
    mesh: jax.sharding.Mesh | None = None,
    seed_axis: str | None = None,
    integer_inputs: bool = False,
) -> np.ndarray:
    """GraNd scores: exact per-example L2 norms of the cross-entropy gradient w.r.t. all params.

    Fast per-layer rules cover Dense, Conv and BatchNorm layers whose leading axis is the batch
    and whose params are used nowhere else; for NNX models and functions, matrix products and
    convolutions of a param leaf and bias adds and scales of a broadcast param (which covers
    nnx.Linear, nnx.Conv and nnx.BatchNorm) in their jaxpr (`jaxpr_sites.py`). All other params
    get `vmap(grad)`. On the first batch
    of the call, each layer's rule is checked against `vmap(grad)` on a few examples per seed; a
    layer that disagrees uses `vmap(grad)` for the rest of the call (an absl warning names it).

    Args:
      model, variables, images, labels, batch_size, mesh, seed_axis, integer_inputs: as in
        `el2n_scores` (an embedding table's per-example gradient is exact, by `vmap(grad)`).
    Returns:
      scores: [K, N] float32, in example order.
    Raises:
      ValueError: as `el2n_scores`.
    """
    return _scores(
        "grand", model, variables, images, labels, batch_size, mesh, seed_axis, integer_inputs
    )
