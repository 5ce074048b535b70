"""Where every random number of a run comes from: the config seed, a purpose, a seed index.

No global seeding anywhere. Each independent training of a run has its own purpose, so its K
initializations and K data orders never coincide with another training's:

  init keys of seed k    fold_in(fold_in(key(seed), purpose), k)               (`init_keys`)
  Dropout of seed k      fold_in(fold_in(init key of seed k, DROPOUT), step)   (`dropout_keys`,
                         `train.step_rng`)
  data order of seed k   stateless TF seeds from (seed * 1000 + purpose, stream, k), one stream
                         for the shuffles and one for the augmentations (`data_seed`, `STREAMS`;
                         `input_pipeline.seed_pair`), folded with the epoch or the step
  pruning rounds         numpy default_rng([seed, purpose, PRUNE, seed index, round])
                         (`prune_rng`: InfoBatch's and RS2's draws, every pruned round's order)
  label noise            numpy SeedSequence([data.label_noise.seed, LABEL_NOISE])
  random subsets         numpy default_rng(seed) (the random baseline; CCS and the balanced
                         strategies per class); Figure 4's random subset [seed, FIG4_SUBSET]
                         and its BatchNorm image order [seed, FIG4_BN_ORDER]

Usage:

    from datadiet_jax.training import keys
    init = keys.init_keys(0, keys.Purpose.SCORE, num_seeds=4)     # [4] key array
    dropout = keys.dropout_keys(0, keys.Purpose.SCORE, 4)         # [4, 2] uint32 key data
    tf_seed = keys.data_seed(0, keys.Purpose.RETRAIN)             # seed of the data orders
"""

from __future__ import annotations

import enum

import jax
import numpy as np


class Purpose(enum.IntEnum):
    """The independent trainings of a run."""

    SCORE = 1  # the K-seed score training
    RETRAIN = 2  # every retraining (each run of the plan has its own kept set)
    PARENT = 3  # Figure 4: the parent network
    CHILD = 4  # Figure 4: the children spawned from it
    KERNEL = 5  # Figure 3: the kernel-velocity training


# The random streams of one training's input pipeline.
STREAMS = {"shuffle": 1, "augment": 2}
LABEL_NOISE = 0x4E015E
FIG4_SUBSET = 4
FIG4_BN_ORDER = 5
DROPOUT = 0xD0
PRUNE = 0x9E


def seed_indices(num_seeds: int, streams=()) -> np.ndarray:
    """The seed index each of K stacked seeds draws from: `streams` (a stacked training of
    several runs repeats each run's indices), else 0..K-1. `[K] int`."""
    out = np.arange(num_seeds) if not len(streams) else np.asarray(streams, np.int64)
    if out.shape != (num_seeds,):
        raise ValueError(
            f"streams has {out.shape[0]} entries for {num_seeds} seeds; give one each."
        )
    return out


def init_keys(seed: int, purpose: int, num_seeds: int, streams=()) -> jax.Array:
    """K init keys derived from (config seed, purpose, seed index); `[K]` key array. Seed k
    takes index `streams[k]` when given (`seed_indices`)."""
    base = jax.random.fold_in(jax.random.key(seed), purpose)
    return jax.vmap(lambda k: jax.random.fold_in(base, k))(seed_indices(num_seeds, streams))


def data_seed(seed: int, purpose: int) -> int:
    """The seed of one training's data orders and augmentations (`input_pipeline`)."""
    return seed * 1000 + purpose


def dropout_keys(seed: int, purpose: int, num_seeds: int, streams=()) -> np.ndarray:
    """K Dropout base keys as key data, `[K, 2]` uint32: `fold_in(init key of seed k, DROPOUT)`;
    a step folds in its step number (`train.step_rng`)."""
    inits = init_keys(seed, purpose, num_seeds, streams)
    folded = jax.vmap(lambda k: jax.random.fold_in(k, DROPOUT))(inits)
    return np.asarray(jax.random.key_data(folded))


def prune_rng(seed: int, purpose: int, seed_index: int, round_index: int) -> np.random.Generator:
    """The numpy generator of one seed's pruning round (`prune_schedules`, `prune_feed`):
    from (config seed, purpose, PRUNE, seed index, round), so a resumed run draws the same."""
    return np.random.default_rng([seed, purpose, PRUNE, int(seed_index), int(round_index)])
