"""The pipeline: config -> data -> K-seed score training -> scores -> plan -> retraining -> results.

  config_base     the base config, every field documented; `smoke`; `config_to_dict`
  config_check    every check of a config before anything runs (`validate`)
  data            splits in the dataset's own order, input kinds, normalization, label noise
  sources         where examples come from: TFDS, .npz/.npy files, a function
  hf_source       Hugging Face datasets (save_to_disk folders), parquet and arrow files
  prepare_data    builds TFDS fashion_mnist from Debian's dataset-fashion-mnist files
  score_stage     the score stage, score files and their provenance
  plan            the retraining plan (`PlannedRun`) and the kept indices of each run
  retrain         the retraining stage and its results
  stacked         retraining runs of equal-size kept sets as one stacked training
  notebook        the notebook path: `train_seeds`, `pruned_dataset`
  artifacts       score files (checked on load), results
  machine         the processor, backend, jax version and XLA_FLAGS of a run (provenance)
  fingerprint     what each kept set, retraining and results table was made from
  workdir         the work directory: writable, locked by one process, its config.json
  interrupts      Ctrl-C and SIGTERM: one line naming the stage, exit 130 / 143
  logs            library INFO lines left out of the log
  specs           what each stage is (`ScoreSpec`, `PruneSpec`, `RetrainSpec`)
  run             the orchestrator: the only stage that sees the whole config

It uses the K-seed trainer (`datadiet_jax.training`) and the scores library; neither uses it.
Its modules are imported one by one, so that reading a score file does not import orbax or
TensorFlow.

Usage:

    from configs import fashion_mnist
    from datadiet_jax.pipeline import data, notebook, run
    results = run.run(fashion_mnist.get_config("smoke"), "runs/smoke")   # resumes if present
    split = data.load_split("fashion_mnist", "train", num_examples=4000)
    trained = notebook.train_seeds(model, split, num_seeds=4, num_epochs=1)
"""

__all__ = [
    "artifacts",
    "config_base",
    "config_check",
    "data",
    "fingerprint",
    "hf_source",
    "interrupts",
    "logs",
    "machine",
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
