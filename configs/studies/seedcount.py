"""The seed-count study at each scale; see experiments/seedcount.py."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SeedCountScale:
    """Seed-count settings of one scale: the score that prunes (from the clean score run)."""

    score: str


SEEDCOUNT = {
    "paper": SeedCountScale("el2n@20"),
    "cpu": SeedCountScale("el2n@1"),
    "smoke": SeedCountScale("el2n@1"),
}
