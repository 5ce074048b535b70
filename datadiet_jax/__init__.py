"""datadiet_jax: find the important examples of a training set early in training.

EL2N and GraNd scores (Paul, Ganguli & Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021),
exact and for K stacked initializations at once:

    from datadiet_jax import grand_scores, el2n_scores, init_variables
    variables = init_variables(model, jax.random.key(0), num_seeds=4, sample_input=images[:1])
    scores = grand_scores(model, variables, images, labels)   # [K, N] float32
"""

__version__ = "0.1.0"

_EXPORTS = {
    "el2n_scores": "datadiet_jax.scores",
    "grand_scores": "datadiet_jax.scores",
    "init_variables": "datadiet_jax.scores",
    "init_forgetting": "datadiet_jax.forgetting",
    "update_forgetting": "datadiet_jax.forgetting",
    "forgetting_scores": "datadiet_jax.forgetting",
    "init_aum": "datadiet_jax.aum",
    "update_aum": "datadiet_jax.aum",
    "aum_scores": "datadiet_jax.aum",
    "get_model": "datadiet_jax.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy, so `import datadiet_jax` stays light and TensorFlow is never imported for scores.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
