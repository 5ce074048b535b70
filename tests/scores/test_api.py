"""EL2N/GraNd drivers: hand values, seeds, padding, determinism, no retracing, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datadiet_jax.scores import api, programs
from tests.references import TinyCNN, linen_grand_loop


class FixedLogits(nn.Module):
    """Logits = images * scale (scale initialized to 1): a model with hand-computable scores."""

    @nn.compact
    def __call__(self, x):
        return x * self.param("scale", nn.initializers.ones, ())


def _data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


@pytest.fixture(scope="module")
def tiny():
    model = TinyCNN()
    variables = api.init_variables(model, jax.random.key(0), 3, np.zeros((1, 6, 6, 1)))
    # Non-trivial running statistics so eval-mode BatchNorm is not the identity.
    stats = variables["batch_stats"]["BatchNorm_0"]
    stats["mean"] = jax.random.normal(jax.random.key(1), stats["mean"].shape)
    stats["var"] = jax.random.uniform(jax.random.key(2), stats["var"].shape, minval=0.5, maxval=2)
    return model, variables


def test_el2n_hand_computed_three_classes():
    logits = np.array(
        [[0, 0, 0], [np.log(2), 0, 0], [np.log(2), 0, 0], [100, 0, 0], [100, 0, 0]], np.float32
    )
    labels = np.array([0, 0, 1, 0, 2])
    variables = api.init_variables(FixedLogits(), jax.random.key(0), 2, logits[:1])
    got = api.el2n_scores(FixedLogits(), variables, logits, labels, batch_size=2)
    want = [np.sqrt(6) / 3, np.sqrt(6) / 4, np.sqrt(14) / 4, 0.0, np.sqrt(2)]
    assert got.shape == (2, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.stack([want, want]), atol=1e-6)


def test_grand_hand_computed_single_param():
    # loss = logsumexp(s x) - s x_y, so dloss/ds = sum_j (p_j - onehot_j) x_j at s = 1.
    logits = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0], [3.0, 0.0, -3.0]], np.float32)
    labels = np.array([1, 0, 0])
    variables = api.init_variables(FixedLogits(), jax.random.key(0), 1, logits[:1])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    want = np.abs(np.sum((probs - np.eye(3)[labels]) * logits, axis=1))
    got = api.grand_scores(FixedLogits(), variables, logits, labels, batch_size=2)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_grand_equals_per_example_grad_loop(tiny):
    model, variables = tiny
    images, labels = _data(n=9)
    got = api.grand_scores(model, variables, images, labels, batch_size=4)
    want = linen_grand_loop(lambda v, x: model.apply(v, x, train=False), variables, images, labels)
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("fn", [api.el2n_scores, api.grand_scores])
def test_k_seeds_equal_single_seed_calls_and_padding_never_matters(tiny, fn):
    model, variables = tiny
    images, labels = _data()
    together = fn(model, variables, images, labels, batch_size=16)
    assert together.shape == (3, 37)
    for k in range(3):
        single = jax.tree.map(lambda v, k=k: v[k : k + 1], variables)
        np.testing.assert_allclose(
            fn(model, single, images, labels, batch_size=16)[0], together[k], rtol=1e-6
        )
    for batch_size in (8, 64):
        np.testing.assert_allclose(
            fn(model, variables, images, labels, batch_size=batch_size), together, rtol=1e-5
        )
    for seed_axis in ("vmap", "map"):
        other = fn(model, variables, images, labels, batch_size=16, seed_axis=seed_axis)
        np.testing.assert_allclose(other, together, rtol=1e-5)
    np.testing.assert_array_equal(fn(model, variables, images, labels, batch_size=16), together)


def test_init_variables_stacks_independent_inits():
    model = TinyCNN()
    key = jax.random.key(7)
    stacked = api.init_variables(model, key, 2, np.zeros((1, 6, 6, 1)))
    for k, subkey in enumerate(jax.random.split(key, 2)):
        one = model.init(subkey, jnp.zeros((1, 6, 6, 1)), train=False)
        jax.tree.map(lambda a, b, k=k: np.testing.assert_array_equal(a[k], b), stacked, one)


def test_no_retrace_across_batches_or_calls(tiny, monkeypatch):
    model, variables = tiny
    images, labels = _data()
    traces = []
    original = programs._batch_scores

    def counting(per_seed, *args):
        traces.append(per_seed.args[1])  # the score kind bound into the per-seed function
        return original(per_seed, *args)

    monkeypatch.setattr(programs, "_batch_scores", counting)
    programs.clear_programs()
    api.grand_scores(model, variables, images, labels, batch_size=8)  # 5 batches
    api.grand_scores(model, variables, images[:20], labels[:20], batch_size=8)
    api.el2n_scores(model, variables, images, labels, batch_size=8)
    assert traces == ["grand", "el2n"]


def test_bad_inputs_raise_one_line_value_errors(tiny):
    model, variables = tiny
    images, labels = _data(n=10)
    cases = [
        (
            images,
            np.where(np.arange(10) == 4, 3, labels),
            r"range \[0, 3\) at indices \[4\]",
        ),
        (images, np.where(np.arange(10) == 2, -1, labels), r"indices \[2\]"),
        (images[:9], labels, "different lengths"),
        (images, labels.astype(np.float32), "integer"),
    ]
    nan_images = images.copy()
    nan_images[[3, 7], 0, 0, 0] = np.nan
    cases.append((nan_images, labels, r"NaN or inf images at indices \[3, 7\]"))
    for x, y, pattern in cases:
        for fn in (api.el2n_scores, api.grand_scores):
            with pytest.raises(ValueError, match=pattern) as err:
                fn(model, variables, x, y, batch_size=4)
            assert "\n" not in str(err.value)
    single = jax.tree.map(lambda v: v[0], variables)
    with pytest.raises(ValueError, match="no leading seed axis"):
        api.grand_scores(model, single, images, labels)
    ragged = jax.tree.map(lambda v: v, variables)
    ragged["params"]["Dense_0"]["bias"] = ragged["params"]["Dense_0"]["bias"][:2]
    with pytest.raises(ValueError, match="disagree on the seed axis"):
        api.el2n_scores(model, ragged, images, labels)
    with pytest.raises(ValueError, match="seed_axis"):
        api.el2n_scores(model, variables, images, labels, seed_axis="pmap")


def test_nan_scores_are_reported_not_averaged(tiny):
    model, variables = tiny
    images, labels = _data(n=6)
    broken = jax.tree.map(lambda v: v, variables)
    kernel = broken["params"]["Dense_0"]["kernel"]
    broken["params"]["Dense_0"]["kernel"] = kernel.at[1].set(jnp.nan)  # seed 1 diverged
    for fn in (api.el2n_scores, api.grand_scores):
        with pytest.raises(ValueError, match=r"NaN or inf for \(seed, example\)") as err:
            fn(model, broken, images, labels, batch_size=4)
        assert "[(1, 0), (1, 1)" in str(err.value)


def _stream(images, labels, sizes):
    """(images, labels) batches of the given sizes, cycling through `sizes`, as a generator."""
    lo, i = 0, 0
    while lo < len(images):
        hi = min(len(images), lo + sizes[i % len(sizes)])
        yield images[lo:hi], labels[lo:hi]
        lo, i = hi, i + 1


@pytest.mark.parametrize("fn", [api.el2n_scores, api.grand_scores])
def test_streamed_input_equals_array_input_exactly(tiny, fn):
    model, variables = tiny
    images, labels = _data()  # 37 examples, batch_size 8: the last batch is uneven
    want = fn(model, variables, images, labels, batch_size=8)
    # Small, uneven, empty and larger-than-batch_size input batches, uint8-free float input.
    for sizes in ([5, 3, 11], [20], [1], [0, 8, 30]):
        got = fn(model, variables, _stream(images, labels, sizes), batch_size=8)
        assert got.shape == (3, 37) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=str(sizes))
    pairs = [(images[:30], labels[:30]), {"image": images[30:], "label": labels[30:]}]
    np.testing.assert_array_equal(fn(model, variables, pairs, batch_size=8), want)


def test_streamed_uint8_images_are_refused_like_arrays(tiny):
    model, variables = tiny
    rng = np.random.default_rng(3)
    images = rng.integers(0, 4, (13, 6, 6, 1)).astype(np.uint8)
    labels = rng.integers(0, 3, 13)
    for given in (images, _stream(images, labels, [6])):
        with pytest.raises(ValueError, match="uint8, not a float type; convert") as err:
            if isinstance(given, np.ndarray):
                api.el2n_scores(model, variables, given, labels, batch_size=4)
            else:
                api.el2n_scores(model, variables, given, batch_size=4)
        assert "\n" not in str(err.value)


def test_bad_streams_raise_one_line_value_errors(tiny):
    model, variables = tiny
    images, labels = _data(n=12)
    nan = images.copy()
    nan[9, 0, 0, 0] = np.nan
    cases = [
        ([images[:4]], "labels is missing"),  # a list of image arrays is not a stream of pairs
        ([(images[:4], labels[:4]), images[4:8]], r"item 1 is a ndarray, not an \(images, labels"),
        ([(images[:4], labels[:4]), (images[4:8], labels[4:7])], "item 1 has 4 images and 3"),
        ([(images[:4], labels[:4].astype(np.float32))], "item 0 has labels float32"),
        ([(images[:4], labels[:4]), (images[4:8, :5], labels[4:8])], r"item 1 has examples of"),
        (
            [(images[:8], labels[:8]), (nan[8:], labels[8:])],
            r"NaN or inf images at stream indi"
            r"ces \[9\]",
        ),
        (
            [(images[:6], np.where(np.arange(6) == 5, 7, labels[:6]))],
            r"range \[0, 3\) at stream "
            r"indices \[5\] \(values \[7\]\)",
        ),
        (iter([]), "no examples"),
        (iter([(images[:0], labels[:0])]), "no examples"),
    ]
    for stream, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as err:
            api.el2n_scores(model, variables, stream, batch_size=4)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="omit labels"):
        api.grand_scores(model, variables, _stream(images, labels, [4]), labels)
    with pytest.raises(ValueError, match="labels is missing"):
        api.grand_scores(model, variables, images)


def test_integer_images_are_refused(tiny):
    model, variables = tiny
    images, labels = _data(n=6)
    raw = np.clip(images * 40 + 128, 0, 255).astype(np.uint8)
    for fn in (api.el2n_scores, api.grand_scores):
        with pytest.raises(ValueError, match="uint8, not a float type; convert") as err:
            fn(model, variables, raw, labels, batch_size=4)
        assert "\n" not in str(err.value)


class TimeMajorDense(nn.Module):
    """A Dense over [T, B, F]; with batch_size == T its leading axis has the batch's size."""

    @nn.compact
    def __call__(self, x):  # x: [B, T, F]
        h = nn.tanh(nn.Dense(5)(jnp.swapaxes(x, 0, 1)))
        return nn.Dense(3)(jnp.swapaxes(h, 0, 1).reshape(x.shape[0], -1))


def test_grand_time_major_dense_with_batch_equal_to_time_is_exact():
    model = TimeMajorDense()
    rng = np.random.default_rng(3)
    images, labels = rng.normal(size=(7, 4, 6)).astype(np.float32), rng.integers(0, 3, 7)
    variables = api.init_variables(model, jax.random.key(3), 1, images[:1])
    got = api.grand_scores(model, variables, images, labels, batch_size=4)  # T == B == 4
    np.testing.assert_allclose(
        got, linen_grand_loop(model.apply, variables, images, labels), rtol=1e-4
    )
