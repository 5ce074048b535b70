"""Exact per-example gradient norms (GraNd) from one batched backward pass, or refused.

  rules         a layer's per-example squared norm from its input and output gradient
  linen_sites   where the rules apply in a Flax Linen model (module interception)
  linen_norms   capture and norms for Linen models
  jaxpr_eval    evaluating a jaxpr with nested jits inlined and an override hook
  jaxpr_sites   where the rules apply in any pure-form model (its flat jaxpr)
  jaxpr_norms   capture and norms for pure-form models (NNX, plain functions)
  fast_pools    non-overlapping max-pools with a fast, equivalent gradient
  fallback      the exact `vmap(grad)` fallback and what both paths share
  guard         the first-batch check of every rule against the fallback
  method        which exact method a call runs: the sites of either finder, or plain vmap(grad)

Usage:

    from datadiet_jax.scores import pergrad
    apply_fn = lambda v, x: model.apply(v, x, train=False)
    norms = pergrad.per_example_grad_norms(apply_fn, one_seed_vars, images, labels)  # [B]
    cap = pergrad.capture(apply_fn, one_seed_vars, images, lambda logits: logits[:, c])
"""

from datadiet_jax.scores.pergrad.jaxpr_sites import JaxprSite
from datadiet_jax.scores.pergrad.linen_norms import (
    Capture,
    capture,
    coverage,
    norms_and_site_sq_norms,
    per_example_grad_norms,
)
from datadiet_jax.scores.pergrad.linen_sites import LinenSite

__all__ = [
    "Capture",
    "JaxprSite",
    "LinenSite",
    "capture",
    "coverage",
    "norms_and_site_sq_norms",
    "per_example_grad_norms",
]
