"""Logit scores (entropy, least confidence, margin, loss): hand values and the K-seed driver."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from datadiet_jax.scores import api, uncertainty
from datadiet_jax.scores.api import logit_scores
from tests.references import TinyCNN


class FixedLogits(nn.Module):
    """Logits = images * scale (scale initialized to 1)."""

    @nn.compact
    def __call__(self, x):
        return x * self.param("scale", nn.initializers.ones, ())


# Rows: uniform over 3 classes; probabilities (1/2, 1/4, 1/4); (1/2, 1/2, 0+).
LOGITS = np.array([[0, 0, 0], [np.log(2), 0, 0], [0, 0, -100]], np.float32)
LABELS = np.array([2, 1, 0])


def test_hand_computed_values():
    h = np.log(3), 1.5 * np.log(2), np.log(2)  # -sum p log p
    lc = 2 / 3, 1 / 2, 1 / 2  # 1 - max p
    mg = 1.0, 1 - (1 / 2 - 1 / 4), 1.0  # 1 - (p1 - p2)
    loss = np.log(3), np.log(4), np.log(2)  # -log p_label
    for kind, want in (("entropy", h), ("least_confidence", lc), ("margin", mg), ("loss", loss)):
        got = np.asarray(uncertainty.LOGIT_SCORES[kind](LOGITS, LABELS))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=kind)


def test_driver_stacks_seeds_and_pads():
    variables = api.init_variables(FixedLogits(), jax.random.key(0), 2, LOGITS[:1])
    variables = {"params": {"scale": np.array([1.0, 2.0], np.float32)}}
    for kind in uncertainty.UNCERTAINTY_KINDS:
        got = logit_scores(kind, FixedLogits(), variables, LOGITS, LABELS, batch_size=2)
        assert got.shape == (2, 3) and got.dtype == np.float32
        for k, scale in enumerate((1.0, 2.0)):
            want = uncertainty.LOGIT_SCORES[kind](LOGITS * scale, LABELS)
            np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6, err_msg=kind)


def test_driver_matches_eval_mode_apply_of_each_seed():
    model = TinyCNN()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(11, 6, 6, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 11)
    variables = api.init_variables(model, jax.random.key(3), 3, images[:1])
    for kind in ("entropy", "margin", "loss"):
        got = logit_scores(kind, model, variables, images, labels, batch_size=4)
        for k in range(3):
            one = jax.tree.map(lambda v, k=k: v[k], variables)
            logits = model.apply(one, images, train=False)
            want = uncertainty.LOGIT_SCORES[kind](logits, labels)
            np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6, err_msg=kind)
    assert not np.allclose(got[0], got[1])  # the seeds differ


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown logit score 'entropi'.*entropy"):
        logit_scores("entropi", FixedLogits(), {}, LOGITS, LABELS)
