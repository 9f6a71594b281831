"""Bad input to the losses fails early with a ValueError that names the problem.

One test per kind of mistake the public API checks: wrong rank, V < 2, V != 2 for the
two-view losses (in test_losses.py), N < 2, temperature <= 0, unknown loss / backend / kernel /
option names, non-float dtypes, the single-device backend asked for an axis, an axis that no
shard_map binds. The multi-device cases (a batch that does not divide over the mesh, a mesh
without the axis) are at the end, on a one-device mesh or in a worker with 3 devices.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from mvcl import backends, losses, parallel

MULTI_VIEW = list(losses.MULTI_VIEW)


def call(name, z, temperature=0.5, **kwargs):
    return losses.spec(name).call(z, temperature=temperature, **kwargs)


def z_of(shape, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)


@pytest.mark.parametrize("name", losses.NAMES)
@pytest.mark.parametrize("shape", [(8, 16), (8,), (2, 8, 2, 16)])
def test_wrong_rank(name, shape):
    with pytest.raises(ValueError, match=r"rank 3, \(N, V, D\)"):
        call(name, z_of(shape))


@pytest.mark.parametrize("name", MULTI_VIEW)
def test_fewer_than_two_views(name):
    with pytest.raises(ValueError, match="V >= 2 views"):
        call(name, z_of((8, 1, 16)))


@pytest.mark.parametrize("name", losses.NAMES)
def test_fewer_than_two_instances(name):
    with pytest.raises(ValueError, match="N >= 2 instances"):
        call(name, z_of((1, 2, 16)))


@pytest.mark.parametrize("name", [n for n in losses.NAMES if losses.spec(n).temperature])
@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan")])
def test_temperature_not_positive(name, temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        call(name, z_of((8, 2, 16)), temperature=temperature)


@pytest.mark.parametrize("temperature", [np.ones(2), "0.5", None])
def test_temperature_not_a_scalar(temperature):
    with pytest.raises(ValueError, match="temperature must be a positive scalar"):
        losses.mv_dhel(z_of((8, 2, 16)), temperature=temperature)


def test_unknown_loss_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss 'mv_dhell'.*mv_dhel"):
        losses.get("mv_dhell")


@pytest.mark.parametrize("name", losses.NAMES)
def test_unknown_backend(name):
    with pytest.raises(ValueError, match="backend must be one of .*'dense'.*got 'tpu'"):
        call(name, z_of((8, 2, 16)), backend="tpu")


def test_unknown_kernel_and_bad_riesz_parameter():
    with pytest.raises(ValueError, match="kernel must be one of .*got 'laplace'"):
        losses.kcl(z_of((8, 2, 16)), kernel="laplace")
    with pytest.raises(ValueError, match="t must be non-zero for the riesz kernel"):
        losses.kcl(z_of((8, 2, 16)), kernel="riesz", t=0.0)


@pytest.mark.parametrize(
    "name, option, value",
    [
        ("mv_infonce", "negatives", "some"),
        ("pwe", "pair_loss", "dcl"),
        ("avg", "pair_loss", "kcl"),
    ],
)
def test_unknown_option_value(name, option, value):
    with pytest.raises(ValueError, match=f"{option} must be one of .*got '{value}'"):
        call(name, z_of((8, 3, 16)), **{option: value})


@pytest.mark.parametrize("name", losses.NAMES)
@pytest.mark.parametrize("dtype", [np.int32, np.bool_])
def test_non_float_embeddings(name, dtype):
    with pytest.raises(ValueError, match="z must be a floating array"):
        call(name, jnp.ones((8, 2, 16), dtype))


def test_bad_tile():
    with pytest.raises(ValueError, match="tile must be a positive number"):
        losses.mv_dhel(z_of((8, 2, 16)), temperature=0.5, backend=backends.get("blockwise", tile=0))


def test_dense_backend_refuses_an_axis():
    mesh = parallel.make_mesh(1)
    f = parallel.shard_loss(losses.mv_dhel, mesh, temperature=0.5, backend="dense")
    with pytest.raises(ValueError, match="backend 'dense' is single-device.*'gather' or 'ring'"):
        f(z_of((8, 2, 16)))


@pytest.mark.parametrize("backend", ["gather", "ring"])
def test_axis_not_bound_by_a_shard_map(backend):
    with pytest.raises(ValueError, match="axis_name='data' is not bound here"):
        losses.mv_infonce(z_of((8, 2, 16)), temperature=0.5, axis_name="data", backend=backend)
    with pytest.raises(ValueError, match="axis_name='batch' is not bound here"):
        jax.jit(lambda z: losses.pvc(z, temperature=0.5, axis_name="batch"))(z_of((8, 2, 16)))


def test_mesh_without_the_axis():
    mesh = parallel.make_mesh(1, axis_name="batch")
    with pytest.raises(ValueError, match="axis_name='data' is not an axis of the mesh.*'batch'"):
        parallel.shard_loss(losses.mv_dhel, mesh, temperature=0.5)
    with pytest.raises(ValueError, match="axis_name='data' is not an axis of the mesh"):
        parallel.batch_sharding(mesh)


def test_shard_loss_checks_rank():
    f = parallel.shard_loss(losses.mv_dhel, parallel.make_mesh(1), temperature=0.5)
    with pytest.raises(ValueError, match=r"rank 3, \(N, V, D\)"):
        f(z_of((8, 16)))


def test_check_finite_eager_and_under_jit():
    good = z_of((4, 2, 3))
    assert losses.check_finite(good) is good
    bad = good.at[1, 0, 2].set(jnp.nan).at[3, 1, 0].set(jnp.inf)
    with pytest.raises(ValueError, match="z has 2 non-finite values"):
        losses.check_finite(bad)
    checked = jax.jit(
        checkify.checkify(lambda z: losses.mv_dhel(losses.check_finite(z), temperature=0.5))
    )
    err, value = checked(good)
    err.throw()
    assert np.isfinite(float(value))
    err, _ = checked(bad)
    with pytest.raises(checkify.JaxRuntimeError, match="z has non-finite values"):
        err.throw()


def test_batch_that_does_not_divide_over_three_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "multidevice_worker.py"), "errors", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    messages = {row["case"]: row["error"] for row in map(json.loads, done.stdout.splitlines())}
    assert "N = 8 instances over 3 devices of axis 'data'" in messages["shard_loss"]
