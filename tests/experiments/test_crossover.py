"""The crossover study at smoke scale, and its committed CPU-scale results: every point has its
seeds, each kept set is the hardest or easiest of its score file, every run trains the full
data's steps, and the crossover each summary states is the one its CSV shows (recomputed here
from the CSV's rows alone)."""

import functools
import os
import re
from collections import defaultdict

import numpy as np
import pytest

from configs.studies.crossover import CROSSOVER_SCALES
from datadiet_jax.pipeline import artifacts, plan
from experiments import crossover, sweeps
from tests.conftest import figure_dirs, read_rows

SETTINGS = CROSSOVER_SCALES["smoke"]
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "figures")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    runs, out = figure_dirs(tmp_path_factory, "crossover")
    outputs = crossover.reproduce("smoke", runs, out)
    return dict(runs=runs, out=out, outputs=outputs, scale=crossover.crossover_scale("smoke"))


def test_every_point_has_its_seeds(smoke):
    rows = read_rows(os.path.join(smoke["out"], "crossover.csv"))
    count = defaultdict(int)
    for r in rows:
        assert r["status"] == "ok", r
        assert 0.0 < float(r["test_accuracy"]) <= 1.0
        count[(int(r["num_examples"]), r["score"], r["strategy"], float(r["prune_fraction"]))] += 1
    want = {}
    for size in SETTINGS.sizes:
        n = size.num_examples
        want[(n, "full", "full", 0.0)] = SETTINGS.num_retrain_seeds
        for f in SETTINGS.prune_fractions:
            want[(n, "random", "random", f)] = SETTINGS.num_retrain_seeds
            for score in SETTINGS.size_scores(size):
                for strategy in ("hardest", "easiest"):
                    want[(n, score, strategy, f)] = SETTINGS.num_retrain_seeds
    assert dict(count) == want
    assert all(os.path.exists(p) for p in smoke["outputs"]["figure"])


def test_every_run_trains_the_full_data_steps(smoke):
    rows = read_rows(os.path.join(smoke["out"], "crossover.csv"))
    batch = smoke["scale"].base_config().train.batch_size
    for r in rows:
        n, epochs = int(r["num_examples"]), int(r["num_epochs"])
        assert int(r["steps"]) == epochs * -(-n // batch), r  # ceil(N / batch) batches an epoch
    with open(os.path.join(smoke["out"], "crossover_summary.md")) as f:
        text = f.read()
    assert text.index("## Protocol") < text.index("## el2n@1")
    for size in SETTINGS.sizes:
        steps = size.num_epochs * -(-size.num_examples // batch)
        row = f"| {size.num_examples} | fixed steps | {size.num_epochs} epochs, {steps} steps |"
        assert row in text


def test_kept_sets_are_the_hardest_or_easiest_of_the_score_file(smoke):
    scale, checked = smoke["scale"], 0
    for size in SETTINGS.sizes:
        tag = crossover.size_tag(size)
        folder = os.path.join(smoke["runs"], "smoke", f"{tag}_scores", "scores")
        for score in SETTINGS.size_scores(size):
            kind, _, epoch = score.partition("@")
            names = [f for f in os.listdir(folder) if f.startswith(f"{kind}_epoch")]
            if epoch:
                names = [f"{kind}_epoch{int(epoch):03d}.npz"]
            mean = artifacts.load_scores(os.path.join(folder, names[0]))["per_seed"].mean(0)
            assert mean.shape == (size.num_examples,)
            for strategy in ("hardest", "easiest"):
                item = {"name": f"{crossover.size_tag(size)}_{strategy}_noise00"}
                for f in SETTINGS.prune_fractions:
                    run = plan.run_name(score, strategy, f)
                    path = os.path.join(sweeps.workdir(smoke["runs"], scale, item), "retrain", run)
                    with np.load(os.path.join(path, "kept.npz")) as k:
                        kept = k["index"]
                    assert len(kept) == round(size.num_examples * (1 - f))
                    _check_class_balance(smoke, size, score, strategy, f, kept)
                    left = np.setdiff1d(np.arange(size.num_examples), kept)
                    if strategy == "hardest":
                        assert mean[kept].min() >= mean[left].max()
                    else:
                        assert mean[kept].max() <= mean[left].min()
                    checked += 1
    assert checked == 2 * len(SETTINGS.prune_fractions) * sum(
        len(SETTINGS.size_scores(s)) for s in SETTINGS.sizes
    )


@functools.cache
def _labels(num_examples):
    from datadiet_jax.pipeline import data

    config = crossover.crossover_scale("smoke").base_config()
    config.data.num_train_examples = num_examples
    return data.load_splits(config.data)[0].labels


def _check_class_balance(smoke, size, score, strategy, fraction, kept):
    """The CSV's class columns of a run, against a count of the kept set's labels."""
    labels = _labels(size.num_examples)
    counts = np.bincount(labels[kept], minlength=10)
    rows = read_rows(os.path.join(smoke["out"], "crossover.csv"))
    (got,) = {
        (r["classes_kept"], r["smallest_class_share"])
        for r in rows
        if (int(r["num_examples"]), r["score"], r["strategy"])
        == (size.num_examples, score, strategy)
        and float(r["prune_fraction"]) == fraction
    }
    assert int(got[0]) == (counts > 0).sum()
    assert float(got[1]) == pytest.approx(counts.min() / (len(kept) / 10), abs=1e-4)


def _stated(summary: str) -> dict:
    """{(score, N): (hardest_at, easiest_at, crossover, hardest_beats_random_at,
    easiest_beats_random_at)} from a summary's crossover tables, and {score: reach sentence}."""
    out, reach, score, table = {}, {}, None, False
    for line in summary.splitlines():
        if line.startswith("## "):
            score = line[3:].strip()
        if line.startswith("Keeping the hardest beats random"):
            reach[score] = line
        table = line.startswith("| N | hardest better at |") or (table and line.startswith("|"))
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if table and re.fullmatch(r"\d+", cells[0]):
            out[(score, int(cells[0]))] = (*cells[1:4], *cells[5:7])
    return out, reach


def _stats(values):
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return mean, std


def _from_csv(rows) -> tuple[dict, dict]:
    """The same tables and sentences, recomputed from the CSV rows with plain arithmetic."""
    acc = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            score = "random" if r["strategy"] == "random" else r["score"]
            key = (score, int(r["num_examples"]), float(r["prune_fraction"]), r["strategy"])
            acc[key].append(float(r["test_accuracy"]))
    found = defaultdict(list)
    for (score, n, f, strategy), hard in sorted(acc.items()):
        if strategy != "hardest":
            continue
        (hm, hs), (em, es) = _stats(hard), _stats(acc[(score, n, f, "easiest")])
        rm, rs = _stats(acc[("random", n, f, "random")])
        beats = (hm - rm > ((hs**2 + rs**2) / 2) ** 0.5, em - rm > ((es**2 + rs**2) / 2) ** 0.5)
        found[(score, n)].append((f, "hardest" if hm > em else "easiest", *beats))
    out, reach = {}, defaultdict(list)
    fmt = lambda fs: " ".join(f"{x:g}" for x in fs) or "-"  # noqa: E731
    for (score, n), won in found.items():
        hard = [f for f, w, _, _ in won if w == "hardest"]
        easy = [f for f, w, _, _ in won if w == "easiest"]
        if [w for _, w, _, _ in won] != ["hardest"] * len(hard) + ["easiest"] * len(easy):
            text = "none: mixed"
        elif not easy:
            text = f"above {max(hard):g}"
        elif not hard:
            text = f"below {min(easy):g}"
        else:
            text = f"between {max(hard):g} and {min(easy):g}"
        hard_beats = [f for f, _, h, _ in won if h]
        easy_beats = [f for f, _, _, e in won if e]
        out[(score, n)] = (fmt(hard), fmt(easy), text, fmt(hard_beats), fmt(easy_beats))
        reach[score].append(
            f"{max(hard_beats):g} at N = {n:,}" if hard_beats else f"none at N = {n:,}"
        )
    return out, reach


def _check_summary(csv_path, summary_path):
    rows = read_rows(csv_path)
    with open(summary_path) as f:
        stated, sentences = _stated(f.read())
    want, reach = _from_csv(rows)
    assert stated and stated == want
    assert set(sentences) == set(reach)
    for score, cells in reach.items():
        assert "up to: " + ", ".join(cells) + " (" in sentences[score]


def test_smoke_summary_states_the_crossover_of_its_csv(smoke):
    _check_summary(
        os.path.join(smoke["out"], "crossover.csv"),
        os.path.join(smoke["out"], "crossover_summary.md"),
    )


def test_committed_summary_states_the_crossover_of_its_csv():
    _check_summary(os.path.join(DOCS, "crossover.csv"), os.path.join(DOCS, "crossover_summary.md"))


def test_a_misstated_crossover_is_caught(tmp_path):
    """The check above fails on a summary that states another crossover than its CSV shows."""
    with open(os.path.join(DOCS, "crossover_summary.md")) as f:
        text = f.read()
    row = re.search(r"^\| \d+ \| [^|]+\| [^|]+\| (between|above|below) [^|]+\|", text, re.M)
    wrong = text.replace(row.group(0), row.group(0).replace(row.group(1), "above", 1), 1)
    if wrong == text:  # the row said 'above' already
        wrong = text.replace(row.group(0), row.group(0).replace("above", "below", 1), 1)
    path = tmp_path / "summary.md"
    path.write_text(wrong)
    with pytest.raises(AssertionError):
        _check_summary(os.path.join(DOCS, "crossover.csv"), str(path))
