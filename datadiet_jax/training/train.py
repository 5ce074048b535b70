"""Training one seed, and K seeds stacked: train state, optimizer and schedule, steps, evaluation.

The K seeds are one stacked pytree with a leading seed axis. Steps are pure functions of one seed;
`seed_axis.over_seeds` lifts them to K seeds inside one jit: `vmap` on accelerators, and on CPU
the K seeds one after another, unrolled. The loop that runs them is `loop.py`; its checkpoints are
`checkpoints.py`.

On CPU the step differentiates the loss with every non-overlapping max-pool replaced by
`fast_pools` (the same gradient, to the first maximum of each window) instead of XLA's CPU
gradient of `reduce_window_max`; see `fast_backward`. XLA's own convolution gradients are kept
(`benchmarks/bench_backward.py` compares the alternatives; docs/performance.md).

Usage:

    from datadiet_jax.training import keys, train
    tx = train.make_optimizer(config.train, total_steps=1000)
    init = keys.init_keys(0, keys.Purpose.SCORE, 4)
    state = train.init_states(model, tx, init, images[:1])              # every leaf [4, ...]
    acc, loss = train.evaluate(model, state, test_split, batch_size=500)   # [4] each
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from datadiet_jax.scores import aum
from datadiet_jax.scores.losses import cross_entropy
from datadiet_jax.scores.model_form import ModelForm, model_form
from datadiet_jax.scores.pergrad import fast_pools
from datadiet_jax.scores.seed_axis import over_seeds
from datadiet_jax.training import input_pipeline


class TrainState(struct.PyTreeNode):
    """One seed's (or, stacked, K seeds') training state.

    `params` are the trained arrays, `model_state` the model's other arrays (BatchNorm
    statistics: for a Linen model its non-params collections, e.g. `{'batch_stats': ...}`), as
    the model form (`scores/model_form/`) makes them.
    """

    step: jnp.ndarray
    params: dict
    model_state: dict
    opt_state: optax.OptState


def learning_rate_fn(cfg, total_steps: int) -> optax.Schedule:
    """Piecewise-constant schedule: `cfg.learning_rate`, times `cfg.lr_drop_factor` at each of
    `cfg.lr_drop_fractions` of `total_steps` (the paper: x0.2 at epochs 60, 120, 160 of 200).

    With `cfg.warmup_epochs > 0` the rate first rises linearly from 0 over the same fraction of
    `total_steps` as `warmup_epochs` is of `num_epochs` (so a run whose schedule is stretched or
    shrunk, such as a pruned run trained for a number of epochs, warms up for the same share).
    """
    bounds = {int(f * total_steps): cfg.lr_drop_factor for f in cfg.lr_drop_fractions}
    schedule = optax.piecewise_constant_schedule(cfg.learning_rate, bounds)
    warmup = warmup_steps(cfg, total_steps)
    if not warmup:
        return schedule
    return lambda step: schedule(step) * jnp.minimum(1.0, (step + 1) / warmup)


def warmup_steps(cfg, total_steps: int) -> int:
    """Steps of the linear warm-up: `warmup_epochs / num_epochs` of `total_steps` (0 without)."""
    epochs = float(cfg.get("warmup_epochs", 0.0) or 0.0)
    if epochs <= 0:
        return 0
    return max(1, round(epochs / float(cfg.num_epochs) * total_steps))


def make_optimizer(
    cfg, total_steps: int, *, rate_per_batch: bool = False
) -> optax.GradientTransformation:
    """SGD with Nesterov momentum and L2 weight decay on all parameters.

    With `rate_per_batch` the optimizer's rate is 1 and `train_step` scales its update by the
    schedule at the batch's `rate_step` instead of the optimizer's own step count: the same
    update, bit for bit, when the two are equal (optax applies the rate after the momentum).
    """
    rate = 1.0 if rate_per_batch else learning_rate_fn(cfg, total_steps)
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(rate, momentum=cfg.momentum, nesterov=cfg.nesterov),
    )


def create_train_state(key, model: ModelForm, tx, sample_input) -> TrainState:
    """Initializes one seed; vmappable over `key`.

    Args:
      key: PRNG key.
      model: a Linen module, an NNX factory, a plain-function model, or its `ModelForm`.
      tx: optax optimizer.
      sample_input: [1, ...] array with the input shape and dtype.
    """
    params, model_state = model_form(model).init(key, sample_input)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
    )


FAST_BACKWARD_MODES = ("auto", "on", "off")


def fast_backward(mode: str) -> bool:
    """Whether training steps use the fast max-pool gradient: 'on', 'off', or 'auto'.

    'auto' is on for CPU only, where it makes the small CNN's step 1.4-1.6x faster; on GPU and
    TPU XLA's own gradient is kept until measured otherwise.

    Raises:
      ValueError: an unknown mode.
    """
    if mode == "auto":
        return jax.default_backend() == "cpu"
    if mode not in FAST_BACKWARD_MODES:
        raise ValueError(f"Unknown train.fast_backward {mode!r}; use 'auto', 'on' or 'off'.")
    return mode == "on"


def step_rng(rng_data: jax.Array, step: jax.Array) -> jax.Array:
    """The Dropout key of one seed's step: `fold_in(seed's key, step)`. rng_data: key data."""
    return jax.random.fold_in(jax.random.wrap_key_data(rng_data), step)


def train_step(
    model: ModelForm, tx, state: TrainState, batch: dict, *, fast: bool = False, rate=None
):
    """One SGD step of one seed on a masked batch.

    Args:
      model: the model's `ModelForm`.
      batch: `image [B, ...]`, `label [B]`, `mask [B]` (0 for padding), and optionally `rng`
        (the seed's key data, `keys.dropout_keys`; the step's Dropout key is `step_rng(rng,
        step)`; without it a model that draws random numbers in training fails) and `weight
        [B]` (each example's loss weight, a pruning schedule's rescaling: the loss is then
        `sum(weight * mask * ce) / sum(mask)`, as InfoBatch's code weighs a batch's mean).
      fast: differentiate with the fast max-pool gradient (`fast_backward`); the gradients are
        the same (the first maximum of each window gets it, as in `jax.grad`).
      rate: the schedule of an optimizer made with `rate_per_batch`: the update is scaled by
        `rate(batch['rate_step'])` (a pruned training's rate follows its rounds, `prune_feed`).

    Returns:
      (new state, metrics) with metrics `loss` (masked mean), `losses [B]` float32 (each
      example's unweighted cross-entropy), `correct [B]` bool, `margin [B]` float32
      (assigned-label logit minus the largest other logit) and `probs [B, C]` float32
      (softmax), per example in train mode, for the forgetting, AUM and dynamics statistics.
    """
    model, mask = model_form(model), batch["mask"]
    weighted = mask * batch["weight"] if "weight" in batch else mask
    rng = step_rng(batch["rng"], state.step) if "rng" in batch else None

    def loss_fn(params):
        logits, model_state = model.apply(
            params, state.model_state, batch["image"], train=True, rng=rng
        )
        losses = cross_entropy(logits, batch["label"])
        loss = jnp.sum(losses * weighted) / jnp.maximum(mask.sum(), 1)
        return loss, (logits, model_state, losses)

    if fast:
        loss_fn = fast_pools.with_fast_pools(loss_fn)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (logits, model_state, losses)), grads = grad_fn(state.params)
    deltas, opt_state = tx.update(grads, state.opt_state, state.params)
    if rate is not None:
        deltas = jax.tree.map(lambda d: d * rate(batch["rate_step"]).astype(d.dtype), deltas)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, deltas),
        model_state=model_state,
        opt_state=opt_state,
    )
    correct = jnp.argmax(logits, -1) == batch["label"]
    return new_state, {
        "loss": loss,
        "losses": losses.astype(jnp.float32),
        "correct": correct,
        "margin": aum.margins(logits, batch["label"]),
        "probs": jax.nn.softmax(logits.astype(jnp.float32), axis=-1),
    }


def eval_step(model: ModelForm, params, model_state, batch: dict):
    """Masked sums of correct predictions and loss for one seed: returns (correct, loss) scalars."""
    logits = model_form(model).logits(params, model_state, batch["image"])
    mask = batch["mask"]
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask)
    return correct, jnp.sum(cross_entropy(logits, batch["label"]) * mask)


def evaluate(model, state: TrainState, split, *, batch_size: int, seed_axis: str = "auto"):
    """Test accuracy and mean loss of each of K stacked seeds: returns two `[K]` numpy arrays."""
    step = _eval_program(model_form(model), seed_axis)
    num_seeds = jax.tree.leaves(state.params)[0].shape[0]
    correct, loss = np.zeros(num_seeds), np.zeros(num_seeds)
    batches = input_pipeline.eval_batches(
        split.inputs, split.labels, mean=split.mean, std=split.std, batch_size=batch_size
    )
    for batch in batches:
        stacked = jax.tree.map(lambda x: np.broadcast_to(x, (num_seeds, *x.shape)), batch)
        c, lo = step(state.params, state.model_state, stacked)
        correct += np.asarray(c)
        loss += np.asarray(lo)
    return correct / split.num_examples, loss / split.num_examples


@functools.lru_cache(maxsize=8)
def _eval_program(model, seed_axis: str):
    return jax.jit(over_seeds(functools.partial(eval_step, model), seed_axis))


def init_states(model, tx, keys, sample_input, seed_axis: str = "auto") -> TrainState:
    """K stacked initial states, one per key in `keys [K]` (pure; jit it at the call site).

    model: a `ModelForm`, or any model `model_form` takes."""
    model = model_form(model)
    return over_seeds(lambda k: create_train_state(k, model, tx, sample_input), seed_axis)(keys)
