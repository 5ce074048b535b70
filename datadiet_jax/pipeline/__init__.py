"""The pipeline: config -> data -> K-seed score training -> scores -> plan -> retraining -> results.

  config_base     the base config, every field documented; `smoke`; `config_to_dict`
  config_check    every check of a config before anything runs (`validate`)
  data            splits in the dataset's own order, input kinds, normalization, label noise
  sources         where examples come from: TFDS names and directories, .npz/.npy files, a function
  prepare_data    builds TFDS fashion_mnist from Debian's dataset-fashion-mnist files
  score_stage     the score stage, score files and their provenance
  plan            the retraining plan (`PlannedRun`) and the kept indices of each run
  retrain         the retraining stage and its results
  stacked         retraining runs of equal-size kept sets as one stacked training
  notebook        the notebook path: `train_seeds` of one's own model, `pruned_dataset`
  artifacts       score files (checked on load), results
  fingerprint     what each kept set, retraining and results table was made from
  workdir         the work directory: writable, locked by one process, its config.json
  interrupts      Ctrl-C and SIGTERM: one line naming the stage, exit 130 / 143
  logs            library INFO lines left out of the log
  specs           what each stage is (`ScoreSpec`, `PruneSpec`, `RetrainSpec`), built once by
                  `config_check.validate`
  run             the orchestrator (`run.run(config, workdir)`): the only stage that sees the config

It uses the K-seed trainer (`datadiet_jax.training`) and the scores library
(`datadiet_jax.scores`); neither uses it. Its modules are
imported one by one (`from datadiet_jax.pipeline import run`), so that reading a score file does
not import orbax or TensorFlow.
"""

__all__ = [
    "artifacts",
    "config_base",
    "config_check",
    "data",
    "fingerprint",
    "interrupts",
    "logs",
    "notebook",
    "plan",
    "prepare_data",
    "retrain",
    "run",
    "score_stage",
    "specs",
    "sources",
    "stacked",
    "workdir",
]
