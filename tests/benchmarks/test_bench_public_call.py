"""`benchmarks/bench_public_call.py`: its core function on a tiny model, in this process.

The warm call's scores equal the `vmap(grad)` reference norms it is timed against, the record
has the fields the table and the docs read, and the warm call reuses the cold call's decisions
(no race, no site finder).
"""

import flax.linen as nn
import jax
import numpy as np

from benchmarks import bench_public_call
from datadiet_jax.scores import api, decisions


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def test_measure_records_the_calls_and_matches_vmap_grad():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(72, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 72)
    model = TinyCNN()
    variables = api.init_variables(model, jax.random.key(0), 1, images[:1])
    decisions.clear()  # so the first call is cold
    record, scores, reference = bench_public_call.measure(
        model, variables, images, labels, 8, repeats=2
    )
    np.testing.assert_allclose(scores[0], reference, rtol=1e-4)
    assert record["max_rel_diff"] < 1e-4
    assert (record["num_examples"], record["batch_size"], record["num_batches"]) == (72, 8, 9)
    for name in ("cold", "warm", "vmap_grad"):
        assert record[f"{name}_s"] > 0
        assert record[f"{name}_examples_per_s"] == 72 / record[f"{name}_s"]
    assert record["warm_ratio"] == record["vmap_grad_s"] / record["warm_s"]
    assert record["warm_s"] == min(record["warm_all_s"]) and len(record["vmap_grad_all_s"]) == 2
    assert 0 <= record["warm_fixed_share"] < 1
    assert record["cold_counts"]["races"] == 1  # 9 batches: the guard's first, then 8 raced
    warm = record["warm_counts"]  # every decision reused
    assert warm["races"] == warm["site_finders"] == warm["guards"] == warm["batch_checks"] == 0
    results = {"machine": bench_public_call.machine(), "results": {"tiny": record}}
    assert "| tiny | 72 | 8 |" in bench_public_call.table(results)
    assert "XLA_FLAGS=" in bench_public_call.table(results)
