"""The scores library runs where JAX runs: no TensorFlow, TFDS or ml_collections needed.

A subprocess blocks those modules (an import of any of them raises ImportError), imports the
public scores API, computes tiny EL2N, GraNd and AUM values, and collects the score and gradient
norm tests, the ones a GPU image without TensorFlow runs.
"""

import os
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = ('tensorflow', 'tensorflow_datasets', 'ml_collections')


    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ImportError(f'{name} is blocked: the scores library must not need it')
            return None


    sys.meta_path.insert(0, _Block())
    """
)

_SCRIPT = BLOCKER + textwrap.dedent(
    """
    import jax
    import numpy as np

    from datadiet_jax import aum, el2n_scores, get_model, grand_scores, init_variables

    model = get_model('small_cnn', 3, width=4)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(10, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 10)
    variables = init_variables(model, jax.random.key(0), num_seeds=2, sample_input=images[:1])
    grand = grand_scores(model, variables, images, labels, batch_size=4)
    stream = ((images[i:i + 3], labels[i:i + 3]) for i in range(0, 10, 3))
    el2n = el2n_scores(model, variables, stream, batch_size=4)
    assert grand.shape == el2n.shape == (2, 10) and np.isfinite(grand).all() and (grand > 0).all()
    np.testing.assert_array_equal(el2n, el2n_scores(model, variables, images, labels, batch_size=4))
    state = aum.update_aum(aum.init_aum(1, 2), np.array([[0, 1]]), np.eye(2)[None],
                           np.array([[0, 0]]), np.ones((1, 2)))
    assert aum.aum_scores(state).tolist() == [[-1.0, 1.0]]
    import datadiet_jax.sharding, datadiet_jax.forgetting, datadiet_jax.grad_norms  # noqa
    import pytest

    code = pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider',
                        'tests/test_scores.py', 'tests/test_grad_norms.py'])
    assert code == 0, code
    leaked = [m for m in sys.modules if m.split('.')[0] in BLOCKED]
    assert not leaked, leaked
    print('NO_TF_OK')
    """
)


def test_scores_need_no_tensorflow_tfds_or_ml_collections():
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=root, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NO_TF_OK" in proc.stdout
