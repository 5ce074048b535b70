"""The scores library: per-example data-pruning scores for K stacked seeds, in JAX alone.

Needs JAX, Flax, NumPy and absl only (no TensorFlow, TFDS or ml_collections; a test imports every
module with those blocked), so it runs wherever JAX runs. Scores are `[K, N] float32`, higher =
harder; `pruning/` turns their mean over seeds into kept indices.

  api          el2n_scores, grand_scores, logit_scores, init_variables: the public calls
  programs     the compiled batch programs of the scores, cached
  grand_setup  GraNd's method for one call: site finder, the guard, the faster program
  decisions    the fixed costs' decisions (batch check, guard, method), made once per process
  losses       cross_entropy and el2n of logits: the one definition of each
  uncertainty  scores of one forward pass (EL2N, loss, entropy, least confidence, margin)
  inputs       checks of a call's arguments and stream items; what a valid score is
  image_fit    which layer refuses images that do not fit a Linen model, in one line
  batch_check  the first-batch refusal of models whose logits depend on the rest of the batch
  batches      fixed-size padded host batches from arrays or streams; the result buffer
  model_form/  ONE model form for Linen, NNX and plain functions: init and apply
  pergrad/     exact per-example gradient norms (GraNd): rules, sites, guard, fallback
  seed_axis    K seeds inside one jit (vmap / unroll / map) and the CPU/accelerator default
  sharding     the ('seed', 'data') mesh of a scores call
  progress     the progress logger of long loops (scoring here, training in `training/`)
  aum, forgetting   training-dynamics scores: a pure state and update for any training loop
  trajectory   windowed training-dynamics scores (Dyn-Unc, DUAL, TDDS): one state and update
  penultimate  penultimate_features: the last linear layer's input, [K, N, D]
  geometry     scores from features: Moderate-DS distances, prototypicality
  pruning/     selection strategies: [N] scores (and features) -> kept indices

Usage:

    from datadiet_jax import scores
    variables = scores.init_variables(model, jax.random.key(0), 4, sample_input=images[:1])
    grand = scores.grand_scores(model, variables, images, labels)  # [4, N] float32
    keep = scores.kept_indices(grand.mean(0), "hardest", prune_fraction=0.3)  # [M] int64
"""

from datadiet_jax.scores.api import el2n_scores, grand_scores, init_variables, logit_scores
from datadiet_jax.scores.aum import aum_scores, init_aum, update_aum
from datadiet_jax.scores.forgetting import forgetting_scores, init_forgetting, update_forgetting
from datadiet_jax.scores.geometry import moderate_distances, prototype_distances
from datadiet_jax.scores.losses import cross_entropy, el2n
from datadiet_jax.scores.model_form import FunctionModel, LinenModel, NNXModel, stateful
from datadiet_jax.scores.penultimate import penultimate_features
from datadiet_jax.scores.pruning import STRATEGIES, kept_indices
from datadiet_jax.scores.trajectory import (
    dual_scores,
    dyn_unc_scores,
    init_dynamics,
    tdds_scores,
    update_dynamics,
)

__all__ = [
    "FunctionModel",
    "LinenModel",
    "NNXModel",
    "STRATEGIES",
    "aum_scores",
    "cross_entropy",
    "dual_scores",
    "dyn_unc_scores",
    "el2n",
    "el2n_scores",
    "forgetting_scores",
    "grand_scores",
    "init_aum",
    "init_dynamics",
    "init_forgetting",
    "init_variables",
    "kept_indices",
    "logit_scores",
    "moderate_distances",
    "penultimate_features",
    "prototype_distances",
    "stateful",
    "tdds_scores",
    "update_aum",
    "update_dynamics",
    "update_forgetting",
]
