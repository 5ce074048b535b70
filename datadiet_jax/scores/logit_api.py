"""`logit_scores`: the scores of one eval-mode forward pass (`uncertainty.LOGIT_SCORES`) for K
stacked models, streamed like EL2N.

    entropy = logit_scores('entropy', model, variables, images, labels)   # [K, N] float32
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from datadiet_jax.scores import api, uncertainty


def logit_scores(
    kind: str,
    model: Any,
    variables,
    images,
    labels=None,
    *,
    batch_size: int = 256,
    mesh: jax.sharding.Mesh | None = None,
    seed_axis: str | None = None,
    integer_inputs: bool = False,
) -> np.ndarray:
    """One score of the logits of every example under every seed, in eval mode.

    Args:
      kind: a name of `uncertainty.LOGIT_SCORES`: 'entropy', 'least_confidence', 'margin'
        (DeepCore's uncertainty family, label-free), 'loss' (cross-entropy with the label) or
        'el2n'. Higher = harder for each.
      model, variables, images, labels, batch_size, mesh, seed_axis, integer_inputs: as in
        `api.el2n_scores` (labels are checked and passed even where the score ignores them).
    Returns:
      scores: [K, N] float32, in example order.
    Raises:
      ValueError: an unknown `kind` (naming the valid ones), and as `api.el2n_scores`.
    """
    if kind not in uncertainty.LOGIT_SCORES:
        raise ValueError(
            f"unknown logit score {kind!r}; valid names: {', '.join(uncertainty.LOGIT_SCORES)}"
        )
    return api._scores(
        kind, model, variables, images, labels, batch_size, mesh, seed_axis, integer_inputs
    )
