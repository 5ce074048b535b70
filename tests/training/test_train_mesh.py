"""Training on a ('seed', 'data') mesh of 8 simulated CPU devices equals the single-device
training: the parameters within float32 rounding, their EL2N and GraNd scores within 1e-5 of
the largest score, the forgetting counts exactly, the AUM margin sums within rounding, the
non-finite records of a planted divergence exactly; a checkpoint of the mesh resumes on the mesh
(bitwise) and on one device.

Equal here means: for every parameter leaf, max |mesh - single| <= 1e-4 * max |single| after 8
SGD steps at learning rate 0.02 (sums taken in another order; measured 3.8e-6 for K=2 on 2x4,
data parallel, and 0, bit for bit, for K=8 on 8x1, where each device runs the one-seed program),
and max |scores(mesh) - scores(single)| <= 1e-5 * max scores(single) for EL2N and GraNd of the
trained models (measured 7e-7 and 1e-6 for K=2, 2e-7 and 4e-7 for K=8).

The checks run in a subprocess: the device count must be set before jax is imported, and other
tests in this pytest process have imported it already.
"""

import subprocess
import sys
import textwrap

import pytest

from datadiet_jax.training import train_mesh
from tests.references import ROOT, cpu_devices_env

_SCRIPT = textwrap.dedent(
    r"""
    import shutil
    import tempfile

    import jax
    import numpy as np
    from absl import logging

    from tests.conftest import train_cfg, train_tiny
    from tests.references import make_split

    assert jax.device_count() == 8, jax.devices()
    logging.set_verbosity(logging.INFO)
    split, tmp = make_split(), tempfile.mkdtemp()


    def train(name, mesh, **kw):
        cfg = train_cfg(mesh=mesh, seed_axis=kw.pop('seed_axis', 'auto'), learning_rate=0.02)
        return train_tiny(split, f'{tmp}/{name}/ckpt', train_cfg=cfg, num_steps=8, **kw)


    def assert_params_close(a, b, what):
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
            x, y = np.asarray(x), np.asarray(y)
            err = np.max(np.abs(x - y)) / np.max(np.abs(y))
            assert err <= 1e-4, (what, err)
            print('REL', what, float(err), 'ABS', float(np.max(np.abs(x - y))))


    def assert_stats_equal(a, b, what):
        for key in a['forgetting']:
            np.testing.assert_array_equal(a['forgetting'][key], b['forgetting'][key], what)
        np.testing.assert_array_equal(a['aum']['count'], b['aum']['count'], what)
        np.testing.assert_allclose(a['aum']['margin_sum'], b['aum']['margin_sum'], rtol=1e-4,
                                   atol=1e-4, err_msg=what)
        np.testing.assert_array_equal(a['nonfinite_step'], b['nonfinite_step'], what)
        assert int(a['forgetting']['count'].sum()) > 0  # events happened: a real comparison


    def assert_scores_close(a, b, what):
        from datadiet_jax import el2n_scores, grand_scores
        from datadiet_jax.scores.model_form import model_form
        from tests.conftest import tiny_model

        model, images = model_form(tiny_model(split)), split.model_inputs()
        for fn in (el2n_scores, grand_scores):
            x = fn(model, {"params": a.params, "state": a.model_state}, images, split.labels)
            y = fn(model, {"params": b.params, "state": b.model_state}, images, split.labels)
            err = np.max(np.abs(x - y)) / np.max(np.abs(y))
            assert err <= 1e-5, (what, fn.__name__, err)
            print('SCORES', what, fn.__name__, float(err))


    # K=2 on 2x4 (data parallel within each seed, seeds unrolled), K=8 on 8x1 (lax.map).
    for num_seeds, seed_axis in ((2, 'auto'), (8, 'map')):
        single, single_stats, _ = train(f'off{num_seeds}', 'off', num_seeds=num_seeds,
                                        seed_axis=seed_axis)
        meshed, mesh_stats, step = train(f'auto{num_seeds}', 'auto', num_seeds=num_seeds,
                                         seed_axis=seed_axis)
        assert step == 8
        assert jax.tree.leaves(meshed)[0].sharding.device_set == {jax.devices()[0]}
        assert_params_close(meshed, single, f'K={num_seeds}')
        assert_stats_equal(mesh_stats, single_stats, f'K={num_seeds}')
        assert_scores_close(meshed, single, f'K={num_seeds}')
        if num_seeds == 2:
            meshed_k2, stats_k2 = meshed, mesh_stats

    # Stopped on the 2x4 mesh at step 4 and resumed there: as if never stopped, bit for bit.
    train('stopped', '2x4', num_seeds=2, max_steps=4)
    shutil.copytree(f'{tmp}/stopped', f'{tmp}/moved')
    resumed, resumed_stats, step = train('stopped', '2x4', num_seeds=2)
    assert step == 8
    for x, y in zip(jax.tree.leaves(meshed_k2), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert_stats_equal(resumed_stats, stats_k2, 'resumed on the mesh')
    # The same checkpoint resumed on one device: within rounding.
    moved, moved_stats, step = train('moved', 'off', num_seeds=2)
    assert step == 8
    assert_params_close(moved, meshed_k2, 'resumed on one device')
    assert_stats_equal(moved_stats, stats_k2, 'resumed on one device')
    # Vmapped seeds on the mesh, and a planted divergence: found per seed at the same steps.
    diverged = {}
    for mesh in ('off', '2x4'):
        cfg = train_cfg(mesh=mesh, seed_axis='vmap', learning_rate=1e30)
        _, stats, step = train_tiny(split, f'{tmp}/nan-{mesh}/ckpt', train_cfg=cfg, num_steps=8)
        assert step == 4, step  # every seed diverged: stopped at the first epoch end
        diverged[mesh] = np.asarray(stats['nonfinite_step'])
    assert np.all(diverged['off'] >= 1), diverged
    np.testing.assert_array_equal(diverged['2x4'], diverged['off'])
    # Vmapped seeds on a data axis: the partitioner gathers whole activations (the reason
    # step_seed_axis runs them one after another); 'map' keeps every activation split.
    import re

    from datadiet_jax.training import k_step, keys, loop, train_mesh
    from tests.conftest import tiny_model

    mesh = train_mesh.make_mesh('2x4', 4, 16, 'compiled')
    gathers = {}
    for mode in ('vmap', 'map'):
        cfg = train_cfg(seed_axis=mode)
        init_fn, step_fn = k_step.programs(tiny_model(split), cfg, 10, mesh)
        state = jax.eval_shape(init_fn, keys.init_keys(0, 1, 4), np.zeros((1, 28, 28, 1)))
        stats = jax.eval_shape(lambda: k_step.init_stats(4, 64))
        S = jax.ShapeDtypeStruct
        batch = {'image': S((4, 16, 28, 28, 1), np.float32), 'label': S((4, 16), np.int32),
                 'index': S((4, 16), np.int64), 'mask': S((4, 16), np.float32),
                 'rng': S((4, 2), np.uint32)}
        hlo = step_fn.lower(state, stats, batch).compile().as_text()
        gathers[mode] = re.findall(r'= f32\[\d+,\d+,\d+,\d+[\],][^ ]* all-gather', hlo)
    assert len(gathers['vmap']) > 0 and gathers['map'] == [], gathers
    assert train_mesh.step_seed_axis('auto', mesh) == 'auto'  # unrolled on CPU: kept
    print('TRAIN_MESH_OK')
    """
)


def test_mesh_training_equals_single_device_training_and_resumes():
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=ROOT,
        env=cpu_devices_env(8),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "TRAIN_MESH_OK" in result.stdout
    # Each training logs the mesh it chose, once.
    assert result.stderr.count("train: training on a mesh {'seed': 2, 'data': 4}") == 4
    assert result.stderr.count("train: training on a mesh {'seed': 8, 'data': 1}") == 1
    assert result.stderr.count("train: training on one device (train.mesh='off')") == 4


def test_auto_seed_axis_runs_seeds_one_after_another_on_a_data_axis(monkeypatch):
    """On an accelerator 'auto' vmaps the seeds, except on a mesh with a 'data' axis, where the
    partitioner would gather each whole batch (the subprocess test shows the gathers)."""
    import types

    monkeypatch.setattr(train_mesh.seed_axis.jax, "default_backend", lambda: "gpu")
    shape = {"seed": 2, "data": 4}
    data_mesh, seed_mesh = (
        types.SimpleNamespace(shape=shape),
        types.SimpleNamespace(shape={"seed": 8, "data": 1}),
    )
    assert train_mesh.step_seed_axis("auto", data_mesh) == "map"
    assert train_mesh.step_seed_axis("auto", seed_mesh) == "auto"
    assert train_mesh.step_seed_axis("auto", None) == "auto"
    assert train_mesh.step_seed_axis("vmap", data_mesh) == "vmap"  # explicit: kept, warned
    assert train_mesh.step_seed_axis("unroll", data_mesh) == "unroll"


@pytest.mark.parametrize(
    "mode,k,batch,devices,shape",
    [
        ("auto", 10, 128, 8, (2, 4)),
        ("auto", 4, 128, 8, (4, 2)),
        ("auto", 1, 128, 8, (1, 8)),
        ("auto", 1, 12, 8, (1, 4)),
        ("auto", 3, 128, 1, (1, 1)),
        ("off", 8, 128, 8, (1, 1)),
        ("2x2", 4, 16, 8, (2, 2)),
    ],
)
def test_mesh_shapes(mode, k, batch, devices, shape):
    assert train_mesh.mesh_shape(mode, k, batch, devices) == shape


@pytest.mark.parametrize(
    "mode,message",
    [
        ("4x4", "needs 16 devices, but JAX sees 8"),
        ("3x2", "does not divide K=4 seeds over 3"),
        ("2x3", "batch_size=16 over 3"),
        ("auto8", "'auto', 'off' or 'SEEDSxDATA'"),
    ],
)
def test_bad_mesh_is_one_line(mode, message):
    with pytest.raises(ValueError, match=message) as err:
        train_mesh.mesh_shape(mode, 4, 16, 8)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode,k,batch", [("2x2", 4, 16), ("auto", 1, 2), ("off", 2, 16)])
def test_a_job_of_several_processes_refuses_a_mesh_that_leaves_devices_out(
    monkeypatch, mode, k, batch
):
    """Every process must hold a block of each batch: with 2 processes of 4 devices, a mesh of
    fewer than 8 devices (an explicit shape, a batch 'auto' cannot split 8 ways, one device) is
    one line naming the fix, before anything is placed."""
    import types

    fake = [types.SimpleNamespace(process_index=i // 4, id=i) for i in range(8)]
    monkeypatch.setattr(train_mesh.jax, "devices", lambda: fake)
    monkeypatch.setattr(train_mesh.jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="every device must take part") as err:
        train_mesh.make_mesh(mode, k, batch)
    assert "\n" not in str(err.value)
