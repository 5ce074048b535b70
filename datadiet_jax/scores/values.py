"""What a valid score is: a finite number, or +inf, and higher means harder.

+inf is the forgetting score of an example never learned (`forgetting.py`): it ranks above every
finite score, also after averaging over seeds. NaN and -inf mean a failed computation. Every
consumer of scores (pruning, the reports, the score files) checks them with `invalid`.
"""

from __future__ import annotations

import numpy as np


def invalid(values) -> np.ndarray:
    """Bool mask, same shape as `values`, of the entries that are NaN or -inf."""
    arr = np.asarray(values, dtype=np.float64)
    return ~(np.isfinite(arr) | np.isposinf(arr))
