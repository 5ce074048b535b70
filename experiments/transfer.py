"""Score transfer across architectures: one model's EL2N prunes the data for another model.

  python -m experiments.transfer --scale=cpu    # or: make reproduce-transfer [SCALE=...]

The source model's score run ranks the training set; the target model trains on the highest-EL2N
subsets of that ranking (`score.workdir` pointing at the source run, `score.allow_transfer=True`),
on the highest-EL2N subsets of its own score run, on random subsets of the same sizes and on the
full data. The Spearman correlation of the two models' scores is reported too.

Scales (`configs/studies/transfer.py`):
  paper: ResNet18 scores (the clean score run shared with Figures 1 and 2, EL2N at epoch 20 of 10
    seeds) prune CIFAR-10 for ResNet50 (its own score run: EL2N at epoch 20 of 10 seeds),
    30/50/70% pruned, 4 runs per point (GPU).
  cpu: a narrow small CNN (width 16) prunes Fashion-MNIST (first 10,000 training images) for the
    standard small CNN (width 32, whose own scores are the shared clean score run), EL2N at
    epoch 1 of 4 seeds, 30/60% pruned, 2 runs per point. The target is the small CNN of the
    other figures because a width-64 CNN costs about 3.7 times the FLOPs: its score run and 7
    retrainings would take about 1.5 hours on 2 cores. Measured on 2 cores: 18 minutes (a 50 s
    source score run and 7 retrainings of about 2.4 minutes), plus 7 minutes for the shared
    score run unless another figure ran it.
  smoke: the same stages on 256 examples (width 4 prunes for width 8), about a minute.

Outputs: OUT/transfer.{png,pdf}, OUT/transfer.csv (one row per retraining seed) and
OUT/transfer_summary.md (the protocol of the target's retraining and both score runs' costs,
`report.protocol`, first).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from absl import app

from configs.studies.scales import Scale, scale_settings
from configs.studies.transfer import TRANSFER
from datadiet_jax import models
from datadiet_jax.pipeline import artifacts, config_check
from datadiet_jax.report import plots, seed_count, summary
from experiments import cli, sweeps

CSV_COLUMNS = ("method", "source", "target", "prune_fraction", "seed", "test_accuracy", "scale")


def model_label(scale: Scale, overrides: Mapping) -> str:
    """'small_cnn_w16', 'resnet50', ...: the model of the base config with `overrides`."""
    config = scale.base_config()
    config.update_from_flattened_dict(dict(overrides))
    width = models.width(config.model)
    return config.model.name + (f"_w{width}" if width else "")


def score_run(scale: Scale, overrides: Mapping) -> dict:
    """The score run of a model: the shared clean run for the scale's own model, else an
    EL2N-only run of that model (same seeds, data and schedule)."""
    if not overrides:
        return sweeps.score_item(0.0)
    settings = TRANSFER[scale.name]
    epoch = int(settings.score.partition("@")[2])
    light = {
        "score.el2n_epochs": (epoch,),
        "score.grand_epochs": (),
        "score.forgetting": False,
        "score.train_epochs": -1,
    }
    prune = sweeps.score_item(0.0)["overrides"]
    name = f"scores_{model_label(scale, overrides)}_noise00"
    return sweeps.item(name, "score", 0.0, prune | dict(overrides) | light)


def sweep(scale: Scale, runs_dir: str) -> list[dict]:
    """Both score runs, then the target's runs: transferred scores, own scores, baselines."""
    s = TRANSFER[scale.name]
    source, target = score_run(scale, s.source), score_run(scale, s.target)
    src, tgt = model_label(scale, s.source), model_label(scale, s.target)
    slug = s.score.replace("@", "")
    runs = {
        f"transfer_{slug}_{src}_to_{tgt}": {
            "score.workdir": sweeps.workdir(runs_dir, scale, source),
            "score.allow_transfer": True,
        },
        f"transfer_{slug}_own_{tgt}": {"score.workdir": sweeps.workdir(runs_dir, scale, target)},
    }
    items = [source, target]
    for name, extra in runs.items():
        it = sweeps.training_item(name, 0.0, scores=(s.score,), fractions=s.prune_fractions)
        it["overrides"] |= dict(s.target) | extra
        items.append(it)
    base = sweeps.training_item(
        f"transfer_baselines_{tgt}", 0.0, fractions=s.prune_fractions, full=True, random=True
    )
    base["overrides"] |= dict(s.target)
    return items + [base]


def collect(scale: Scale, items, runs_dir: str) -> list[dict]:
    """One row per retraining seed; 'method' names where the pruning scores came from."""
    s = TRANSFER[scale.name]
    src, tgt = model_label(scale, s.source), model_label(scale, s.target)
    rows = []
    for it in items:
        if it["kind"] != "train":
            continue
        for r in sweeps.seed_rows(scale, it, sweeps.load_results(scale, it, runs_dir)):
            if r["strategy"] in ("random", "full"):
                method = r["strategy"]
            elif "_own_" in it["name"]:
                method = f"{s.score} of {tgt} (own)"
            else:
                method = f"{s.score} of {src}"
            rows.append(r | dict(method=method, source=src, target=tgt))
    return sweeps.columns_first(rows, CSV_COLUMNS)


def score_agreement(scale: Scale, runs_dir: str) -> list[dict]:
    """Spearman correlation of the source and target models' mean scores."""
    s = TRANSFER[scale.name]
    means = {}
    for side, overrides in (("source", s.source), ("target", s.target)):
        files = sweeps.load_results(scale, score_run(scale, overrides), runs_dir)["scores"]
        means[side] = artifacts.load_scores(files[s.score])["mean"]
    return [
        {
            "score": s.score,
            "source": model_label(scale, s.source),
            "target": model_label(scale, s.target),
            "spearman": seed_count.spearman(means["source"], means["target"]),
        }
    ]


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the sweep, then writes the figure, the CSV and the summary.

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path]}.
    """
    scale, s = scale_settings(scale_name, TRANSFER, "Score transfer")
    for overrides in (s.source, s.target):
        config_check.validate(sweeps.make_config(scale, score_run(scale, overrides), runs_dir))
    scale, items, rows, csv_path = sweeps.run_and_collect(
        scale, runs_dir, out_dir, "transfer", lambda sc: sweep(sc, runs_dir), collect
    )
    figure = plots.plot_pruning_curves(rows, os.path.join(out_dir, "transfer"))
    summary_path = summary.write_summary(
        os.path.join(out_dir, "transfer_summary.md"),
        f"Score transfer ({scale.name}): {s.score} of {model_label(scale, s.source)} prunes "
        f"the data for {model_label(scale, s.target)}",
        [
            sweeps.protocol_section(scale, items[-1], runs_dir, items[:2]),
            (
                "Test accuracy",
                summary.summary_table(rows, ("method", "prune_fraction", "num_kept")),
            ),
            (
                "Spearman correlation of the two models' mean scores",
                score_agreement(scale, runs_dir),
            ),
        ],
    )
    return {"figure": figure, "csv": [csv_path], "summary": [summary_path]}


def main(argv):
    cli.main(argv, "Score transfer", reproduce)


if __name__ == "__main__":
    app.run(main)
