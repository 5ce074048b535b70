"""datadiet_jax: find the important examples of a training set early in training.

EL2N and GraNd scores (Paul, Ganguli & Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021),
exact and for K stacked initializations at once:

    from datadiet_jax import grand_scores, el2n_scores, init_variables
    variables = init_variables(model, jax.random.key(0), num_seeds=4, sample_input=images[:1])
    scores = grand_scores(model, variables, images, labels)   # [K, N] float32
    kept = kept_indices(scores.mean(0), "hardest", keep_fraction=0.5)

Training one's own model (Linen, NNX or plain functions) on K seeds, and the pruned tf.data
pipeline, are `train_seeds` and `pruned_dataset` (`pipeline/notebook.py`).

The package has five rooms (see docs/architecture.md): `scores` (the library: no TensorFlow,
TFDS or ml_collections; one model form for Linen, NNX and plain functions), `training` (the K-seed
trainer), `pipeline` (config, data, the score stage, pruning plan, retraining), `report` (numbers
and figures from saved results) and `dynamics` (NTK, kernel velocity, error barriers); `models`
holds the paper's models and `main` the entry point. This face lists what `datadiet_jax.scores`
lists, and the notebook path: `get_model`, `load_split`, `split_from_arrays`, `train_seeds`,
`pruned_dataset`.
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
