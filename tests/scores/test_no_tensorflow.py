"""The scores library runs where JAX runs: no TensorFlow, TFDS or ml_collections needed.

A subprocess blocks those modules (an import of any of them raises ImportError), imports every
module of `datadiet_jax.scores` (found by `pkgutil`, so a new module is covered without a list),
computes tiny EL2N, GraNd and AUM values through the public API, and collects the tests of
`tests/scores/`, the ones a GPU image without TensorFlow runs.
"""

import os
import subprocess
import sys
import textwrap

from tests.references import ROOT

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

    from datadiet_jax import el2n_scores, get_model, grand_scores, init_variables
    from datadiet_jax.scores import aum

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
    import importlib
    import pkgutil

    import datadiet_jax.scores as library

    names = [m.name for m in pkgutil.walk_packages(library.__path__, library.__name__ + '.')]
    for name in names:
        importlib.import_module(name)
    assert 'datadiet_jax.scores.pergrad.guard' in names and len(names) > 20, names
    import pytest

    code = pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', 'tests/scores'])
    assert code == 0, code
    leaked = [m for m in sys.modules if m.split('.')[0] in BLOCKED]
    assert not leaked, leaked
    print('NO_TF_OK')
    """
)


def test_scores_need_no_tensorflow_tfds_or_ml_collections():
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NO_TF_OK" in proc.stdout
