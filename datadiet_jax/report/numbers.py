"""Numbers reported next to the figures: noise detection, rank correlations, histograms, counts.

Everything is pure numpy/scipy on saved arrays. Scores may hold +inf (the forgetting score of an
example never learned): it ranks above every finite score, and histograms count it apart. Outputs
are numpy arrays or plain Python values; `jsonable` turns any of them into values `json.dumps`
accepts.

Usage:

    from datadiet_jax.report import numbers
    found = numbers.noise_detection(el2n.mean(0), noisy_mask)   # 'auc', 'precision_at_k', ...
    names, rho = numbers.spearman_matrix({"el2n": el2n.mean(0), "grand": grand.mean(0)})
    text = json.dumps(numbers.jsonable(found))
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from absl import logging
from scipy import stats

from datadiet_jax.scores import inputs

DEFAULT_NOISE_FRACTIONS = (0.01, 0.05, 0.1, 0.2)


def _scores_1d(scores, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} have shape {arr.shape}, expected [N]; average seeds first")
    if inputs.invalid_scores(arr).any():
        raise ValueError(f"{name} contain NaN/-inf values; recompute them before reporting")
    return arr


def _labels(labels, num_examples: int, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (num_examples,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels have shape {labels.shape} and dtype {labels.dtype}; pass [{num_examples}] "
            "integer class labels in the dataset order"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels span [{labels.min()}, {labels.max()}] but num_classes is {num_classes}; "
            "pass the dataset number of classes"
        )
    return labels


def roc_auc(scores, positive_mask) -> float:
    """ROC AUC of `scores` as a detector of the positive examples (Mann-Whitney U / n1 n0).

    Average ranks handle ties, so a tied positive-negative pair counts one half.

    Args:
      scores: `[N]` float; higher means more likely positive.
      positive_mask: `[N]` bool.

    Returns:
      AUC in [0, 1]; 0.5 is chance.
    """
    scores = _scores_1d(scores)
    mask = _mask(positive_mask, scores.shape[0])
    n_pos = int(mask.sum())
    n_neg = mask.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"noisy mask marks {n_pos} of {mask.shape[0]} examples as noisy; the AUC needs both "
            "noisy and clean examples (use a run with 0 < label noise < 1)"
        )
    ranks = stats.rankdata(scores)  # average ranks, 1-based
    u_stat = ranks[mask].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_stat / (n_pos * n_neg))


def _mask(mask, num_examples: int) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != (num_examples,):
        raise ValueError(
            f"noisy mask has shape {arr.shape} but scores have {num_examples} entries; pass the "
            "flipped-label mask recorded with this dataset"
        )
    if arr.dtype != bool:
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("noisy mask must be boolean (or 0/1); pass mask = flipped indices")
        arr = arr.astype(bool)
    return arr


def noise_detection(scores, noisy_mask, ks=None) -> dict:
    """How well high scores find the examples with corrupted labels.

    The top-k are the k highest scores, ties broken by the lower index.

    Args:
      scores: `[N]` float (mean over seeds), higher = more likely noisy. Every score file of the
        pipeline is stored that way; AUM files hold the negated AUM, so a low margin ranks high.
      noisy_mask: `[N]` bool, True where the label was corrupted.
      ks: the k values; default: the number of noisy examples plus round(f * N) for f in
        `DEFAULT_NOISE_FRACTIONS` (at least 1), without duplicates.

    Returns:
      {'num_examples': N, 'num_noisy': int, 'auc': float,
       'precision_at_k': {k: fraction of the top-k that is noisy},
       'recall_at_k': {k: fraction of the noisy examples in the top-k}} with int keys k, ascending.
    """
    scores = _scores_1d(scores)
    n = scores.shape[0]
    mask = _mask(noisy_mask, n)
    num_noisy = int(mask.sum())
    auc = roc_auc(scores, mask)
    if ks is None:
        ks = [num_noisy] + [max(1, int(np.floor(f * n + 0.5))) for f in DEFAULT_NOISE_FRACTIONS]
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"ks {ks} must lie in [1, {n}]; pick top-k sizes within the dataset")
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(mask[order])
    return {
        "num_examples": n,
        "num_noisy": num_noisy,
        "auc": auc,
        "precision_at_k": {k: float(hits[k - 1] / k) for k in ks},
        "recall_at_k": {k: float(hits[k - 1] / num_noisy) for k in ks},
    }


def spearman_matrix(named_scores: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Spearman rank correlations between score vectors (seeds, epochs, methods, input norm).

    Computed as the Pearson correlation of average ranks. A constant vector has no rank
    correlation: its off-diagonal entries are NaN (logged as a warning).

    Args:
      named_scores: {name: `[N]` float}, all of the same length.

    Returns:
      (names in the mapping's order, `[M, M] float64` matrix with ones on the diagonal).
    """
    if not named_scores:
        raise ValueError("named_scores is empty; pass {name: [N] scores} with at least one entry")
    names = list(named_scores)
    vectors = [_scores_1d(named_scores[name], f"scores {name!r}") for name in names]
    lengths = {v.shape[0] for v in vectors}
    if len(lengths) != 1:
        raise ValueError(
            f"score vectors have different lengths {sorted(lengths)}; compare scores of one dataset"
        )
    ranks = np.stack([stats.rankdata(v) for v in vectors])
    centered = ranks - ranks.mean(axis=1, keepdims=True)
    norms = np.sqrt((centered**2).sum(axis=1))
    constant = norms == 0
    if constant.any():
        logging.warning(
            "Constant scores have no rank correlation (NaN): %s",
            [n for n, c in zip(names, constant, strict=True) if c],
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = (centered @ centered.T) / np.outer(norms, norms)
    matrix = np.clip(matrix, -1.0, 1.0)
    np.fill_diagonal(matrix, 1.0)
    return names, matrix


def input_norms(images) -> np.ndarray:
    """L2 norm of each example, flattened (GraNd at initialization tracks it).

    Args:
      images: `[N, ...]` float or integer.

    Returns:
      `[N] float64`.
    """
    arr = np.asarray(images)
    if arr.ndim < 2:
        raise ValueError(f"images have shape {arr.shape}; pass a batch [N, H, W, C]")
    return np.linalg.norm(arr.reshape(arr.shape[0], -1).astype(np.float64), axis=1)


def class_counts(kept, labels, num_classes: int) -> np.ndarray:
    """Number of kept examples per class.

    Args:
      kept: `[M]` int indices into the dataset.
      labels: `[N]` int class labels.
      num_classes: C.

    Returns:
      `[C] int64`.
    """
    labels = np.asarray(labels)
    labels = _labels(labels, labels.shape[0] if labels.ndim == 1 else -1, num_classes)
    kept = np.asarray(kept)
    if kept.ndim != 1 or not np.issubdtype(kept.dtype, np.integer):
        raise ValueError(
            f"kept has shape {kept.shape} and dtype {kept.dtype}; pass [M] int indices"
        )
    if kept.size and (kept.min() < 0 or kept.max() >= labels.shape[0]):
        raise ValueError(
            f"kept indices span [{kept.min()}, {kept.max()}] outside the {labels.shape[0]} "
            "examples; use indices of this dataset"
        )
    return np.bincount(labels[kept], minlength=num_classes).astype(np.int64)


def score_histograms(named_scores: Mapping[str, np.ndarray], bins: int = 50) -> dict:
    """Histogram of each score vector over the range of its finite values; +inf counted apart.

    Args:
      named_scores: {name: `[N]` float}; +inf allowed (never-learned forgetting scores).
      bins: number of equal-width bins.

    Returns:
      {name: (counts `[bins] int64`, edges `[bins + 1] float64`, number of +inf scores)}.
    """
    if int(bins) < 1:
        raise ValueError(f"bins is {bins}; use at least 1 bin")
    out = {}
    for name, scores in named_scores.items():
        arr = _scores_1d(scores, f"scores {name!r}")
        finite = np.isfinite(arr)
        counts, edges = np.histogram(arr[finite], bins=int(bins))
        out[name] = (counts.astype(np.int64), edges, int((~finite).sum()))
    return out


def top_bottom_per_class(scores, labels, num_classes: int, k: int) -> dict:
    """The k highest and k lowest scoring examples of each class (for image grids).

    Ties go to the lower index. A class with fewer than k examples gives all of them (so its
    hardest and easiest lists can overlap); an absent class gives empty lists.

    Args:
      scores: `[N]` float.
      labels: `[N]` int class labels.
      num_classes: C.
      k: examples per side, >= 1.

    Returns:
      {class: {'hardest': [int] highest score first, 'easiest': [int] lowest score first}}.
    """
    scores = _scores_1d(scores)
    labels = _labels(labels, scores.shape[0], num_classes)
    if int(k) < 1:
        raise ValueError(f"k is {k}; show at least 1 example per class")
    hardest_first = np.argsort(-scores, kind="stable")
    easiest_first = np.argsort(scores, kind="stable")
    out = {}
    for c in range(num_classes):
        out[c] = {
            "hardest": [int(i) for i in hardest_first[labels[hardest_first] == c][: int(k)]],
            "easiest": [int(i) for i in easiest_first[labels[easiest_first] == c][: int(k)]],
        }
    return out


def _json_key(key):
    if isinstance(key, np.generic):
        key = key.item()
    return key if isinstance(key, str | int | float | bool) or key is None else str(key)


def jsonable(value):
    """Converts numpy arrays and scalars (inside dicts, lists and tuples) to plain Python values.

    Args:
      value: any nesting of dict/list/tuple with numpy or Python leaves.

    Returns:
      The same structure with lists, ints, floats and strings; NaN becomes None.
    """
    if isinstance(value, Mapping):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
