"""Scores over a mesh spanning 2 processes (JAX's distributed runtime, 4 CPU devices each) equal
the single-process scores.

Two subprocesses join one `jax.distributed` job through a coordinator on localhost; the CPU
collectives are gloo. Each builds a global ('seed', 'data') mesh of all 8 devices and calls
`grand_scores`/`el2n_scores` with the same arguments; each must receive the full [K, N] result.
"""

import socket
import subprocess
import sys
import textwrap

from tests.references import ROOT, cpu_devices_env

_WORKER = textwrap.dedent(
    """
    import sys

    import jax

    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        coordinator_address=f'localhost:{sys.argv[2]}', num_processes=2, process_id=int(sys.argv[1])
    )
    import numpy as np
    from jax.sharding import Mesh

    from datadiet_jax.scores import api
    from tests.references import TinyCNN

    assert jax.process_count() == 2 and jax.device_count() == 8, jax.devices()
    assert jax.local_device_count() == 4

    model = TinyCNN()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(37, 6, 6, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 37)
    variables = api.init_variables(model, jax.random.key(0), 4, images[:1])
    devices = np.array(jax.devices()).reshape(2, 4)  # row p: the devices of process p
    # Seeds split across the processes; then the data split across them.
    for grid in (devices, devices.T):
        mesh = Mesh(grid, ('seed', 'data'))
        for fn in (api.grand_scores, api.el2n_scores):
            single = fn(model, variables, images, labels, batch_size=8)  # this process alone
            sharded = fn(model, variables, images, labels, batch_size=8, mesh=mesh)
            assert sharded.shape == (4, 37), sharded.shape
            np.testing.assert_allclose(sharded, single, rtol=1e-5, err_msg=fn.__name__)
            assert np.ptp(single[:, :8]) > 1e-3
    print('MULTIPROCESS_OK', jax.process_index(), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_mesh_scores_equal_single_process_scores():
    env = cpu_devices_env(4)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(i), port],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"process {i}: {err[-4000:]}"
        assert f"MULTIPROCESS_OK {i}" in out
