"""Training K seeds at once: train state, optimizer and schedule, pure steps, the loop, checkpoints.

The K seeds are one stacked pytree with a leading seed axis. Steps are pure functions of one seed;
`over_seeds` lifts them to K seeds inside one jit: `vmap` on accelerators, and on CPU the K seeds
one after another, unrolled (vmapping convolutions over seeds is several times slower there).
"""

from __future__ import annotations

import functools
import logging as std_logging
import os
import time
from collections.abc import Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import struct

from datadiet_jax import aum, pipelines
from datadiet_jax.seeds import over_seeds


class TrainState(struct.PyTreeNode):
    """One seed's (or, stacked, K seeds') training state."""

    step: jnp.ndarray
    params: dict
    batch_stats: dict
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


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """SGD with Nesterov momentum and L2 weight decay on all parameters."""
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(learning_rate_fn(cfg, total_steps), momentum=cfg.momentum, nesterov=cfg.nesterov),
    )


def create_train_state(key, model: nn.Module, tx, sample_input) -> TrainState:
    """Initializes one seed; vmappable over `key`.

    Args:
      key: PRNG key.
      model: Flax module called as `model.apply(variables, x, train=...)`.
      tx: optax optimizer.
      sample_input: [B, H, W, C] array with the input shape.
    """
    variables = model.init(key, sample_input, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


def cross_entropy(logits, labels):
    """Per-example softmax cross-entropy: logits [B, C], labels [B] -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(model: nn.Module, tx, state: TrainState, batch: dict):
    """One SGD step of one seed on a masked batch.

    Args:
      batch: `image [B, H, W, C]`, `label [B]`, `mask [B]` (0 for padding).

    Returns:
      (new state, metrics) with metrics `loss` (masked mean), `correct [B]` bool and `margin [B]`
      float32 (assigned-label logit minus the largest other logit), per example in train mode, for
      the forgetting and AUM statistics.
    """
    mask = batch["mask"]

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
        )
        loss = jnp.sum(cross_entropy(logits, batch["label"]) * mask) / jnp.maximum(mask.sum(), 1)
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    deltas, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, deltas),
        batch_stats=updates.get("batch_stats", state.batch_stats),
        opt_state=opt_state,
    )
    correct = jnp.argmax(logits, -1) == batch["label"]
    return new_state, {
        "loss": loss,
        "correct": correct,
        "margin": aum.margins(logits, batch["label"]),
    }


def eval_step(model: nn.Module, params, batch_stats, batch: dict):
    """Masked sums of correct predictions and loss for one seed: returns (correct, loss) scalars."""
    logits = model.apply(
        {"params": params, "batch_stats": batch_stats}, batch["image"], train=False
    )
    mask = batch["mask"]
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask)
    return correct, jnp.sum(cross_entropy(logits, batch["label"]) * mask)


def evaluate(model, state: TrainState, split, *, batch_size: int, seed_axis: str = "auto"):
    """Test accuracy and mean loss of each of K stacked seeds: returns two `[K]` numpy arrays."""
    step = _eval_program(model, seed_axis)
    num_seeds = jax.tree.leaves(state.params)[0].shape[0]
    correct, loss = np.zeros(num_seeds), np.zeros(num_seeds)
    batches = pipelines.eval_batches(
        split.images, split.labels, mean=split.mean, std=split.std, batch_size=batch_size
    )
    for batch in batches:
        stacked = jax.tree.map(lambda x: np.broadcast_to(x, (num_seeds, *x.shape)), batch)
        c, lo = step(state.params, state.batch_stats, stacked)
        correct += np.asarray(c)
        loss += np.asarray(lo)
    return correct / split.num_examples, loss / split.num_examples


@functools.lru_cache(maxsize=8)
def _eval_program(model, seed_axis: str):
    return jax.jit(over_seeds(functools.partial(eval_step, model), seed_axis))


def init_states(model, tx, keys, sample_input, seed_axis: str = "auto") -> TrainState:
    """K stacked initial states, one per key in `keys [K]` (pure; jit it at the call site)."""
    return over_seeds(lambda k: create_train_state(k, model, tx, sample_input), seed_axis)(keys)


class _QuietCheckpointing(std_logging.Filter):
    def filter(self, record):
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def quiet_checkpoint_logs() -> None:
    """Drops the INFO chatter of orbax's internals from absl's log; its warnings still show."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietCheckpointing) for f in handler.filters):
        handler.addFilter(_QuietCheckpointing())


class CheckpointMismatch(ValueError):
    """A readable checkpoint whose structure differs from what this version trains."""


class Checkpoints:
    """Orbax checkpoints of the stacked state and the training statistics, keyed by step.

    `stats` is the loop's dict of per-example statistics (forgetting and AUM), saved with the state
    so that a resumed run ends with the same statistics as an uninterrupted one.

    Keeps the latest two and every step in `keep_steps` (the epochs that scores need, the end).
    """

    def __init__(self, directory: str, keep_steps: Iterable[int] = ()):
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(2),
                ocp.checkpoint_managers.CustomSteps(sorted(set(keep_steps))),
            ]
        )
        self._directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: TrainState, stats: dict) -> None:
        item = {"state": state, "stats": stats}
        self._manager.save(step, args=ocp.args.StandardSave(item), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, state: TrainState, stats: dict):
        """Restores (state, stats) at `step`, shaped like the given templates."""
        item = {"state": state, "stats": stats}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, item)
        try:
            out = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except ValueError as err:
            if "Structure mismatch" not in str(err):
                raise
            raise CheckpointMismatch(
                f"checkpoint step {step} in {self._manager.directory} holds other training "
                "statistics than this version tracks (e.g. written before AUM was tracked); "
                "resume it with the version that wrote it, or start in a new work directory."
            ) from None
        return out["state"], out["stats"]

    def restore_latest(self, state: TrainState, stats: dict):
        """Restores the newest readable checkpoint, shaped like the given templates.

        An unreadable checkpoint (e.g. cut short by a crash or a full disk) is skipped with a
        warning naming it, and moved aside (to `<step>.unreadable`) so training can save that
        step again.

        Returns:
          (step, state, stats); (0, state, stats) unchanged when there is no checkpoint.

        Raises:
          ValueError: checkpoints exist but none is readable.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                restored = self.restore(step, state, stats)
            except CheckpointMismatch:
                raise  # readable, but of another version: moving it aside would lose it
            except Exception as e:  # noqa: BLE001 (orbax and TensorStore raise many types)
                logging.warning(
                    "Checkpoint %s is unreadable (%s: %s)%s",
                    os.path.join(self._directory, str(step)),
                    type(e).__name__,
                    " ".join(str(e).split())[:200],
                    "; trying an older one." if i + 1 < len(steps) else ".",
                )
                continue
            for bad in steps[:i]:  # Moved aside, so training can save these steps again.
                path = os.path.join(self._directory, str(bad))
                os.replace(path, f"{path}.unreadable")
                logging.warning("Resuming from step %d; moved %s aside.", step, path)
            if i:
                self._manager.reload()
            return (step, *restored)
        if steps:
            raise ValueError(
                f"No readable checkpoint in {self._directory} (steps {sorted(steps)}); delete that "
                "directory to restart this training from the beginning."
            )
        return 0, state, stats

    def close(self) -> None:
        self._manager.close()


class Progress:
    """Logs step, rate and ETA at most every `every_s` seconds."""

    def __init__(self, name: str, total: int, start: int = 0, unit_per_step: int = 1, every_s=10.0):
        self.name, self.total, self.start, self.unit = name, total, start, unit_per_step
        self.every_s, self.t0, self.last = every_s, time.time(), 0.0

    def update(self, step: int, extra: str = "", pending=None) -> None:
        """Logs progress at `step`; `pending` (arrays still being computed) is waited for first,
        so the rate counts finished work, not work queued by asynchronous dispatch."""
        now = time.time()
        if now - self.last < self.every_s and step != self.total:
            return
        jax.block_until_ready(pending)
        now = time.time()
        self.last = now
        done = step - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        logging.info(
            "%s: step %d/%d, %.0f examples/s, ETA %.0fs %s",
            self.name,
            step,
            self.total,
            rate * self.unit,
            eta,
            extra,
        )
