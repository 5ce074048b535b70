"""The cross-method benchmark at smoke scale: every method has its rows, each kept set is what
`pruning.kept_indices` makes of the score run's files, and every method has its scoring cost."""

import json
import os

import numpy as np
import pytest

from configs.studies.methods import METHODS, METHODS_SCALES
from datadiet_jax.pipeline import artifacts, data, plan
from datadiet_jax.scores import pruning
from experiments import methods, sweeps
from tests.conftest import figure_dirs, read_rows

SETTINGS = METHODS_SCALES["smoke"]
EPOCH = SETTINGS.score_epoch


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    runs, out = figure_dirs(tmp_path_factory, "methods")
    outputs = methods.reproduce("smoke", runs, out)
    return dict(runs=runs, out=out, outputs=outputs, scale=methods.methods_scale("smoke"))


def _score_file(smoke, name):
    kind, _, epoch = name.partition("@")
    folder = os.path.join(smoke["runs"], "smoke", methods.SCORE_ITEM, "scores")
    if not epoch:  # a score of the end of the score training: its only file
        (f,) = [f for f in os.listdir(folder) if f.startswith(f"{kind}_epoch")]
        return artifacts.load_scores(os.path.join(folder, f))
    return artifacts.load_scores(os.path.join(folder, f"{kind}_epoch{int(epoch):03d}.npz"))


def test_every_method_and_fraction_has_its_rows(smoke):
    rows = read_rows(os.path.join(smoke["out"], "methods.csv"))
    have = {(r["method"], float(r["prune_fraction"])) for r in rows}
    for m in METHODS:
        for f in SETTINGS.prune_fractions:
            assert (m.name, f) in have, (m.name, f)
    assert ("full", 0.0) in have
    for r in rows:
        assert r["status"] == "ok", r
        assert 0.0 < float(r["test_accuracy"]) <= 1.0
    assert all(os.path.exists(p) for p in smoke["outputs"]["figure"])


def test_kept_sets_are_the_selection_of_the_score_files(smoke):
    scale = smoke["scale"]
    config = scale.base_config()
    labels_split = data.load_splits(config.data)[0]
    checked = 0
    for m in METHODS:
        if m.strategy == "random":
            continue
        item = f"methods_{m.strategy}_noise00"
        score = m.score_name(EPOCH)
        loaded = _score_file(smoke, score)
        options = {}
        if m.strategy in pruning.FEATURE_STRATEGIES:
            options["features"] = _score_file(smoke, f"features@{EPOCH}")["per_seed"]
        if m.strategy == "dual_sampling":
            options["mean_probs"] = _score_file(smoke, "mean_prob")["mean"]
        scores = None if loaded["per_seed"].ndim == 3 else loaded["per_seed"].mean(0)
        for f in SETTINGS.prune_fractions:
            run_dir = os.path.join(
                sweeps.workdir(smoke["runs"], scale, {"name": item}),
                "retrain",
                plan.run_name(score, m.strategy, f),
            )
            with np.load(os.path.join(run_dir, "kept.npz")) as k:
                kept = k["index"]
            want = pruning.kept_indices(
                scores,
                m.strategy,
                prune_fraction=f,
                labels=labels_split.labels,
                seed=config.seed,
                beta=config.prune.ccs_beta,
                **options,
            )
            np.testing.assert_array_equal(kept, want, err_msg=m.name)
            assert len(kept) == pruning.num_to_keep(labels_split.num_examples, f)
            checked += 1
    assert checked == (len(METHODS) - 1) * len(SETTINGS.prune_fractions)


def test_every_method_has_its_cost(smoke):
    rows = {r["method"]: r for r in read_rows(os.path.join(smoke["out"], "methods_costs.csv"))}
    assert set(rows) == {m.name for m in METHODS}
    train_epochs = smoke["scale"].base_config().score.train_epochs
    assert float(rows["random"]["cost_k_seeds"]) == pytest.approx(0.0, abs=0.05)
    for name in ("el2n", "entropy", "moderate", "kcenter"):
        assert int(float(rows[name]["train_epochs"])) == EPOCH
    for name in ("forgetting", "dyn_unc", "tdds", "dual", "d2"):
        assert int(float(rows[name]["train_epochs"])) == train_epochs
    for r in rows.values():
        assert float(r["compute_seconds"]) >= 0 and float(r["cost_k_seeds"]) >= 0
    # A feature selector pays for the features: at least their recorded computation.
    path = os.path.join(smoke["runs"], "smoke", methods.SCORE_ITEM, "scores", "timings.jsonl")
    with open(path) as f:
        timings = [json.loads(line) for line in f if '"features"' in line]
    assert timings and float(rows["kcenter"]["compute_seconds"]) >= timings[-1]["seconds"]
    summary = open(smoke["outputs"]["summary"][0]).read()
    assert all(m.name in summary for m in METHODS)


def test_summary_opens_with_the_protocol(smoke):
    config = smoke["scale"].base_config()
    summary = open(smoke["outputs"]["summary"][0]).read()
    assert summary.index("## Protocol") < summary.index("## Test accuracy")
    # 256 examples in batches of the smoke config: the padded last batch counts as a step.
    steps = -(-sweeps.num_train_examples(config) // config.train.batch_size)
    epochs = config.train.num_epochs
    assert f"| full-data training | {epochs} epochs x {steps} steps = {epochs * steps} steps |" in (
        summary
    )
    assert f"| batch size | {config.train.batch_size} |" in summary
    assert "| retraining budget | fixed steps" in summary
    assert f"| retraining seeds per point | {SETTINGS.num_retrain_seeds} |" in summary
    assert f"| scoring cost ({methods.SCORE_ITEM}) |" in summary
    assert "mean ± std (n)" in summary and "(n=1)" in summary
