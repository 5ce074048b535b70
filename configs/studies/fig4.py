"""Figure 4 (error barriers of EL2N-ranked subsets) at each scale; see experiments/fig4.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Fig4Scale:
    """Figure 4 settings of one scale.

    Attributes:
      score: the score that ranks the subsets, from the clean score run (e.g. 'el2n@2').
      subset_size: examples in each of the highest, lowest and random subsets.
      spawn_epochs: spawning times t* in epochs (fractions are floored to steps).
      alphas: interpolation grid (with 0, 0.5 and 1); the maximum over it checks the midpoint.
      overrides: config overrides of the parent and children (e.g. a longer training).
    """

    score: str
    subset_size: int
    spawn_epochs: tuple[float, ...]
    alphas: tuple[float, ...]
    overrides: Mapping = dataclasses.field(default_factory=dict)


_GRID = tuple(i / 10 for i in range(11))
FIG4: dict[str, Fig4Scale] = {
    "paper": Fig4Scale("el2n@20", 1000, (0, 0.5, 1, 2, 5, 10, 20), _GRID),
    "cpu": Fig4Scale(
        "el2n@1",
        1000,
        (0, 0.1, 0.25, 0.5, 1, 2),
        _GRID,
        {"train.num_epochs": 4, "score.train_epochs": -1},
    ),
    "smoke": Fig4Scale("el2n@1", 40, (0, 0.5, 1), (0.0, 0.25, 0.5, 0.75, 1.0)),
}
