"""Many retraining runs as one stacked training end as the separate runs do."""

import json
import os

import jax
import numpy as np

from datadiet_jax.pipeline import config_check, stacked
from datadiet_jax.training import initial, loop
from tests.conftest import SMOKE_ARGS, run_main, smoke_config, tiny_model, tiny_spec
from tests.references import make_split

# float32 rounding of the same per-seed computation batched with more seeds.
RTOL, ATOL = 1e-5, 1e-6


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


def test_stacked_members_equal_their_own_trainings(tmp_path):
    split = make_split(n=48)
    rng = np.random.default_rng(0)
    kept = [np.sort(rng.choice(48, 20, replace=False)) for _ in range(2)]
    model = tiny_model(split)
    own = [
        loop.fit(model, split, k, tiny_spec(tmp_path / f"own{i}", num_steps=6))
        for i, k in enumerate(kept)
    ]
    spec = tiny_spec(tmp_path / "stacked", num_seeds=4, num_steps=6, streams=(0, 1, 0, 1))
    state, stats, _ = loop.fit(model, split, np.repeat(np.stack(kept), 2, axis=0), spec)
    for s, (own_state, own_stats, _) in enumerate(own):
        member = jax.tree.map(lambda x, s=s: x[2 * s : 2 * s + 2], state)
        _close(member.params, own_state.params)
        _close(member.model_state, own_state.model_state)
        # Each member saw its own kept set, and only it.
        seen = np.asarray(stats["forgetting"]["seen"])[2 * s : 2 * s + 2]
        np.testing.assert_array_equal(seen, np.asarray(own_stats["forgetting"]["seen"]))
        assert np.all(seen[:, np.setdiff1d(np.arange(48), kept[s])] == 0)
    # The two seeds of a member differ; the same seed of the two members starts alike.
    leaves = jax.tree.leaves(initial.initial_states(model, split, spec).params)
    first = max(leaves, key=np.size)  # a kernel (biases start at zero)
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.allclose(first[0], first[1])


def test_pipeline_results_with_and_without_stacking_agree(smoke_run, tmp_path):
    # The suite's smoke run (CPU: retrain.stack 'auto' is off) against the same run stacked.
    reference, _ = smoke_run
    workdir = str(tmp_path / "stacked")
    proc = run_main(*SMOKE_ARGS, f"--workdir={workdir}", "--config.retrain.stack=on")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for mode, folder in (("off", reference), ("on", workdir)):
        with open(os.path.join(folder, "results.json")) as f:
            results[mode] = {r["name"]: r for r in json.load(f)["runs"]}
        # el2n@1 and random at 50% share a size: one group of two; the full data trains alone.
        assert os.path.isdir(os.path.join(folder, "retrain", "_stacked")) == (mode == "on")
    assert results["on"].keys() == results["off"].keys() and len(results["on"]) == 3
    for name, on in results["on"].items():
        off = results["off"][name]
        np.testing.assert_allclose(on["test_loss"], off["test_loss"], rtol=1e-4, atol=1e-5)
        assert on["status"] == off["status"] and on["num_kept"] == off["num_kept"]
    spec = config_check.retrain_spec(smoke_config(**{"retrain.stack": "auto"}))
    assert stacked.enabled(spec) == (jax.default_backend() != "cpu")
