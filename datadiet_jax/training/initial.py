"""The initial K-seed state of a training: fresh from its keys, or copies of a given state.

Usage:

    from datadiet_jax.training import initial
    state = initial.initial_states(model, split, spec)      # spec: a `loop.TrainSpec`; [K, ...]
    sample = initial.sample_input(split)                     # [1, ...] zeros of the input
    width = initial.num_outputs(model, split)                # C, without compiling
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from datadiet_jax.scores.model_form import model_form
from datadiet_jax.training import k_step, keys, train


def num_outputs(model, split) -> int:
    """C, the width of the model's logits on `split`'s inputs (abstractly, without compiling)."""
    model, sample = model_form(model), sample_input(split)
    params, state = jax.eval_shape(model.init, jax.random.key(0), sample)
    logits, _ = jax.eval_shape(
        functools.partial(model.apply, train=True, rng=jax.random.key(1)), params, state, sample
    )
    return int(logits.shape[-1])


def initial_states(model, split, spec) -> train.TrainState:
    """The K stacked initial states `fit` starts a fresh `spec` from."""
    init_fn, _ = k_step.programs(model, spec.train_cfg, spec.schedule_steps)
    inits = keys.init_keys(spec.seed, spec.purpose, spec.num_seeds, spec.streams)
    return init_fn(inits, sample_input(split))


def sample_input(split) -> np.ndarray:
    """One zero input `[1, ...]` of the shape and dtype the model gets from `split` (int32 for
    token ids, an embedding's input; float32 otherwise)."""
    dtype = np.int32 if split.kind == "tokens" else np.float32
    return np.zeros((1, *split.inputs.shape[1:]), dtype)


def copy_init_state(init_state, num_seeds: int, num_steps: int):
    """A private copy of `init_state` (the step donates its input) and its step counter."""
    lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(init_state)}
    if lead != {num_seeds}:
        raise ValueError(
            f"init_state has leading axes {sorted(lead, key=str)}, expected {num_seeds} (one per "
            "seed); stack one state per seed, e.g. K copies of the parent."
        )
    steps = np.unique(np.asarray(init_state.step))
    if steps.size != 1 or not 0 <= int(steps[0]) <= num_steps:
        raise ValueError(
            f"init_state steps {steps.tolist()} must be one value in [0, {num_steps}]; start "
            "all seeds from the same step of the schedule."
        )
    return jax.tree.map(lambda x: jnp.array(x, copy=True), init_state), int(steps[0])
