"""The NNX small CNN and streamed EL2N cases of `bench_scores`, each run in its own process.

Usage:

    from benchmarks import score_cases
    score_cases.run_nnx("grand", {"batch": 128, "iters": 8})  # {'examples_per_s', 'peak_mb', ...}
    score_cases.run_stream(10_000)  # streamed EL2N: rate and peak RSS at N = 10,000
"""

from __future__ import annotations

import time

from benchmarks.timing import peak_mb, timed

STREAM_INPUT_BATCH = 100


def run_stream(num_examples: int) -> dict:
    """EL2N of the small CNN on a generator of random batches; nothing is held but the result."""
    import jax
    import numpy as np

    from datadiet_jax.models import get_model
    from datadiet_jax.scores import api

    model = get_model("small_cnn", 10)
    variables = api.init_variables(model, jax.random.key(0), 1, np.zeros((1, 28, 28, 1)))

    def batches(seed):
        rng = np.random.default_rng(seed)
        for lo in range(0, num_examples, STREAM_INPUT_BATCH):
            b = min(STREAM_INPUT_BATCH, num_examples - lo)
            yield rng.normal(size=(b, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, b)

    api.el2n_scores(model, variables, batches(1), batch_size=256)  # compile
    start = time.perf_counter()
    out = api.el2n_scores(model, variables, batches(0), batch_size=256)
    rate = num_examples / (time.perf_counter() - start)
    assert out.shape == (1, num_examples), out.shape
    return {
        "batch_size": 256,
        "num_examples": num_examples,
        "examples_per_s": rate,
        "peak_mb": peak_mb(),
    }


def nnx_small_cnn(key, num_classes: int = 10, width: int = 32, hidden: int = 128):
    """The NNX twin of `models.SmallCNN` (28x28x1 inputs), built from `key`."""
    from flax import nnx

    class SmallCNN(nnx.Module):
        def __init__(self, rngs):
            bn = dict(momentum=0.9, epsilon=1e-5, rngs=rngs)
            self.conv1 = nnx.Conv(1, width, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(width, **bn)
            self.conv2 = nnx.Conv(
                width, 2 * width, (3, 3), padding="SAME", use_bias=False, rngs=rngs
            )
            self.bn2 = nnx.BatchNorm(2 * width, **bn)
            self.dense = nnx.Linear(2 * width * 7 * 7, hidden, use_bias=False, rngs=rngs)
            self.bn3 = nnx.BatchNorm(hidden, **bn)
            self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

        def __call__(self, x):
            for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
                x = nnx.max_pool(nnx.relu(bn(conv(x))), (2, 2), strides=(2, 2))
            x = nnx.relu(self.bn3(self.dense(x.reshape(x.shape[0], -1))))
            return self.head(x)

    return SmallCNN(nnx.Rngs(key))


def run_nnx(method: str, cfg: dict) -> dict:
    """GraNd (public `grand_scores`, K=1) or `vmap(grad)` of the NNX small CNN."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from datadiet_jax.scores import api, model_form
    from datadiet_jax.scores.pergrad import fallback

    model = nnx.vmap(lambda k: nnx_small_cnn(k), in_axes=0)(jax.random.split(jax.random.key(0), 1))
    graphdef, state = nnx.split(model)
    bsz, iters = cfg["batch"], cfg["iters"]
    n = bsz * iters
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    result = {"batch_size": bsz, "timed_batches": iters}
    if method == "grand":
        result["examples_per_s"] = timed(
            lambda: api.grand_scores(graphdef, state, images, labels, batch_size=bsz), n
        )
    else:
        adapted, packed = model_form.from_pair(graphdef, state)
        one = jax.tree.map(lambda v: v[0], packed)
        step = jax.jit(
            lambda x, y: jnp.sqrt(
                sum(fallback.pure_leaf_sq_norms(adapted.logits, one, x, y).values())
            )
        )
        batches = [(images[i : i + bsz], labels[i : i + bsz]) for i in range(0, n, bsz)]
        result["examples_per_s"] = timed(
            lambda: [step(jnp.asarray(x), jnp.asarray(y)) for x, y in batches], n
        )
    result["peak_mb"] = peak_mb()
    return result


def model_and_inputs(model_name: str, num_examples: int, rng):
    """A bench model (`datadiet_jax.models` or `transformer_models.MODELS`) with 10 classes and
    `num_examples` synthetic inputs of its shape: (model, images [N, ...] or token ids [N, T])."""
    import numpy as np

    from benchmarks import transformer_models
    from datadiet_jax.models import get_model

    if model_name in transformer_models.MODELS:
        model = transformer_models.MODELS[model_name](num_classes=10)
        return model, transformer_models.inputs(model_name, num_examples, rng)
    model = get_model(model_name, 10)
    shape = (28, 28, 1) if model_name == "small_cnn" else (32, 32, 3)
    return model, rng.normal(size=(num_examples, *shape)).astype(np.float32)
