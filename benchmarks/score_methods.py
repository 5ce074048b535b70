"""The measured methods of `bench_scores`, each run in a process of its own (see its docstring).

`run_method(model, method, cfg)` builds the model and synthetic inputs and runs one entry of
`METHODS` (the NNX small CNN and streamed EL2N are `score_cases`). Each returns a
dict with `examples_per_s` and `peak_mb` (and method-specific fields).
"""

from __future__ import annotations

import functools
import time

from benchmarks.timing import peak_mb as _peak_mb
from benchmarks.timing import timed as _timed
from benchmarks.timing import timed_once as _timed_once

NUM_SEEDS = 4
VERSUS_REPEATS = 3


def _sizes(method: str, cfg: dict) -> tuple[int, int]:
    """(batch size, timed batches) of a method under the model's settings."""
    if method == "ntk":
        return cfg["ntk_n"], 1
    prefix = {"forward": "fwd_", "el2n": "fwd_", "jacrev": "jac_"}.get(method, "")
    return cfg[f"{prefix}batch"], cfg[f"{prefix}iters"]


def run_method(model_name: str, method: str, cfg: dict) -> dict:
    """Throughput and peak memory of one METHOD on MODEL with settings `cfg` (see SETTINGS);
    run it in a fresh process, so the peak is its own."""
    import jax
    import numpy as np

    from benchmarks import score_cases
    from datadiet_jax.scores import api

    bsz, iters = _sizes(method, cfg)
    n = bsz * iters
    rng = np.random.default_rng(0)
    model, images = score_cases.model_and_inputs(model_name, n, rng)
    labels = rng.integers(0, 10, n)
    case = _Case(
        model, api.init_variables(model, jax.random.key(0), 1, images[:1]), images, labels, bsz, cfg
    )
    result = {"batch_size": bsz, "timed_batches": iters}
    result.update(METHODS[method](case))
    result["peak_mb"] = _peak_mb()
    return result


class _Case:
    """A model, its one-seed variables and the synthetic inputs of one measurement."""

    def __init__(self, model, variables, images, labels, batch_size: int, cfg: dict):
        import jax

        self.model, self.variables, self.images, self.labels = model, variables, images, labels
        self.batch_size, self.cfg, self.n = batch_size, cfg, len(images)
        self.one = jax.tree.map(lambda v: v[0], variables)

    def apply_fn(self, v, x):
        from datadiet_jax.scores.model_form import LinenModel

        kwargs = LinenModel.of(self.model).mode_kwargs(False)
        return self.model.apply(v, x, **kwargs)

    def per_batch(self, step):
        """A function running `step(x, y)` on every batch of the inputs."""
        import jax.numpy as jnp

        bsz = self.batch_size
        batches = [
            (self.images[i : i + bsz], self.labels[i : i + bsz]) for i in range(0, self.n, bsz)
        ]
        return lambda: [step(jnp.asarray(x), jnp.asarray(y)) for x, y in batches]


def _idle(case: _Case) -> dict:
    return {"examples_per_s": None}


def _train_with(fast: bool):
    """The pipeline's one-seed training step (`train.train_step`: SGD with Nesterov momentum and
    weight decay, BatchNorm in train mode), with the fast max-pool gradient or XLA's own."""

    def measure(case: _Case) -> dict:
        import jax
        import jax.numpy as jnp
        import numpy as np

        from configs import fashion_mnist
        from datadiet_jax.training import train

        tx = train.make_optimizer(fashion_mnist.get_config().train, 1000)
        state = train.create_train_state(jax.random.key(0), case.model, tx, case.images[:1])
        step = jax.jit(functools.partial(train.train_step, case.model, tx, fast=fast))
        mask = jnp.ones((case.batch_size,), jnp.float32)
        box = [state]

        def one(x, y):
            box[0], metrics = step(box[0], {"image": x, "label": y.astype(np.int32), "mask": mask})
            return metrics["loss"]

        return {"examples_per_s": _timed(case.per_batch(one), case.n), "fast_backward": fast}

    return measure


def _forward(case: _Case) -> dict:
    import jax

    fwd = jax.jit(case.apply_fn)
    return {"examples_per_s": _timed(case.per_batch(lambda x, y: fwd(case.one, x)), case.n)}


def _public(kind: str):
    def measure(case: _Case) -> dict:
        from datadiet_jax.scores import api

        fn = api.el2n_scores if kind == "el2n" else api.grand_scores
        call = lambda: fn(
            case.model,
            case.variables,
            case.images,
            case.labels,  # noqa: E731
            batch_size=case.batch_size,
        )
        return {"examples_per_s": _timed(call, case.n)}

    return measure


def _vmap_grad(case: _Case) -> dict:
    import jax
    import jax.numpy as jnp

    from datadiet_jax.scores.pergrad import fallback

    step = jax.jit(lambda x, y: jnp.sqrt(fallback.linen_sq_norms(case.apply_fn, case.one, x, y)))
    return {"examples_per_s": _timed(case.per_batch(step), case.n)}


def _versus(case: _Case) -> dict:
    """GraNd against a jitted `vmap(grad)` in this one process, per batch: the compiled batch
    program `grand_scores` runs for the model (the method its plan picks; its fixed costs, the
    method race and the first-batch guard, are left out) and `vmap(grad)` of every param, both
    warmed up (compilation left out), then `VERSUS_REPEATS` timed passes over all batches of each,
    interleaved, the best of each counted; with the share of params on fast rules."""
    import jax
    import jax.numpy as jnp

    from datadiet_jax.scores import model_form, programs
    from datadiet_jax.scores.pergrad import fallback
    from datadiet_jax.scores.pergrad import method as method_lib

    adapted, packed = model_form.from_pair(case.model, case.variables)
    one = jax.tree.map(lambda v: v[0], packed)
    spec = jax.ShapeDtypeStruct((case.batch_size, *case.images.shape[1:]), case.images.dtype)
    method = method_lib.sites_method(
        isinstance(adapted, model_form.LinenModel), adapted.logits, one, spec
    )
    counts = method_lib.coverage(method, adapted.logits, one, spec)
    placed = jax.device_put(packed)
    ones = jnp.ones((case.batch_size,), jnp.float32)

    def program(m):
        fn = programs.batch_program(adapted, "grand", "unroll", method=m)
        return case.per_batch(lambda x, y: fn(placed, x, y.astype(jnp.int32), ones)[0])

    step = jax.jit(lambda x, y: jnp.sqrt(fallback.linen_sq_norms(case.apply_fn, case.one, x, y)))
    # grand_scores runs the faster of its two programs (pergrad/method.py), both timed here.
    runs = {
        "sites": program(method),
        "plan_vmap_grad": program("vmap_grad"),
        "vmap_grad": case.per_batch(step),
    }
    best = dict.fromkeys(runs, 0.0)
    for fn in runs.values():
        jax.block_until_ready(fn())  # compile, warm up
    for _ in range(VERSUS_REPEATS):
        for name, fn in runs.items():
            best[name] = max(best[name], _timed_once(fn, case.n))
    grand = max(best["sites"], best["plan_vmap_grad"])
    return {
        "examples_per_s": grand,
        "sites_examples_per_s": best["sites"],
        "plan_vmap_grad_examples_per_s": best["plan_vmap_grad"],
        "vmap_grad_examples_per_s": best["vmap_grad"],
        "grand_vs_vmap_grad": grand / best["vmap_grad"],
        "sites_vs_vmap_grad": best["sites"] / best["vmap_grad"],
        "sites_method": method,
        "fast_param_share": 1.0 - counts["fallback"] / sum(counts.values()),
        "coverage": counts,
    }


def _jacrev(case: _Case) -> dict:
    import jax
    import jax.numpy as jnp

    from datadiet_jax.scores.losses import cross_entropy

    @jax.jit
    def step(x, y):
        losses = lambda p: cross_entropy(case.apply_fn({**case.one, "params": p}, x), y)  # noqa: E731
        jac = jax.jacrev(losses)(case.one["params"])
        return jnp.sqrt(sum(jnp.sum(j.reshape(len(y), -1) ** 2, 1) for j in jax.tree.leaves(jac)))

    return {"examples_per_s": _timed(case.per_batch(step), case.n)}


def _kseed(case: _Case) -> dict:
    import jax

    from datadiet_jax.scores import api

    stacked = api.init_variables(case.model, jax.random.key(1), NUM_SEEDS, case.images[:1])
    singles = [jax.tree.map(lambda v, k=k: v[k : k + 1], stacked) for k in range(NUM_SEEDS)]
    kw = dict(batch_size=case.batch_size)
    args = (case.images, case.labels)
    together = _timed(lambda: api.grand_scores(case.model, stacked, *args, **kw), case.n)
    seq = _timed(lambda: [api.grand_scores(case.model, s, *args, **kw) for s in singles], case.n)
    return {
        "examples_per_s": together,
        "sequential_examples_per_s": seq,
        "kseed_speedup": together / seq,
    }


def _guard(case: _Case) -> dict:
    """Seconds of the first-batch guard (cold, warm) and its share of a `full_n`-example call.

    The guard reuses the call's own first batch (its per-layer norms), so its cost is the exact
    `vmap(grad)` program on a few examples and the comparison. The call it is set against is the
    compilation and first batch of the GraNd program plus `full_n` examples at its measured rate.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from datadiet_jax.scores import batches, model_form, programs
    from datadiet_jax.scores.pergrad import guard

    model, variables = model_form.from_pair(
        case.model, case.variables
    )  # the form the scores compile
    fn = programs.batch_program(model, "grand", "unroll")
    host = batches.array_batches(case.images, case.labels.astype(np.int32), case.batch_size)
    placed = [tuple(map(jnp.asarray, batch[:3])) for batch in host]
    start = time.perf_counter()
    first = jax.block_until_ready(fn(variables, *placed[0]))
    program_cold = time.perf_counter() - start
    m = guard.NUM_EXAMPLES
    fast = {key: np.asarray(v)[:, :m] for key, v in first[1].items()}
    one = [jax.tree.map(lambda v: v[0], variables)]
    x, y = placed[0][0][:m], placed[0][1][:m]
    times = []
    programs.clear_programs()  # the guard's reference compiles in the first (cold) run
    for _ in range(2):  # cold, then warm
        start = time.perf_counter()
        guard.guard(programs.exact_program(model), fast, one, x, y)
        times.append(time.perf_counter() - start)
    rate = _timed(lambda: [fn(variables, *b) for b in placed], case.n)
    full_n = case.cfg["full_n"]
    full_s = program_cold + full_n / rate
    return {
        "examples_per_s": rate,
        "guard_cold_s": times[0],
        "guard_warm_s": times[1],
        "program_cold_s": program_cold,
        "full_n": full_n,
        "full_call_s_extrapolated": full_s,
        "guard_cold_share": times[0] / full_s,
        "guard_warm_share": times[1] / full_s,
    }


def _ntk(case: _Case) -> dict:
    """Seconds of the NTK Gram matrix of the inputs by `ntk_gram` and by `jacrev` + `J @ J.T`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from datadiet_jax.dynamics import ntk

    images = case.images[: case.cfg["ntk_n"]]
    n, x, one = len(images), jnp.asarray(images), case.one

    @jax.jit
    def jacrev_gram(v, x):
        # Per-example Jacobians (jacrev of the whole batch would differentiate every logit
        # through every example), then J @ J.T of the full [n*C, P] Jacobian.
        def logits_one(p, xi):
            return case.model.apply({**v, "params": p}, xi[None], train=False)[0]

        jac = jax.vmap(jax.jacrev(logits_one), in_axes=(None, 0))(v["params"], x)
        j = jnp.concatenate(
            [a.reshape(a.shape[0] * a.shape[1], -1) for a in jax.tree.leaves(jac)], 1
        )
        return jnp.dot(j, j.T, precision=jax.lax.Precision.HIGHEST)  # [n*C, n*C]

    def ours():
        return ntk.ntk_gram(case.model, case.variables, images, batch_size=n)

    times = {}
    for name, fn in (("ntk", ours), ("jacrev_ntk", lambda: jacrev_gram(one, x))):
        jax.block_until_ready(fn())  # compile
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times[name] = time.perf_counter() - start
        if name == "ntk":
            got = np.asarray(out)[0]
        else:
            c = out.shape[0] // n
            want = np.einsum("icjc->ij", np.asarray(out).reshape(n, c, n, c))
    return {
        "batch_size": n,
        "examples_per_s": n / times["ntk"],
        "ntk_s": times["ntk"],
        "jacrev_ntk_s": times["jacrev_ntk"],
        "ntk_vs_jacrev_speedup": times["jacrev_ntk"] / times["ntk"],
        "max_rel_diff": float(np.max(np.abs(got - want)) / np.max(np.abs(want))),
    }


# The methods in the order `bench_scores` runs them.
METHODS = {
    "idle": _idle,
    "train": _train_with(fast=True),
    "train_xla": _train_with(fast=False),
    "forward": _forward,
    "el2n": _public("el2n"),
    "grand": _public("grand"),
    "vmap_grad": _vmap_grad,
    "versus": _versus,
    "jacrev": _jacrev,
    "kseed": _kseed,
    "guard": _guard,
    "ntk": _ntk,
}
