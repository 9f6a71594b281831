"""Meshes, sharded losses and multi-host start-up.

The batch axis is the only mesh axis mvcl needs: instances are sharded over it, all views of an
instance stay on one device (the (N, V, D) layout is instance-major), and the losses take their
negatives from the global batch with ``axis_name``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

DEFAULT_AXIS = "data"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts multi-host JAX (``jax.distributed.initialize``) when more than one process is asked.

    Arguments default to the environment variables ``MVCL_COORDINATOR`` (host:port),
    ``MVCL_NUM_PROCESSES`` and ``MVCL_PROCESS_ID``. With none of them set (or one process) nothing
    is started: a single process sees its local devices only. Call before anything touches a JAX
    device.

    Examples:
      >>> import mvcl
      >>> mvcl.parallel.initialize(num_processes=1)  # one process: nothing to start
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("MVCL_COORDINATOR")
    if num_processes is None and "MVCL_NUM_PROCESSES" in env:
        num_processes = int(env["MVCL_NUM_PROCESSES"])
    if process_id is None and "MVCL_PROCESS_ID" in env:
        process_id = int(env["MVCL_PROCESS_ID"])
    if num_processes is None or num_processes == 1:
        return
    if coordinator_address is None or process_id is None:
        raise ValueError(
            f"num_processes={num_processes} needs coordinator_address and process_id "
            "(or MVCL_COORDINATOR and MVCL_PROCESS_ID)"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(
        coordinator_address, num_processes=num_processes, process_id=process_id
    )


def make_mesh(num_devices: int | None = None, axis_name: str = DEFAULT_AXIS) -> jax.sharding.Mesh:
    """A 1-D mesh over the batch axis: every device of every process, or the first ``num_devices``.

    Built by ``jax.make_mesh``, which orders the devices by the physical topology (on a TPU pod
    slice, neighbours along the mesh axis are neighbouring chips, so a ring backend passes
    blocks between neighbours). The axis is ``Auto``, so unsharded inputs are placed by the
    partitioner.

    Examples:
      >>> import mvcl
      >>> mesh = mvcl.parallel.make_mesh()
      >>> mesh.axis_names
      ('data',)
    """
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices must be in [1, {len(devices)}], got {num_devices}")
        devices = devices[:num_devices]
    return jax.make_mesh(
        (len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices
    )


def batch_sharding(mesh: jax.sharding.Mesh, axis_name: str = DEFAULT_AXIS) -> NamedSharding:
    """Instances (axis 0) sharded over ``axis_name``, everything else replicated.

    Examples:
      >>> import jax, mvcl
      >>> mesh = mvcl.parallel.make_mesh(1)
      >>> z = jax.device_put(jax.numpy.zeros((8, 4, 16)), mvcl.parallel.batch_sharding(mesh))
      >>> z.sharding.spec == jax.sharding.PartitionSpec("data")  # instances over "data"
      True
    """
    check_axis(mesh, axis_name)
    return NamedSharding(mesh, P(axis_name))


def check_axis(mesh: jax.sharding.Mesh, axis_name: str) -> None:
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"axis_name={axis_name!r} is not an axis of the mesh (axes: {tuple(mesh.axis_names)})"
        )


def check_divisible(n: int, mesh: jax.sharding.Mesh, axis_name: str, what: str = "N") -> None:
    devices = mesh.shape[axis_name]
    if n % devices:
        raise ValueError(
            f"the batch does not divide over the mesh: {what} = {n} instances over "
            f"{devices} devices of axis {axis_name!r}"
        )


def shard_loss(
    loss: Callable[..., jax.Array],
    mesh: jax.sharding.Mesh,
    axis_name: str = DEFAULT_AXIS,
    **loss_kwargs: Any,
) -> Callable[[ArrayLike], jax.Array]:
    """The jitted global-batch loss of a global (N, V, D) array, computed with ``shard_map``.

    Each device gets N / devices instances and calls ``loss(z_local, axis_name=axis_name,
    **loss_kwargs)``; the scalar is replicated. ``jax.grad`` of the result is the gradient of the
    single-device loss on the whole batch.

    Examples:
      >>> import jax, mvcl
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # the global batch
      >>> mesh = mvcl.parallel.make_mesh()  # every device
      >>> f = mvcl.parallel.shard_loss(mvcl.losses.mv_dhel, mesh, temperature=0.5, backend="ring")
      >>> loss, grad = jax.value_and_grad(f)(z)
      >>> print(f"{loss:.4f}")  # the one-device loss of the whole batch
      6.0199
      >>> one = jax.grad(lambda z: mvcl.losses.mv_dhel(z, temperature=0.5))(z)
      >>> bool(jax.numpy.allclose(grad, one, atol=1e-6))
      True
    """
    check_axis(mesh, axis_name)
    per_device = jax.shard_map(
        functools.partial(loss, axis_name=axis_name, **loss_kwargs),
        mesh=mesh,
        in_specs=P(axis_name),
        out_specs=P(),
    )

    @jax.jit
    def sharded(z: jax.Array) -> jax.Array:
        if z.ndim != 3:
            raise ValueError(f"z must have rank 3, (N, V, D), got shape {tuple(z.shape)}")
        check_divisible(z.shape[0], mesh, axis_name)
        return per_device(z)

    return sharded
