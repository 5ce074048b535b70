"""The retraining plan: run names, their uniqueness, one enumeration of the runs."""

import os

import numpy as np
import pytest

from datadiet_jax.pipeline import config_check, plan, run
from tests.conftest import smoke_config
from tests.references import make_split


def test_fraction_tags_are_unique_and_keep_two_decimals_when_exact():
    assert plan.fraction_tag(0.5) == "0.50"
    assert plan.fraction_tag(0.3) == "0.30"
    assert plan.fraction_tag(0.304) == "0.304"
    assert plan.fraction_tag(0.3 + 1e-12) != plan.fraction_tag(0.3)
    fractions = [0.3, 0.304, 0.305, 0.3049, 1 / 3, 0.33, 0.125, 0.12]
    assert len({plan.fraction_tag(f) for f in fractions}) == len(fractions)
    for f in fractions:
        assert float(plan.fraction_tag(f)) == f


def test_plan_names_of_close_fractions_differ_and_repeats_are_refused(tmp_path):
    config = smoke_config(**{"prune.fractions": (0.3, 0.304)})
    names = [planned.name for planned in plan.planned_runs(config.prune)]
    assert names == [
        "full",
        "el2n-1_hardest_f0.30",
        "random_subset_f0.30",
        "el2n-1_hardest_f0.304",
        "random_subset_f0.304",
    ]
    config_check.validate(config)
    config.prune.fractions = (0.5, 0.5)
    with pytest.raises(ValueError, match="share the names.*el2n-1_hardest_f0.50"):
        config_check.validate(config)
    config = smoke_config(**{"prune.strategy": "offset", "prune.offsets": (0, 3, 3)})
    with pytest.raises(ValueError, match="share the names.*_o3"):
        run.run(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


def test_kept_sets_follow_the_planned_runs():
    config = smoke_config(**{"prune.fractions": (0.5, 0.75)})
    split = make_split(n=8)
    spec = config_check.validate(config).prune
    assert list(spec.runs) == plan.planned_runs(config.prune)
    runs = plan.kept_sets(spec, split, {"el2n@1": np.arange(8.0)})
    assert [planned for planned, _ in runs] == plan.planned_runs(config.prune)
    kept = {planned.name: k for planned, k in runs}
    assert kept["full"].tolist() == list(range(8))
    assert kept["el2n-1_hardest_f0.50"].tolist() == [4, 5, 6, 7]  # the 4 highest scores
    assert kept["el2n-1_hardest_f0.75"].tolist() == [6, 7]
    for name, size in (("random_subset_f0.50", 4), ("random_subset_f0.75", 2)):
        assert len(set(kept[name].tolist())) == size and kept[name].tolist() == sorted(kept[name])
