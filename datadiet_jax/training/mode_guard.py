"""The train-mode guard: a model whose train mode changes nothing it should is stopped.

A mode flag no convention names (`scores/model_form/`) would train the model in eval mode
without an error: BatchNorm statistics that never move, Dropout that never fires. After the
first training step of a process the guard looks at what that step did:

- the model holds float state (BatchNorm statistics): some of it must have changed in every seed;
- otherwise, when the model has mode-dependent layers (Dropout; `ModelForm.mode_layers`), its
  train-mode and eval-mode logits on the step's examples must differ.

A model with neither (no BatchNorm, no Dropout, or a function model whose layers are hidden)
has no mode to get wrong and passes. The refusal is one `ValueError` line naming the model's
boolean arguments and `config.model.train_arg`.

Usage:

    from datadiet_jax.training import mode_guard
    before = mode_guard.host_state(state.model_state)    # before the first step
    state, stats, loss = step_fn(state, stats, batch)
    mode_guard.check(model, before, state, batch, name="scores")
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from datadiet_jax.scores import sharding

# Examples of the first batch the logits comparison runs on (seed 0).
NUM_EXAMPLES = 16


def host_state(model_state) -> list[np.ndarray]:
    """The float leaves of a stacked model state `[K, ...]` as host arrays."""
    leaves = [sharding.fetch(v) for v in jax.tree.leaves(model_state)]
    return [v for v in leaves if np.issubdtype(v.dtype, np.floating)]


def check(model, before: list[np.ndarray], state, batch: dict, name: str) -> None:
    """Refuses a model that the first step trained in eval mode (see the module docstring).

    Args:
      model: the `ModelForm` trained.
      before: `host_state` of the stacked model state before the step.
      state: the stacked `TrainState` after the step, every leaf `[K, ...]`.
      batch: the step's batch, `image [K, B, ...]`.
      name: the training's name, for the message.
    Raises:
      ValueError: one line: the statistics did not move, or the logits do not depend on the mode.
    """
    after = host_state(state.model_state)
    if before:
        still = [
            k
            for k in range(before[0].shape[0])
            if all(np.array_equal(b[k], a[k]) for b, a in zip(before, after, strict=True))
        ]
        if still:
            _refuse(
                model, name, f"its state (BatchNorm statistics) did not change in seed {still[0]}"
            )
        return
    params, model_state = _seed0(state.params), _seed0(state.model_state)
    images = jnp.asarray(sharding.fetch(batch["image"])[0][:NUM_EXAMPLES])
    layers = model.mode_layers(params, model_state, images[:1])
    if not layers:
        return
    train, _ = jax.jit(lambda p, s, x, r: model.apply(p, s, x, train=True, rng=r))(
        params, model_state, images, jax.random.key(0)
    )
    evals = jax.jit(model.logits)(params, model_state, images)
    if np.array_equal(np.asarray(train), np.asarray(evals)):
        _refuse(
            model,
            name,
            f"it has {', '.join(layers)}, but its train-mode and eval-mode logits are identical",
        )


def _seed0(tree):
    return jax.tree.map(lambda v: jnp.asarray(sharding.fetch(v)[0]), tree)


def _refuse(model, name: str, what: str) -> None:
    raise ValueError(
        f"{name}: the model trained in eval mode: after the first step {what}; {model.mode_hint()}."
    )
