"""Labels against the number of classes: empty classes and test labels unseen in training.

The number of classes C is the one given (`config.data.num_classes`, `num_classes=`), else the
source's (a TFDS ClassLabel, a function's 'num_classes'), else inferred: the largest training
label + 1. The rules, alike on the command line (`data.load_splits`) and in a notebook
(`data.split_from_arrays`):
  - a label >= C is refused, naming its rows;
  - an inferred C with a class in [0, C) that no training example has is refused: one stray
    label (99 among 0-9) would otherwise make a 100-class problem. A given or declared C allows
    empty classes: a 128-example subset of CIFAR-100 misses most of its classes;
  - a test label that never occurs in training is refused, naming its rows, when it is >= C
    (always so when C is inferred); below a given or declared C it is logged as a WARNING
    naming its rows: a small training subset may miss a class the test split has (the model
    is then never right on those rows).

Usage:

    from datadiet_jax.pipeline import labels
    c = labels.num_classes_of(train_labels, 0, "mine:train", "config.data.num_classes")
    labels.check_labels(train_labels, c, "mine:train", "config.data.num_classes")
    labels.check_test_labels(test_labels, train_labels, c, "mine:test", setting)
"""

from __future__ import annotations

import numpy as np
from absl import logging


def _listed(values: np.ndarray, limit: int = 10) -> str:
    """`[a, b, ...]` of the first `limit` values, with how many there are in all."""
    if len(values) <= limit:
        return str([int(v) for v in values])
    head = ", ".join(str(int(v)) for v in values[: limit - 1])
    return f"[{head}, ...] ({len(values)} in all)"


def num_classes_of(train_labels: np.ndarray, declared: int, where: str, setting: str) -> int:
    """C: `declared` when > 0, else the largest training label + 1, every class of which must
    have a training example.

    Args:
      train_labels: [N] int labels >= 0 of the training split.
      declared: a given or the source's number of classes; 0: infer it.
      where: the training split, for the message; setting: what gives C explicitly.
    Raises:
      ValueError: an inferred C with empty classes (one line naming them and `setting`).
    """
    if declared:
        return int(declared)
    if not train_labels.size:
        return 0
    num_classes = int(train_labels.max()) + 1
    empty = np.flatnonzero(np.bincount(train_labels, minlength=num_classes) == 0)
    if empty.size:
        raise ValueError(
            f"{where} has no examples of classes {_listed(empty)} among its labels 0-"
            f"{num_classes - 1} (a stray label?); fix the labels, or set {setting}="
            f"{num_classes} if those classes are really empty."
        )
    logging.info("%s: %d classes (the largest label + 1)", where, num_classes)
    return num_classes


def check_labels(labels: np.ndarray, num_classes: int, where: str, setting: str) -> None:
    """Refuses labels >= `num_classes`, naming their rows and `setting` (one line)."""
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        raise ValueError(
            f"{where} has labels >= {num_classes} (the number of classes) at rows "
            f"{_listed(bad)}; set {setting} to more classes or fix the labels."
        )


def check_test_labels(
    test_labels: np.ndarray, train_labels: np.ndarray, num_classes: int, where: str, setting: str
) -> None:
    """Checks the test labels against the training labels (the module's rules).

    Args:
      test_labels, train_labels: [N_test] and [N] int labels >= 0 (the training labels < C).
      num_classes: C.
      where: the test split; setting: what gives C explicitly.
    Raises:
      ValueError: a test label >= C, which no training label is: one line naming its values
        and rows.
    """
    beyond = np.flatnonzero(test_labels >= num_classes)
    if beyond.size:
        raise ValueError(
            f"{where} has labels {_listed(np.unique(test_labels[beyond]))} that never occur in "
            f"the training split ({num_classes} classes), at rows {_listed(beyond)}; fix those "
            f"labels, or set {setting} to the number of classes if training lacks them."
        )
    unseen = np.flatnonzero(~np.isin(test_labels, train_labels))
    if unseen.size:  # only with a given or declared C: an inferred one has no empty class
        logging.warning(
            "%s has labels %s that never occur in the training split, at rows %s: the model "
            "cannot learn those classes.",
            where,
            _listed(np.unique(test_labels[unseen])),
            _listed(unseen),
        )
