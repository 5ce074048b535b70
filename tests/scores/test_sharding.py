"""Scores over a ('seed', 'data') mesh of 8 simulated CPU devices equal single-device scores;
the batch check refuses a model mixing examples there too.

The check runs in a subprocess: the device count must be set before jax is imported, and other
tests in this pytest process have imported it already.
"""

import subprocess
import sys
import textwrap

from tests.references import ROOT, cpu_devices_env

_SCRIPT = textwrap.dedent(
    """
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from datadiet_jax.scores import api
    from tests.references import TinyCNN

    assert jax.device_count() == 8, jax.devices()

    model = TinyCNN(layer_norm=True)  # LayerNorm has no fast rule: the vmap(grad) path too
    rng = np.random.default_rng(0)
    images = rng.normal(size=(37, 6, 6, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 37)
    for num_seeds, shape in ((2, (2, 4)), (4, (4, 2)), (4, (1, 8))):
        variables = api.init_variables(model, jax.random.key(num_seeds), num_seeds, images[:1])
        mesh = Mesh(np.array(jax.devices()).reshape(shape), ('seed', 'data'))
        for fn in (api.grand_scores, api.el2n_scores):
            single = fn(model, variables, images, labels, batch_size=8)
            sharded = fn(model, variables, images, labels, batch_size=8, mesh=mesh)
            assert sharded.shape == (num_seeds, 37), sharded.shape
            # A psum of per-example gradients across data or seed shards would change these.
            np.testing.assert_allclose(sharded, single, rtol=1e-5, err_msg=f'{fn.__name__} {shape}')
            assert np.ptp(single[:, :8]) > 1e-3  # examples within a shard really differ
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ('seed', 'data'))
    for kwargs, pattern in (({'batch_size': 6}, 'batch_size=6'), ({'batch_size': 8}, 'K=3')):
        variables = api.init_variables(model, jax.random.key(0), 3 if 'K' in pattern else 2,
                                          images[:1])
        try:
            api.el2n_scores(model, variables, images, labels, mesh=mesh, **kwargs)
        except ValueError as err:
            assert pattern in str(err), err
        else:
            raise AssertionError('expected ValueError ' + pattern)
    def mixing(params, x):  # the batch mean of each device's shard mixes its examples
        h = x.reshape(len(x), -1)
        return (h - h.mean(0)) @ params['w']

    params = {'w': jax.numpy.asarray(rng.normal(size=(2, 36, 3)), jax.numpy.float32)}
    for fn in (api.grand_scores, api.el2n_scores):
        try:
            fn(mixing, params, images, labels, batch_size=8, mesh=mesh)
        except ValueError as err:
            assert 'batch statistics' in str(err), err
        else:
            raise AssertionError('expected the batch check to refuse the mixing model')
    print('SHARDING_OK')
    """
)


def test_mesh_scores_equal_single_device_scores():
    env = cpu_devices_env(8)
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "SHARDING_OK" in result.stdout
