"""The K-seed trainer: K initializations trained as one stacked pytree, resumable, on a mesh.

  train           train state, optimizer and schedule, train and eval steps, evaluation
  k_step          the jitted K-seed step and the per-example statistics updated in it
  loop            the K-seed training loop (`TrainSpec`, `fit`): checkpoints, metrics,
                  epoch hooks, forgetting/AUM/dynamics statistics tracked in the step
  mode_guard      the first step's check that the model trained in train mode
  health          divergence (a non-finite loss, tracked in the step) and collapse
  checkpoints     orbax checkpoints of the stacked state and statistics
  train_mesh      the ('seed', 'data') mesh: its shape, placement, the sharded step
  multihost       several processes of a `jax.distributed` job: start-up, who writes
  input_pipeline  tf.data: K-seed training batches from kept indices, padded eval batches
  keys            where every random number comes from (purposes, streams)
  files           atomic writes from process 0 (JSON, CSV, npz, JSON lines)

It uses the scores library (`datadiet_jax.scores`) and nothing else of the project; the
data-diet stages (`pipeline`) and the analyses of training dynamics (`dynamics`) build on it.
Its modules are imported one by one (`from datadiet_jax.training import loop`).

Usage:

    from datadiet_jax.training import keys, loop
    spec = loop.TrainSpec(train_cfg=config.train, num_seeds=4, seed=0, purpose=keys.Purpose.SCORE,
                          num_steps=1000, schedule_steps=1000, ckpt_dir="run/ckpt", augment=False)
    state, stats, step = loop.fit(model, split, kept, spec)   # every leaf [K, ...]
"""

__all__ = [
    "checkpoints",
    "files",
    "health",
    "input_pipeline",
    "k_step",
    "keys",
    "loop",
    "mode_guard",
    "multihost",
    "train",
    "train_mesh",
]
