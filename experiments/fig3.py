"""Figure 3: kernel velocity of windows of examples ranked by EL2N, clean and noisy labels.

  python -m experiments.fig3 --scale=cpu    # or: make reproduce-fig3 [SCALE=paper|smoke]

At each epoch t the training examples are sorted by their EL2N at t (mean over the seeds); for
windows of consecutive ranks, the empirical NTK Gram matrix of the window (trace over the logits,
exact: `datadiet_jax.dynamics.ntk`) is computed at t and t + 1 under every seed, and the kernel
velocity is their cosine distance (Fort et al., NeurIPS 2020). Paul et al. report that the
velocity rises with EL2N at every epoch and that, with label noise, it drops sharply for the very
highest scores (the mislabeled examples). See `datadiet_jax.dynamics.kernel_velocity`.

Each noise level is one K-seed training of its own (purpose 5), in RUNS/<scale>/fig3_noiseNN/.

Scales (`configs/studies/fig3.py`, on top of `configs/studies/scales.py`):
  paper: CIFAR-10, ResNet18, 10 seeds, t in (0, 1, 2, 5, 10, 20), 50 windows of 100 (GPU).
  cpu: Fashion-MNIST (first 10,000 training images), small CNN, 4 seeds, t in (0, 1, 2), 50
    windows of 100. Measured on 2 cores: 22 minutes (per noise level, 3 epochs of training and
    4 x 2 x 3 x 50 = 1,200 Gram matrices of 100 examples at about 0.45 s each).
  smoke: the same stages on 256 examples, 2 seeds, t in (0, 1), 4 windows of 32 (10-30 s).

Outputs: OUT/fig3.{png,pdf}, OUT/fig3.csv (one row per noise level, epoch, seed and window),
OUT/fig3_summary.md (the protocol, `report.protocol`, first).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import app

from configs.studies.fig3 import FIG3
from configs.studies.scales import Scale, scale_settings
from datadiet_jax import models
from datadiet_jax.dynamics import kernel_velocity
from datadiet_jax.pipeline import config_check, data
from datadiet_jax.pipeline.config_base import config_to_dict
from datadiet_jax.report import dynamics_plots, numbers, protocol, summary
from datadiet_jax.training import input_pipeline
from experiments import cli, sweeps

CSV_COLUMNS = ("noise_fraction", "epoch", "seed", "window_start", "velocity", "scale")


def item_name(noise: float) -> str:
    return f"fig3_{sweeps.noise_tag(noise)}"


def velocity_config(scale: Scale, noise: float, runs_dir: str):
    """The training config of one noise level: the scale's base config and `FIG3` overrides."""
    # No pruning: the training only measures (the score run's prune overrides).
    overrides = sweeps.score_item(noise)["overrides"] | dict(FIG3[scale.name].overrides)
    return sweeps.make_config(
        scale, sweeps.item(item_name(noise), "score", noise, overrides), runs_dir
    )


def velocity_spec(settings, config, augment: bool) -> kernel_velocity.VelocitySpec:
    """The kernel-velocity settings of one noise level, from `FIG3` and its training config.

    Args:
      settings: the scale's `Fig3Scale`.
      config: the noise level's config (`velocity_config`).
      augment: random crop and flip in training (`input_pipeline.augments`).
    """
    return kernel_velocity.VelocitySpec(
        epochs=tuple(settings.epochs),
        window_size=settings.window_size,
        num_windows=settings.num_windows,
        num_seeds=config.score.num_seeds,
        score_batch_size=config.score.batch_size,
        ntk_batch_size=settings.ntk_batch_size,
        augment=augment,
    )


def check(scale: Scale, runs_dir: str) -> None:
    """Refuses bad Figure 3 settings before anything trains."""
    settings = FIG3[scale.name]
    for noise in settings.noise_fractions:
        config = velocity_config(scale, noise, runs_dir)
        config_check.validate(config)
        _, needed = kernel_velocity.measured_epochs(settings.epochs)
        if needed[-1] > config.train.num_epochs:
            raise ValueError(
                f"Figure 3 measures up to epoch {needed[-1]}, past the {config.train.num_epochs} "
                "training epochs; raise train.num_epochs or lower the epochs"
            )
        kernel_velocity.window_starts(
            sweeps.num_train_examples(config), settings.window_size, settings.num_windows
        )


def measure(scale: Scale, noise: float, runs_dir: str) -> list[dict]:
    """Trains (or resumes) one noise level and returns its velocity rows."""
    settings = FIG3[scale.name]
    config = velocity_config(scale, noise, runs_dir)
    workdir = sweeps.workdir(runs_dir, scale, {"name": item_name(noise)})
    saved = {"config": config_to_dict(config), "fig3": dataclasses.asdict(settings)}
    with sweeps.study_workdir(workdir, saved):
        split, _ = data.load_splits(config.data)
        model = models.build(config.model, split.num_classes)
        augment = input_pipeline.augments(config.data, split.inputs.shape)
        spec = velocity_spec(settings, config, augment)
        rows = kernel_velocity.velocity_run(config.train, config.seed, workdir, model, split, spec)
        return [dict(noise_fraction=float(noise)) | r for r in rows]


def summary_sections(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """Mean velocity per window and epoch for each noise level, and the trend per epoch."""
    sections, trend = [], []
    for noise in sorted({r["noise_fraction"] for r in rows}):
        at = [r for r in rows if r["noise_fraction"] == noise]
        epochs = sorted({r["epoch"] for r in at})
        starts = sorted({r["window_start"] for r in at})
        mean = {
            (e, s): float(
                np.mean([r["velocity"] for r in at if r["epoch"] == e and r["window_start"] == s])
            )
            for e in epochs
            for s in starts
        }
        el2n = {(r["epoch"], r["window_start"]): r["el2n_window_mean"] for r in at}
        share = {(r["epoch"], r["window_start"]): r["majority_class_share"] for r in at}
        table = [
            {"window start": s}
            | {f"t={e}": mean[(e, s)] for e in epochs}
            | {f"class share t={e}": share[(e, s)] for e in epochs}
            for s in starts
        ]
        title = (
            f"Mean kernel velocity over seeds, {round(100 * noise)}% random labels (class "
            "share: the fraction of the window in its most frequent label)"
        )
        sections.append((title, table))
        for e in epochs:
            curve = np.array([mean[(e, s)] for s in starts])
            spearman = numbers.spearman_matrix({"a": np.array(starts, float), "b": curve})[1][0, 1]
            trend.append(
                {
                    "noise": noise,
                    "epoch": e,
                    "Spearman(rank, velocity)": float(spearman),
                    "lowest window": curve[0],
                    "highest window": curve[-1],
                    "max": float(curve.max()),
                    "argmax start": starts[int(curve.argmax())],
                    "EL2N of highest window": el2n[(e, starts[-1])],
                }
            )
    trend_title = "Does velocity rise with EL2N, and fall for the very highest under noise?"
    return [(trend_title, trend), *sections]


def protocol_section(scale: Scale, runs_dir: str) -> tuple[str, list[dict]]:
    """The summary's protocol section (`report.protocol`): one K-seed training per noise level,
    no retraining and no score run."""
    settings = FIG3[scale.name]
    config = velocity_config(scale, settings.noise_fractions[0], runs_dir)
    _, needed = kernel_velocity.measured_epochs(settings.epochs)
    training = (
        f"one training of K={config.score.num_seeds} seeds per noise level, up to epoch "
        f"{needed[-1]} of a {config.train.num_epochs}-epoch schedule"
    )
    fields = protocol.fields(config, sweeps.num_train_examples(config), retraining=False)
    return protocol.section(fields, training=training)


def reproduce(scale_name: str | Scale, runs_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Runs (or resumes) every noise level; writes the figure, CSV and summary.

    Returns:
      {'figure': paths, 'csv': [path], 'summary': [path]}.
    """
    scale, settings = scale_settings(scale_name, FIG3, "Figure 3")
    check(scale, runs_dir)
    rows = []
    for noise in settings.noise_fractions:
        rows += [dict(r, scale=scale.name) for r in measure(scale, noise, runs_dir)]
    rows = sweeps.columns_first(rows, CSV_COLUMNS)
    return summary.write_outputs(
        out_dir,
        "fig3",
        rows,
        dynamics_plots.plot_kernel_velocity,
        f"Figure 3 ({scale.name}): kernel velocity of windows of {settings.window_size} "
        "examples ranked by EL2N (NTK trace over logits, cosine distance from t to t + 1)",
        [protocol_section(scale, runs_dir), *summary_sections(rows)],
    )


def main(argv):
    cli.main(argv, "Figure 3", reproduce)


if __name__ == "__main__":
    app.run(main)
