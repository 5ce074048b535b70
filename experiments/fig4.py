"""Figure 4: error barriers between children spawned from one parent, on subsets ranked by EL2N.

  python -m experiments.fig4 --scale=cpu    # or: make reproduce-fig4 [SCALE=paper|smoke]

Linear mode connectivity (Frankle et al., ICML 2020) on the examples EL2N ranks (Paul et al.,
Figure 4). A parent network trains on the training set and stops at each spawning time t*; from
its state two children train to the end with their own data orders; the error barrier between
them (error of the midpoint of their weights minus the mean of their errors) is measured on the
highest-EL2N, lowest-EL2N and random training examples (and the test set), with BatchNorm
statistics recomputed on the training images at every point of the path (interpolated statistics
are measured too, for comparison). See `datadiet_jax.dynamics.connectivity`.

The EL2N scores are those of the clean score run shared with Figures 1 and 2 (trained once).

Scales (`configs/studies/fig4.py`, on top of `configs/studies/scales.py`):
  paper: CIFAR-10, ResNet18, 200 epochs, EL2N of 10 seeds at epoch 20, subsets of 1,000,
    spawning at epochs 0, 0.5, 1, 2, 5, 10, 20 (GPU).
  cpu: Fashion-MNIST (first 10,000 training images), small CNN, 4 epochs, EL2N of 4 seeds at
    epoch 1, subsets of 1,000, spawning at epochs 0, 0.1, 0.25, 0.5, 1, 2. Measured on 2 cores:
    20 minutes, of which the shared score run took 7 (skipped when Figure 1 or 2 ran it).
  smoke: the same stages on 256 examples, about a minute.

Outputs: OUT/fig4.{png,pdf}, OUT/fig4.csv (one row per spawning time, BatchNorm mode, subset and
alpha), OUT/fig4_summary.md (the protocol, `report.protocol`, first). The run lives in
RUNS/<scale>/fig4_noise00/ and resumes.
"""

from __future__ import annotations

import dataclasses

from absl import app

from configs.studies.fig4 import FIG4
from configs.studies.scales import Scale, scale_settings
from datadiet_jax import models
from datadiet_jax.dynamics import barriers, connectivity
from datadiet_jax.pipeline import artifacts, config_check, data, score_stage
from datadiet_jax.pipeline.config_base import config_to_dict
from datadiet_jax.report import dynamics_plots, protocol, summary
from datadiet_jax.training import input_pipeline
from experiments import cli, sweeps

CSV_COLUMNS = ("spawn_epoch", "spawn_step", "bn", "subset", "alpha", "error", "barrier", "scale")


ITEM = "fig4_noise00"


def sweep(scale: Scale) -> list[dict]:
    """The runs Figure 4 needs from the shared sweep machinery: the clean score run."""
    return [sweeps.score_item(0.0)]


def spawning_config(scale: Scale, runs_dir: str):
    """The config of the parent and children: the scale's base config and `FIG4` overrides."""
    settings = FIG4[scale.name]
    return sweeps.make_config(scale, sweeps.item(ITEM, "train", 0.0, settings.overrides), runs_dir)


def spawning_spec(settings, augment: bool) -> connectivity.SpawningSpec:
    """The spawning settings of Figure 4, from the scale's `Fig4Scale`.

    Args:
      settings: the scale's `Fig4Scale`.
      augment: random crop and flip in training (`input_pipeline.augments`).
    """
    return connectivity.SpawningSpec(
        spawn_epochs=tuple(settings.spawn_epochs),
        subset_size=settings.subset_size,
        alphas=tuple(settings.alphas),
        augment=augment,
    )


def check(scale: Scale, runs_dir: str) -> None:
    """Refuses bad Figure 4 settings before anything trains."""
    settings = FIG4[scale.name]
    config = spawning_config(scale, runs_dir)
    config_check.validate(config)
    if settings.score not in config_check.available_scores(scale.base_config()):
        raise ValueError(
            f"Figure 4 ranks by {settings.score}, which the score run does not compute; use one "
            f"of {config_check.available_scores(scale.base_config())}"
        )
    barriers.check_alphas(settings.alphas)
    n = sweeps.num_train_examples(config)
    if not 1 <= settings.subset_size <= n:
        raise ValueError(f"Figure 4 subsets of {settings.subset_size} do not fit in {n} examples")
    spe = -(-n // config.train.batch_size)
    connectivity.spawn_steps(settings.spawn_epochs, spe, config.train.num_epochs * spe)


def measure(scale: Scale, runs_dir: str) -> list[dict]:
    """Trains (or resumes) the parent and children and returns every measurement row."""
    settings = FIG4[scale.name]
    config = spawning_config(scale, runs_dir)
    workdir = sweeps.workdir(runs_dir, scale, {"name": ITEM})
    saved = {"config": config_to_dict(config), "fig4": dataclasses.asdict(settings)}
    with sweeps.study_workdir(workdir, saved):
        split, test_split = data.load_splits(config.data)
        kind, _, epoch = settings.score.partition("@")
        path = score_stage.score_path(config.score.workdir, kind, int(epoch))
        expect = score_stage.score_expectation(config_check.score_spec(config), split)
        scores = artifacts.load_scores(path, expect)["mean"]
        model = models.build(config.model, split.num_classes)
        augment = input_pipeline.augments(config.data, split.inputs.shape)
        spec = spawning_spec(settings, augment)
        return connectivity.spawning_run(
            config.train, config.seed, workdir, model, split, test_split, scores, spec
        )


def summary_sections(scale: Scale, rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """Barriers per spawning time; both BatchNorm modes at one t*; the alpha-grid maxima."""
    mid = [r for r in rows if r["alpha"] == 0.5]
    subsets = list(dict.fromkeys(r["subset"] for r in mid))
    epochs = list(dict.fromkeys(r["spawn_epoch"] for r in mid))

    def table(bn, value):
        out = []
        for e in epochs:
            at = {r["subset"]: r[value] for r in mid if r["spawn_epoch"] == e and r["bn"] == bn}
            out.append({"spawn epoch": round(e, 4)} | {s: at[s] for s in subsets})
        return out

    compare_epoch = epochs[len(epochs) // 2]
    compare = [
        {
            "subset": s,
            "bn": r["bn"],
            "error 1": r["error_1"],
            "error 2": r["error_2"],
            "error midpoint": r["error"],
            "barrier": r["barrier"],
        }
        for s in subsets
        for r in mid
        if r["subset"] == s and r["spawn_epoch"] == compare_epoch
    ]
    grid = [
        {
            "spawn epoch": round(r["spawn_epoch"], 4),
            "subset": r["subset"],
            "barrier at 1/2": r["barrier"],
            "max over alphas": r["max_barrier"],
            "argmax alpha": r["argmax_alpha"],
        }
        for r in mid
        if r["bn"] == "recompute"
    ]
    bn_title = f"Recomputed vs interpolated BatchNorm statistics at t* = {compare_epoch:.4g} epochs"
    return [
        ("Error barrier at alpha 1/2 (recomputed statistics)", table("recompute", "barrier")),
        ("Error of the midpoint (recomputed statistics)", table("recompute", "error")),
        (bn_title, compare),
        ("Is the midpoint the maximum? (recomputed statistics)", grid),
    ]


def protocol_section(scale: Scale, runs_dir: str) -> tuple[str, list[dict]]:
    """The summary's protocol section (`report.protocol`): the parent and children's training
    and the cost of the clean score run whose EL2N ranks the subsets."""
    config = spawning_config(scale, runs_dir)
    training = (
        f"a parent (one seed) and {connectivity.NUM_CHILDREN} children per spawning time, each "
        f"trained to the end of the {config.train.num_epochs}-epoch schedule"
    )
    fields = protocol.fields(config, sweeps.num_train_examples(config), retraining=False)
    score = sweeps.score_item(0.0)
    return protocol.section(
        fields, {score["name"]: sweeps.workdir(runs_dir, scale, score)}, training
    )


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) the score run, the parent and the children; writes the figure, CSV and
    summary.

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path]}.
    """
    scale, settings = scale_settings(scale_name, FIG4, "Figure 4")
    check(scale, runs_dir)
    sweeps.run_sweep(scale, sweep(scale), runs_dir)
    rows = [dict(r, scale=scale.name) for r in measure(scale, runs_dir)]
    rows = sweeps.columns_first(rows, CSV_COLUMNS)
    return summary.write_outputs(
        out_dir,
        "fig4",
        rows,
        dynamics_plots.plot_barriers,
        f"Figure 4 ({scale.name}): error barriers between children spawned at t*, on the "
        f"{settings.subset_size} highest-, lowest- and random-{settings.score} examples",
        [protocol_section(scale, runs_dir), *summary_sections(scale, rows)],
    )


def main(argv):
    cli.main(argv, "Figure 4", reproduce)


if __name__ == "__main__":
    app.run(main)
