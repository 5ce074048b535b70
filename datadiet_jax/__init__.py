"""datadiet_jax: find the important examples of a training set early in training.

EL2N and GraNd scores (Paul, Ganguli & Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021),
exact and for K stacked initializations at once. This face lists what `datadiet_jax.scores`
lists, and the notebook path: `get_model`, `load_split`, `split_from_arrays`, `train_seeds`,
`pruned_dataset`; names are imported lazily, so TensorFlow is never imported for scores.

  scores    the library: scores, model form (Linen, NNX, plain functions), pruning; no TensorFlow
  training  the K-seed trainer
  pipeline  config, data, the score stage, pruning plan, retraining
  report    numbers and figures from saved results
  dynamics  NTK, kernel velocity, error barriers
  models    the paper's models; `main` is the command line (see docs/architecture.md)

Usage:

    from datadiet_jax import grand_scores, init_variables, kept_indices, load_split, train_seeds
    variables = init_variables(model, jax.random.key(0), num_seeds=4, sample_input=images[:1])
    scores = grand_scores(model, variables, images, labels)   # [K, N] float32
    kept = kept_indices(scores.mean(0), "hardest", keep_fraction=0.5)
    split = load_split("fashion_mnist", "train", num_examples=4000)
    trained = train_seeds(model, split, kept=kept, num_seeds=2, num_epochs=1)
"""

__version__ = "0.1.0"

_EXPORTS = {
    "FunctionModel": "datadiet_jax.scores",
    "LinenModel": "datadiet_jax.scores",
    "NNXModel": "datadiet_jax.scores",
    "STRATEGIES": "datadiet_jax.scores",
    "aum_scores": "datadiet_jax.scores",
    "cross_entropy": "datadiet_jax.scores",
    "dual_scores": "datadiet_jax.scores",
    "dyn_unc_scores": "datadiet_jax.scores",
    "el2n": "datadiet_jax.scores",
    "el2n_scores": "datadiet_jax.scores",
    "forgetting_scores": "datadiet_jax.scores",
    "grand_scores": "datadiet_jax.scores",
    "init_aum": "datadiet_jax.scores",
    "init_dynamics": "datadiet_jax.scores",
    "init_forgetting": "datadiet_jax.scores",
    "init_variables": "datadiet_jax.scores",
    "kept_indices": "datadiet_jax.scores",
    "logit_scores": "datadiet_jax.scores",
    "moderate_distances": "datadiet_jax.scores",
    "penultimate_features": "datadiet_jax.scores",
    "prototype_distances": "datadiet_jax.scores",
    "stateful": "datadiet_jax.scores",
    "tdds_scores": "datadiet_jax.scores",
    "update_aum": "datadiet_jax.scores",
    "update_dynamics": "datadiet_jax.scores",
    "update_forgetting": "datadiet_jax.scores",
    "get_model": "datadiet_jax.models",
    "load_split": "datadiet_jax.pipeline.data",
    "split_from_arrays": "datadiet_jax.pipeline.data",
    "train_seeds": "datadiet_jax.pipeline.notebook",
    "pruned_dataset": "datadiet_jax.pipeline.notebook",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy, so `import datadiet_jax` stays light and TensorFlow is never imported for scores.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
