"""The batches of a pruned K-seed training: each round's per-seed kept sets, planned on the host.

At the first step of each round (`prune_schedules`), the feed reads the pruning state from the
training statistics, plans every seed's next round from its own recorded losses (InfoBatch), its
permutation (RS2) or its own network's scores (prune and continue), writes the new state back
into the statistics (so it is checkpointed with them) and yields the round's batches through
`input_pipeline.round_batches`. Batches keep their shape `[K, B]`: a round lasts as many steps
as its largest per-seed set needs, and the padding has mask 0. Every draw comes from
`keys.prune_rng` (seed, purpose, seed index, round), so a training stopped at any step and
resumed plans the same rounds as an uninterrupted one.

Usage (inside `loop.fit`):

    feed = PruneFeed(model, split, kept, sched, stream, ids=(seed, purpose))
    live = {"state": state, "stats": stats}          # stats['prune']: `prune_schedules` state
    for batch in feed.batches(live):                  # may replace live['stats']['prune']
        state, stats = live["state"], live["stats"]
        state, stats, loss = step_fn(state, stats, batch)
        live["state"], live["stats"] = state, stats
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np
from absl import logging

from datadiet_jax.scores import api
from datadiet_jax.training import input_pipeline, keys, train_mesh
from datadiet_jax.training import prune_schedules as ps


@dataclasses.dataclass
class PruneFeed:
    """The batches of one pruned training (`batches`).

    Attributes:
      model: the model's form (prune and continue scores with it).
      split: the training `data.Split`.
      kept: [M] or [K, M] int64, the training's examples.
      sched: the `prune_schedules.PruneSchedule`.
      stream: the training's `input_pipeline.BatchStream` (num_steps: the budget's stop).
      ids: (run seed, purpose) of the round keys.
      budget: (steps, rounds), `TrainSpec.num_steps` and `num_rounds`. With rounds > 0 the
        feed ends after that many rounds, InfoBatch's and SeTa's annealing starts at a share
        `delta` of them, and each batch carries `rate_step` [K]: the step of the full-data
        training at the same point of its epoch (step j of round r, L steps long, gets
        r * S + floor(j * S / L), S = the kept set's steps per epoch), so the learning rate
        follows the rounds as InfoBatch's code does (it rebuilds its schedule every epoch
        with that epoch's length). With rounds 0 the budget is the steps, which annealing
        is a share of.
      mesh: the training's mesh, or None.
      score_batch_size: examples per scoring batch (prune and continue).
    """

    model: object
    split: object
    kept: np.ndarray
    sched: ps.PruneSchedule
    stream: input_pipeline.BatchStream
    ids: tuple[int, int]
    budget: tuple[int, int]
    mesh: object = None
    score_batch_size: int = 256

    def __post_init__(self):
        k = self.stream.num_seeds
        self.kept = np.broadcast_to(np.asarray(self.kept, np.int64), (k, np.shape(self.kept)[-1]))
        self.index = keys.seed_indices(k, self.stream.streams)
        self.make_batch = input_pipeline.round_batch_fn(self.split, self.stream)
        self.num_rounds = self.budget[1]
        self.full_steps = input_pipeline.steps_per_epoch(self.kept.shape[1], self.stream.batch_size)
        self.current = (0, 0, -1)  # the round being fed: (first step, length, number)

    def batches(self, live: dict) -> Iterator[dict]:
        """Yields the batches of steps `stream.start_step` to `stream.num_steps - 1`, starting
        each round from `live['stats']['prune']` (and, for prune and continue, scoring
        `live['state']`) when the loop asks for its first batch."""
        step, stop, size = self.stream.start_step, self.stream.num_steps, self.stream.batch_size
        while step < stop:
            prune = {k: train_mesh.to_host(v) for k, v in live["stats"]["prune"].items()}
            if step >= int(prune["start"][0]) + int(prune["length"][0]):
                if self.num_rounds and int(prune["round"][0]) + 1 >= self.num_rounds:
                    return  # the budget's rounds are done
                prune = self.next_round(prune, step, live["state"])
                placed = train_mesh.place(jax_arrays(prune), self.mesh)
                live["stats"] = {**live["stats"], "prune": placed}
            idx, mask = ps.round_indices(prune["order"], prune["count"], size)
            start, rnd = int(prune["start"][0]), int(prune["round"][0])
            self.current = (start, len(idx), rnd)
            part = slice(step - start, min(len(idx), stop - start))
            stream = dataclasses.replace(self.stream, start_step=step)
            rounds = input_pipeline.round_batches(self.make_batch, idx[part], mask[part], stream)
            for batch in rounds:
                if self.num_rounds:
                    batch["rate_step"] = self.rate_step(rnd, step - start, len(idx))
                yield batch
                step += 1

    def rate_step(self, rnd: int, j: int, length: int) -> np.ndarray:
        """`[K] int32`: the full-data step whose learning rate step j of round `rnd` (of
        `length` steps) takes (see `budget`)."""
        s = self.full_steps
        return np.full(self.stream.num_seeds, rnd * s + (j * s) // length, np.int32)

    def next_round(self, prune: dict, step: int, state) -> dict:
        """The pruning state of the round starting at `step` (host numpy, all K seeds)."""
        sched, new = self.sched, {k: np.array(v, copy=True) for k, v in prune.items()}
        rnd = int(prune["round"][0]) + 1
        if sched.schedule == "prune_continue" and rnd == sched.at_epoch:
            new["keep"] = self.continue_keep(state)
        for k in range(self.kept.shape[0]):
            rng = keys.prune_rng(*self.ids, self.index[k], rnd)
            order = self.seed_round(new, k, rng, step, rnd)
            new["order"][k, : len(order)] = order
            new["count"][k] = len(order)
        new["round"][:] = rnd
        new["start"][:] = step
        new["length"][:] = max(1, math.ceil(int(new["count"].max()) / self.stream.batch_size))
        return new

    def seed_round(self, new: dict, k: int, rng, step: int, rnd: int) -> np.ndarray:
        """Seed k's order of round `rnd`, starting at `step` (updating its rows of `new`)."""
        return _ROUNDS[self.sched.schedule](self, new, k, rng, step, rnd)

    def prunes(self, step: int, rnd: int) -> bool:
        """Whether InfoBatch's or SeTa's round `rnd`, starting at `step`, prunes: before
        `delta` of the budget's rounds, or of its steps (later rounds anneal)."""
        if self.num_rounds:
            return ps.prunes_round(self.sched, rnd, self.num_rounds)
        return ps.prunes_round(self.sched, step, self.budget[0])

    def _infobatch(self, new: dict, k: int, rng, step: int, rnd: int) -> np.ndarray:
        prunes = self.prunes(step, rnd)
        order, new["weight"][k] = ps.infobatch_round(
            new["loss"][k], self.kept[k], self.sched.ratio, prunes, rng
        )
        return order

    def _seta(self, new: dict, k: int, rng, step: int, rnd: int) -> np.ndarray:
        prunes = self.prunes(step, rnd)
        return ps.seta_round(new["loss"][k], self.kept[k], self.sched, rnd, prunes, rng)

    def _rs2(self, new: dict, k: int, rng, step: int, rnd: int) -> np.ndarray:
        order, new["perm"][k], new["pos"][k] = ps.rs2_round(
            new["perm"][k], int(new["pos"][k]), self.kept[k], self.sched.fraction, rng
        )
        return order

    def _continue(self, new: dict, k: int, rng, step: int, rnd: int) -> np.ndarray:
        kept = self.kept[k]
        return rng.permutation(kept[new["keep"][k][kept]])

    def continue_keep(self, state) -> np.ndarray:
        """prune and continue: `[K, N]` bool, each seed's kept set chosen from its own scores."""
        scores = self.scores(train_mesh.gather(state, self.mesh))
        keep = np.zeros(scores.shape, bool)
        for k in range(len(scores)):
            chosen = ps.continue_selection(scores[k], self.kept[k], self.split.labels, self.sched)
            keep[k, chosen] = True
        logging.info(
            "prune_continue: kept %s of %d examples per seed (%s, %s, ratio %g)",
            keep.sum(1).tolist(),
            self.kept.shape[1],
            self.sched.score,
            self.sched.strategy,
            self.sched.ratio,
        )
        return keep

    def scores(self, state) -> np.ndarray:
        """`[K, N]` float32: the schedule's score of every example of the split under each
        seed's network, in eval mode, on the un-augmented inputs (as the score stage has them,
        `Split.model_inputs`)."""
        split, name = self.split, self.sched.score
        variables = {"params": state.params, "state": state.model_state}
        inputs = (self.model, variables, split.model_inputs(), split.labels)
        options = {"batch_size": self.score_batch_size, "integer_inputs": split.kind == "tokens"}
        if name == "grand":
            return api.grand_scores(*inputs, **options)
        return api.logit_scores(name, *inputs, **options)


# Each schedule's round of one seed (`PruneFeed.seed_round`); its names are `ps.SCHEDULES`.
_ROUNDS = {
    "infobatch": PruneFeed._infobatch,
    "rs2": PruneFeed._rs2,
    "seta": PruneFeed._seta,
    "prune_continue": PruneFeed._continue,
}


def jax_arrays(prune: dict) -> dict:
    """The host state as device arrays (the statistics' leaves)."""
    return {k: jnp.asarray(v) for k, v in prune.items()}
