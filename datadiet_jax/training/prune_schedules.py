"""Pruning schedules during training: each seed's kept set of every round, from its own losses.

A round is one pass of a seed over the examples its schedule keeps for it; rounds are the
schedule's epochs (shorter than the budget's full-data epochs when they prune). The schedules:

  infobatch       InfoBatch (Qin et al., ICLR 2024), as its official code does: examples whose
                  last recorded loss is below the mean are well learned; of those,
                  int(keep * count) are kept at random without replacement (keep = 1 - ratio,
                  clipped to [0.1, 1] as the code does) and their loss is weighted 1 / keep;
                  the rest are all kept with weight 1. Losses start at 3.0 (so the first round
                  keeps every example) and an example not presented keeps its last loss. Rounds
                  that start at or after `delta` of the step budget use the full data.
  rs2             RS2 without replacement (Okanovic et al., 2023): each round a fresh share
                  `fraction` of the examples, taken in turn from a random permutation until it
                  is used up (the last round of a pass takes what is left), then a new one.
  seta            SeTa (Zhou et al., CVPR 2025), as its official code does: a random share
                  keep = 1 - ratio of the examples, split into `num_groups` groups by 1-D
                  k-means of their last losses, sorted from easy to hard; round r keeps the
                  window of round(num_groups * window_scale) groups starting at group
                  r mod (groups - window + 1) (round 0 keeps every group); weights stay 1.
                  Rounds after `delta` of the budget keep a random share keep of all (its
                  partial annealing). The code clusters with scikit-learn's KMeans; here a
                  deterministic Lloyd's k-means from quantile centres (`loss_groups`).
  prune_continue  `at_epoch` full-data rounds; then the seed's own network scores the
                  examples ('el2n', 'loss' or 'grand') and `scores.pruning.kept_indices` prunes
                  the share `ratio` by `strategy`, the call the static path makes for a prune
                  fraction (`pipeline.plan`); every later round visits the kept set in a fresh
                  order.

State (K seeds, N examples of the split, M examples of the training's kept set), a dict of
arrays, all with the seed axis first so that it is placed and checkpointed like the statistics:
  loss:   [K, N] float32, each example's last recorded training loss (unweighted).
  weight: [K, N] float32, the loss weight of each example in the current round.
  order:  [K, M] int, the current round's visiting order (dataset indices; the first
          `count` are the round's examples).
  count:  [K] int32, examples in the current round.
  perm:   [K, M] int, RS2's current permutation; `pos` [K] int32 its next position.
  keep:   [K, N] bool, prune_continue's kept set (all True before it prunes).
  round, start, length: [K] int32, the current round's number (-1 before the first), its first
          step and its length in steps (equal over the seeds).

The rounds are planned on the host, in numpy, one seed at a time (`prune_feed`); every draw
comes from the round's generator (`keys.prune_rng`).

Usage:

    sched = from_config(config.train.prune, seed=config.seed)   # None when off
    state = init_state(K, N, kept)                               # kept [M] or [K, M]
    order, weight = infobatch_round(state["loss"][k], kept, sched.ratio, True, rng)
    order, perm, pos = rs2_round(state["perm"][k], state["pos"][k], kept, 0.3, rng)
    order = seta_round(state["loss"][k], kept, sched, rnd, True, rng)
    chosen = continue_selection(scores[k], kept, labels, sched)     # prune and continue
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from datadiet_jax.scores import pruning

SCHEDULES = ("infobatch", "rs2", "seta", "prune_continue")
SCORES = ("el2n", "loss", "grand")
# The InfoBatch code's loss of an example never presented: equal for all, so none is below the
# mean and the first round keeps every example.
INITIAL_LOSS = 3.0


@dataclasses.dataclass(frozen=True)
class PruneSchedule:
    """One training's pruning schedule (`config.train.prune`, checked by `check`).

    Attributes:
      schedule: one of `SCHEDULES`.
      ratio: InfoBatch's prune ratio r: the share of the well-learned examples dropped (at
        most 0.9, where the code clips it); prune_continue: the share of the examples pruned,
        as a fraction of `config.prune.fractions`.
      delta: InfoBatch: rounds that start at or after this share of the step budget use the
        full data (annealing).
      fraction: RS2: the share of the examples in each round.
      at_epoch: prune_continue: the full-data rounds before it scores and prunes (>= 1).
      score: prune_continue: the seed's own score, one of `SCORES`.
      strategy: prune_continue: a strategy of `scores.pruning.STRATEGIES` that needs only the
        seed's score and the labels (not the feature strategies, 'dual_sampling', 'offset' or
        'ccs').
      num_groups: SeTa: the loss groups of a round.
      window_scale: SeTa: the share of the groups in the sliding window.
      seed: the seed of the strategy's random choices (the run seed, as the static path).
    """

    schedule: str
    ratio: float = 0.5
    delta: float = 0.875
    fraction: float = 0.5
    at_epoch: int = 1
    score: str = "el2n"
    strategy: str = "hardest"
    num_groups: int = 10
    window_scale: float = 0.5
    seed: int = 0


def check(cfg, where: str = "config.train.prune") -> None:
    """Refuses a bad schedule with one line naming the setting (`where`.field).

    cfg: a mapping with the fields of `PruneSchedule` (a ConfigDict or dict); `schedule` ''
    is off and nothing else is checked.
    """
    name = cfg.get("schedule", "")
    if name == "":
        return
    if name not in SCHEDULES:
        raise ValueError(f"{where}.schedule is {name!r}; use '' (off) or one of {SCHEDULES}.")
    ratio, delta = cfg.get("ratio", 0.5), cfg.get("delta", 0.875)
    fraction = cfg.get("fraction", 0.5)
    # InfoBatch's code clips the kept share to >= 0.1: a larger ratio would be changed silently.
    clipped = name in ("infobatch", "seta")
    if not _real(ratio) or not (0 <= ratio <= 0.9 if clipped else 0 <= ratio < 1):
        span = "[0, 0.9]" if clipped else "[0, 1)"
        raise ValueError(f"{where}.ratio is {ratio!r}; use a number in {span} for {name}.")
    if not _real(delta) or not 0 <= delta <= 1:
        raise ValueError(f"{where}.delta is {delta!r}; use a number in [0, 1].")
    if not _real(fraction) or not 0 < fraction <= 1:
        raise ValueError(f"{where}.fraction is {fraction!r}; use a number in (0, 1].")
    groups, scale = cfg.get("num_groups", 10), cfg.get("window_scale", 0.5)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{where}.num_groups is {groups!r}; use an integer >= 1.")
    if not _real(scale) or not 0 < scale <= 1 or round(groups * scale) < 1:
        raise ValueError(
            f"{where}.window_scale is {scale!r}; use a number in (0, 1] with "
            "round(num_groups * window_scale) >= 1."
        )
    at_epoch = cfg.get("at_epoch", 1)
    if isinstance(at_epoch, bool) or not isinstance(at_epoch, int) or at_epoch < 1:
        raise ValueError(f"{where}.at_epoch is {at_epoch!r}; use an integer >= 1.")
    if cfg.get("score", "el2n") not in SCORES:
        raise ValueError(f"{where}.score is {cfg.get('score')!r}; use one of {SCORES}.")
    strategy = cfg.get("strategy", "hardest")
    # Strategies that need more than the seed's one score (features, mean predictions) or
    # settings of the static plan (prune.offsets, prune.ccs_beta).
    refused = (*pruning.FEATURE_STRATEGIES, "dual_sampling", "offset", "ccs")
    if strategy not in pruning.STRATEGIES or strategy in refused:
        valid = sorted(s for s in pruning.STRATEGIES if s not in refused)
        raise ValueError(f"{where}.strategy is {strategy!r}; use one of {valid}.")


def _real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def from_config(cfg, seed: int = 0) -> PruneSchedule | None:
    """The checked schedule of `config.train.prune` (or a dict); None when off or absent."""
    if cfg is None or cfg.get("schedule", "") == "":
        return None
    check(cfg)
    fields = {f.name for f in dataclasses.fields(PruneSchedule)} - {"seed"}
    return PruneSchedule(**{k: cfg[k] for k in fields if k in cfg}, seed=seed)


def init_state(num_seeds: int, num_examples: int, kept: np.ndarray) -> dict[str, np.ndarray]:
    """The state before the first round (see the module docstring); kept: [M] or [K, M]."""
    kept = np.broadcast_to(np.asarray(kept, np.int64), (num_seeds, np.shape(kept)[-1])).copy()
    per_seed = np.zeros(num_seeds, np.int32)
    return {
        "loss": np.full((num_seeds, num_examples), INITIAL_LOSS, np.float32),
        "weight": np.ones((num_seeds, num_examples), np.float32),
        "order": kept.copy(),
        "count": per_seed + kept.shape[1],
        "perm": kept.copy(),
        "pos": per_seed + kept.shape[1],  # used up: the first RS2 round draws a permutation
        "keep": np.ones((num_seeds, num_examples), bool),
        "round": per_seed - 1,
        "start": per_seed.copy(),
        "length": per_seed.copy(),
    }


def infobatch_round(
    loss: np.ndarray, kept: np.ndarray, ratio: float, prune: bool, rng: np.random.Generator
):
    """One seed's InfoBatch round, as the official code's `prune` and `no_prune`.

    Args:
      loss: [N] float32, the last recorded losses.
      kept: [M] int64, the training's examples.
      ratio: the prune ratio r.
      prune: False in the annealing rounds (every example, weight 1).
      rng: the round's generator.

    Returns:
      (order [c] int64 dataset indices in visiting order, weight [N] float32).
    """
    weight = np.ones(loss.shape, np.float32)
    if not prune:
        return rng.permutation(kept), weight
    keep = min(1.0, max(0.1, 1.0 - ratio))
    values = loss[kept]
    well = values < values.mean()
    learned = kept[well]
    chosen = rng.choice(learned, int(keep * len(learned)), replace=False)
    weight[chosen] = 1.0 / keep
    return rng.permutation(np.concatenate([kept[~well], chosen])), weight


def rs2_round(perm: np.ndarray, pos: int, kept: np.ndarray, fraction: float, rng):
    """One seed's RS2 round without replacement: the next `round(fraction * M)` (>= 1) of its
    permutation, a new permutation of `kept` when the last one is used up.

    Returns:
      (order [c] int64, perm [M] int64, next pos).
    """
    size = max(1, round(fraction * len(kept)))
    if pos >= len(perm):
        perm, pos = rng.permutation(kept), 0
    order = perm[pos : pos + size]
    return order, perm, pos + len(order)


def continue_selection(scores: np.ndarray, kept: np.ndarray, labels, sched) -> np.ndarray:
    """prune_continue's kept examples of one seed: `kept_indices` of its scores, as the static
    path selects (`pipeline.plan`), among the training's examples.

    Args:
      scores: [N] float32, the seed's own scores of the split.
      kept: [M] int64, the training's examples; labels: [N] int.
      sched: the `PruneSchedule`.

    Returns:
      [m] int64 sorted dataset indices.
    """
    chosen = pruning.kept_indices(
        scores[kept],
        sched.strategy,
        prune_fraction=sched.ratio,
        labels=np.asarray(labels)[kept],
        seed=sched.seed,
        num_examples=len(kept),
    )
    return kept[chosen]


def seta_round(loss: np.ndarray, kept: np.ndarray, sched, rnd: int, prune: bool, rng):
    """One seed's SeTa round (module docstring): `order [c] int64` in visiting order.

    loss: [N] float32, the last recorded losses; kept: [M] int64; rnd: the round's number;
    prune: False in the annealing rounds."""
    keep = min(1.0, max(0.1, 1.0 - sched.ratio))
    size = max(1, int(keep * len(kept)))
    if not prune:
        return rng.choice(kept, size, replace=False)
    subset = kept[rng.permutation(len(kept))[:size]]
    groups = loss_groups(loss[subset], min(sched.num_groups, size))
    if rnd > 0:
        window = max(1, round(len(groups) * sched.window_scale))
        first = rnd % (len(groups) - window + 1)
        groups = groups[first : first + window]
    return rng.permutation(subset[np.concatenate(groups)])


def loss_groups(values: np.ndarray, num_groups: int) -> list[np.ndarray]:
    """Positions of `values [n]` in `num_groups` groups by 1-D k-means (Lloyd's, from the
    quantile centres; deterministic), the groups sorted by centre (easy first). Equal values
    are split in order into chunks of ceil(n / num_groups), as SeTa's code does."""
    values = np.asarray(values, np.float64)
    if num_groups == 1 or values.max() == values.min():
        size = -(-len(values) // num_groups)
        return np.array_split(np.arange(len(values)), np.arange(size, len(values), size))
    centres = np.quantile(values, (np.arange(num_groups) + 0.5) / num_groups)
    for _ in range(100):
        label = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        new = np.array(
            [
                values[label == g].mean() if (label == g).any() else centres[g]
                for g in range(num_groups)
            ]
        )
        if np.array_equal(new, centres):
            break
        centres = new
    label = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
    return [np.flatnonzero(label == g) for g in np.argsort(centres, kind="stable")]


def prunes_round(sched: PruneSchedule, start: int, total: int) -> bool:
    """Whether an InfoBatch or SeTa round starting at `start` prunes: before `delta` of the
    budget's `total` (later rounds anneal). Both count steps, or both rounds (InfoBatch's code:
    epoch < delta * num_epochs)."""
    return start < sched.delta * total and (sched.ratio > 0 or sched.schedule == "seta")


def round_indices(order: np.ndarray, count: np.ndarray, batch_size: int):
    """The batches of one round: `(idx [L, K, B] int64, mask [L, K, B] float32)`, L =
    ceil(max count / B). A seed's row is its first `count[k]` entries of `order [K, M]`,
    padded by repeating them with mask 0 (a seed with fewer examples than another waits out the
    round's last steps with empty batches, which leave its state unchanged)."""
    num_seeds = order.shape[0]
    length = max(1, math.ceil(int(count.max()) / batch_size))
    slots = length * batch_size
    idx = np.stack([np.resize(order[k, : count[k]], slots) for k in range(num_seeds)])
    mask = (np.arange(slots)[None] < count[:, None]).astype(np.float32)
    reshape = lambda a: a.reshape(num_seeds, length, batch_size).transpose(1, 0, 2)  # noqa: E731
    return reshape(idx), reshape(mask)
