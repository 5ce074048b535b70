"""Per-example data-pruning scores (EL2N, GraNd, logit scores) for K stacked seeds at once.

EL2N of an example is `||softmax(logits) - onehot(label)||_2`; GraNd is the L2 norm of the
gradient of its cross-entropy loss with respect to ALL trainable parameters ('params'; BatchNorm
statistics and other collections are constants). Both use the model in eval mode (`train=False`,
BatchNorm with running statistics), as the authors did. At initialization GraNd mostly tracks the
input norm: average several seeds and prefer scores from a few epochs into training.

The K models are one pytree with a leading seed axis. Data stream from host memory in fixed-size
padded batches with a mask (`batches.py`), so nothing recompiles and device memory does not
depend on N. GraNd is exact: one batched backward pass per batch with per-layer rules, the rest
by `vmap(grad)` (`pergrad/`), each rule checked against `vmap(grad)` on the first batch. Models
of any framework meet here through `model_form.from_pair` (Linen, NNX, plain functions). Refused
with a one-line ValueError: integer images (unless `integer_inputs=True` says they are token
ids), images that do not fit the model (`image_fit.py`), and models whose logits for one example
depend on the rest of its batch (`batch_check.py`). The fixed costs before the first scored
batch (that check, GraNd's guard and its choice of program) are paid once per process and
signature (`decisions.py`); the end-of-call log line gives them apart from the total.

Usage:

    model = get_model('small_cnn', num_classes=10)
    variables = init_variables(model, jax.random.key(0), num_seeds=4, sample_input=images[:1])
    el2n = el2n_scores(model, variables, images, labels)    # [4, N] float32
    grand = grand_scores(model, variables, images, labels)  # [4, N] float32
    # Streamed, without holding the dataset: any iterable of (images, labels) batches.
    el2n = el2n_scores(model, variables, ((x, y) for x, y in batches))  # [4, N]
    grand = grand_scores(*nnx.split(nnx_model), images, labels)     # NNX: [K, N]
    grand = grand_scores(apply_fn, stacked_params, images, labels)  # apply_fn(params, x)
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

from datadiet_jax.scores import (
    batch_check,
    batches,
    decisions,
    grand_setup,
    inputs,
    programs,
    uncertainty,
)
from datadiet_jax.scores import model_form as model_form_lib
from datadiet_jax.scores import seed_axis as seed_axis_lib
from datadiet_jax.scores.progress import Progress
from datadiet_jax.scores.sharding import Placement


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


def model_check(form, packed):
    """`(example_shape, dtype, num_examples=None) -> (K, num_classes)`, checking the variables
    against the model (and the images' shape against both)."""
    if isinstance(form, model_form_lib.LinenModel):
        variables = {**packed["state"], "params": packed["params"]}
        mode = tuple(form.mode_kwargs(False).items())
        return functools.partial(inputs.check_model, form.module, variables, mode=mode)
    return functools.partial(model_form_lib.check_pure, form, packed)


def _runner(kind, model, seed_axis, place, given, placed, head, total):
    """The call's checks, then its batch runner (`programs.Runner`) and the seconds of its fixed
    costs (the batch check; GraNd's site finder and guard), each decided once per process where
    it can be (`decisions.py`)."""
    start = time.perf_counter()
    batch_check.check_once(kind, model, seed_axis, place, placed, head)
    setup = time.perf_counter() - start
    if kind != "grand":
        fn = programs.batch_program(model, kind, seed_axis, place.mesh)
        return programs.Runner(place, placed, fn), setup
    runner, seconds = grand_setup.plan(model, seed_axis, place, given, placed, head, total)
    return runner, setup + seconds


def _scores(kind, model, variables, inputs, labels, options: dict) -> np.ndarray:
    """Streams padded batches through the compiled [K, B] function; returns [K, N] float32.

    options: the call's `batch_size`, `mesh`, `seed_axis` and `integer_inputs`. The fixed costs
    (checks, guard, the race's extra seconds) are logged apart from the total and added to
    `decisions.stats()['setup_seconds']`.
    """
    seed_axis = seed_axis_lib.resolve(options["seed_axis"])
    batch_size, place = options["batch_size"], Placement(options["mesh"])
    model, given = model_form_lib.from_pair(model, variables)  # one form for every framework
    source, num_seeds, total = batches.input_batches(
        model_check(model, given), inputs, labels, batch_size, seed_axis, options["integer_inputs"]
    )
    placed = place.put_variables(given, num_seeds, batch_size)
    progress = Progress(kind, total, unit="example")
    source = iter(source)
    head = next(source)  # every input has at least one example (checked)
    run, setup = _runner(kind, model, seed_axis, place, given, placed, head, total)
    out = batches.ResultBuffer(num_seeds, total)
    seeds_note = f"x {num_seeds} seeds"
    pending, done = None, 0
    for i, batch in enumerate(itertools.chain([head], source)):
        result = run(i, batch)[0]
        if pending is not None:
            out.append(place.fetch(pending[1])[:, : pending[0]])
        pending = (batch[3], result)
        done += batch[3]
        progress.update(done, seeds_note, pending=result)
    out.append(place.fetch(pending[1])[:, : pending[0]])
    setup += run.overhead()
    decisions.add_setup_seconds(setup)
    progress.finish(done, seeds_note, setup=setup)
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
    inputs,
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
        with `variables=None`, run after `module.eval()`; a function `apply_fn(params, x)`
        (`stateful(fn)` for `fn(params, state, x)`); or a model form (`model_form/`, e.g.
        `train_seeds(...).model`). Must return logits [B, C].
      variables: K models stacked on a leading axis: Linen variables (see `init_variables`), the
        NNX state (`nnx.vmap` over a constructor), the params pytree of `apply_fn`, or
        `{'params': ..., 'state': ...}` for `stateful` and a model form.
      inputs: [N, ...] float numpy or jax array (images [N, H, W, C], features [N, D]),
        normalized as the model expects (integer inputs are refused); or an iterable of
        `(inputs [b, ...], labels [b])` batches of any sizes (a generator, a `tf.data` dataset
        as numpy), read once, in order, and re-chunked into `batch_size` batches; host memory
        then does not grow with N beyond the result.
      labels: [N] int in [0, C) for an inputs array; omitted (None) for an iterable.
      batch_size: examples per compiled step (the last batch is padded and masked).
      mesh: optional `jax.sharding.Mesh` with axes ('seed', 'data') to shard seeds and data.
      seed_axis: 'unroll' (seeds one after another inside the jit, default on CPU), 'vmap'
        (default on GPU/TPU) or 'map' (`lax.map` over seeds).
      integer_inputs: the inputs are integer token ids [N, T] (>= 0), passed to the model as
        they are, for a model whose first layer is an embedding (`nn.Embed`); float inputs are
        then refused.
    Returns:
      scores: [K, N] float32, in example order (iteration order for a stream, N learned from it).
    Raises:
      ValueError: bad labels, lengths, variables without a seed axis, inputs that do not fit
        the model (naming the layer that refuses them), NaN inputs/scores, a malformed stream
        item (named by its position), or a model whose logits for an example depend on the rest
        of its batch (checked on the first batch; see `batch_check`).
    """
    options = {"batch_size": batch_size, "mesh": mesh, "seed_axis": seed_axis}
    return _scores(
        "el2n", model, variables, inputs, labels, options | {"integer_inputs": integer_inputs}
    )


def grand_scores(
    model: Any,
    variables,
    inputs,
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
    get `vmap(grad)`. On the first batch of the first call of a model and shapes in the
    process (`decisions.py`), each layer's rule is checked against `vmap(grad)` on a few
    examples per seed; a layer that disagrees uses `vmap(grad)` (an absl warning names it). The
    first call on an array of at least `pergrad.method.MIN_BATCHES` batches also races the
    rules' program against `vmap(grad)` of every param on its first batches (results kept) and
    uses the faster from then on.

    Args:
      model, variables, inputs, labels, batch_size, mesh, seed_axis, integer_inputs: as in
        `el2n_scores` (an embedding table's per-example gradient is exact, by `vmap(grad)`).
    Returns:
      scores: [K, N] float32, in example order.
    Raises:
      ValueError: as `el2n_scores`.
    """
    options = {"batch_size": batch_size, "mesh": mesh, "seed_axis": seed_axis}
    return _scores(
        "grand", model, variables, inputs, labels, options | {"integer_inputs": integer_inputs}
    )


def logit_scores(
    kind: str,
    model: Any,
    variables,
    inputs,
    labels=None,
    *,
    batch_size: int = 256,
    mesh: jax.sharding.Mesh | None = None,
    seed_axis: str | None = None,
    integer_inputs: bool = False,
) -> np.ndarray:
    """One score of the logits of every example under every seed, in eval mode.

    Args:
      kind: a name of `uncertainty.LOGIT_SCORES`: 'entropy', 'least_confidence', 'margin'
        (DeepCore's uncertainty family, label-free), 'loss' (cross-entropy with the label) or
        'el2n'. Higher = harder for each.
      model, variables, inputs, labels, batch_size, mesh, seed_axis, integer_inputs: as in
        `el2n_scores` (labels are checked and passed even where the score ignores them).
    Returns:
      scores: [K, N] float32, in example order.
    Raises:
      ValueError: an unknown `kind` (naming the valid ones), and as `el2n_scores`.
    """
    if kind not in uncertainty.LOGIT_SCORES:
        raise ValueError(
            f"unknown logit score {kind!r}; valid names: {', '.join(uncertainty.LOGIT_SCORES)}"
        )
    options = {"batch_size": batch_size, "mesh": mesh, "seed_axis": seed_axis}
    return _scores(
        kind, model, variables, inputs, labels, options | {"integer_inputs": integer_inputs}
    )
