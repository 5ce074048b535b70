"""The score-transfer study at each scale; see experiments/transfer.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class TransferScale:
    """Transfer settings of one scale.

    Attributes:
      score: the score that prunes, e.g. 'el2n@2'.
      source: config overrides of the source model ({} is the scale's own model, whose score run
        is the shared clean one).
      target: config overrides of the target model.
      prune_fractions: pruned fractions.
    """

    score: str
    source: Mapping
    target: Mapping
    prune_fractions: tuple[float, ...]


TRANSFER = {
    "paper": TransferScale("el2n@20", {}, {"model.name": "resnet50"}, (0.3, 0.5, 0.7)),
    "cpu": TransferScale("el2n@1", {"model.width": 16}, {}, (0.3, 0.6)),
    "smoke": TransferScale("el2n@1", {"model.width": 4}, {}, (0.6,)),
}
