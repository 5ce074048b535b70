"""Figure 3 (kernel velocity of EL2N-ranked windows) at each scale; see experiments/fig3.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Fig3Scale:
    """Figure 3 settings of one scale.

    Attributes:
      epochs: epochs t; each velocity is measured between t and t + 1.
      window_size: examples per window (the paper: 100).
      num_windows: windows per epoch, start ranks spread evenly over [0, N - window_size].
      noise_fractions: label-noise levels, one panel each.
      ntk_batch_size: examples per NTK block (memory).
      overrides: config overrides of the training (e.g. the number of seeds).
    """

    epochs: tuple[int, ...]
    window_size: int
    num_windows: int
    noise_fractions: tuple[float, ...] = (0.0, 0.1)
    ntk_batch_size: int = 100
    overrides: Mapping = dataclasses.field(default_factory=dict)


FIG3: dict[str, Fig3Scale] = {
    "paper": Fig3Scale((0, 1, 2, 5, 10, 20), 100, 50),
    "cpu": Fig3Scale((0, 1, 2), 100, 50),
    "smoke": Fig3Scale((0, 1), 32, 4),
}
