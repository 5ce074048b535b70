"""The pipeline: config -> data -> K-seed score training -> scores -> plan -> retraining -> results.

  config_base     the base config, every field documented; `smoke`; `config_to_dict`
  config_check    every check of a config before anything runs (`validate`)
  data            TFDS splits in the dataset's own order, label noise
  prepare_data    builds TFDS fashion_mnist from Debian's dataset-fashion-mnist files
  input_pipeline  tf.data: K-seed training batches from kept indices, padded eval batches
  keys            where every random number comes from (purposes, streams)
  train           train state, optimizer and schedule, train and eval steps, evaluation
  checkpoints     orbax checkpoints of the stacked state and statistics
  loop            the K-seed training loop (`TrainSpec`, `train_seeds`)
  health          divergence and collapse
  score_stage     the score stage, score files and their provenance
  plan            the retraining plan (`PlannedRun`) and the kept indices of each run
  retrain         the retraining stage and its results
  artifacts       atomic writes, score files, results, the work directory's config
  run             the orchestrator (`run.run(config, workdir)`)

It uses the scores library (`datadiet_jax.scores`); the library never uses it. Its modules are
imported one by one (`from datadiet_jax.pipeline import loop`), so that reading a score file does
not import orbax or TensorFlow.
"""

__all__ = [
    "artifacts", "checkpoints", "config_base", "config_check", "data", "health", "input_pipeline",
    "keys", "loop", "plan", "prepare_data", "retrain", "run", "score_stage", "train",
]  # fmt: skip
