"""Meshes, sharded losses and multi-host start-up.

The batch axis is the only mesh axis mvcl needs: instances are sharded over it, all views of an
instance stay on one device (the (N, V, D) layout is instance-major), and the losses take their
negatives from the global batch with ``axis_name``.

Start-up (`initialize`): the processes of a cluster are joined by ``jax.distributed``, found by
JAX's own cluster detection (Open MPI, SLURM, Cloud TPU, Kubernetes; mpi4py on request) or named
by the ``MVCL_*`` variables. Then `agree` gives every process the same answer to a yes/no
question, and `announce` prints on the first process only.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

DEFAULT_AXIS = "data"


MVCL_ENV = ("MVCL_COORDINATOR", "MVCL_NUM_PROCESSES", "MVCL_PROCESS_ID")
CLUSTER_DETECTION_ENV = "MVCL_CLUSTER_DETECTION"
# How each of JAX's cluster environments (jax._src.clusters, by ``name``) finds the cluster, for
# the start-up line; K8sCluster has no name of its own.
_FOUND_BY = {
    "ompi": "Open MPI (OMPI_* variables)",
    "slurm": "SLURM (SLURM_* variables)",
    "mpi4py": "mpi4py (MPI.COMM_WORLD)",
    "gketpu": "Cloud TPU on GKE (TPU_WORKER_HOSTNAMES)",
    "gcetpu": "Cloud TPU VM metadata",
    "": "Kubernetes (the in-cluster API)",
}
_NOT_PRESENT = {
    "ompi": "no OMPI_MCA_orte_hnp_uri: start the program with Open MPI's mpirun",
    "slurm": "no SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID and "
    "SLURM_LOCALID: start the program with srun",
    "mpi4py": "mpi4py is not installed: pip install mpi4py",
    "gcetpu": "this is not a Cloud TPU VM of a pod slice",
    "gketpu": "this is not a Cloud TPU VM with TPU_WORKER_HOSTNAMES set",
}


def cluster_environments() -> list[type]:
    """JAX's cluster environments (``ClusterEnv`` subclasses) in JAX's order of detection."""
    from jax._src import clusters  # JAX keeps them private; jax.distributed uses this list

    return [env for env in clusters.ClusterEnv._cluster_types if env.__name__ != "BaseTpuCluster"]


def detection_methods() -> list[str]:
    """The values of ``cluster_detection`` / ``MVCL_CLUSTER_DETECTION``."""
    return ["auto", "none", *(env.name for env in cluster_environments() if env.name)]


def detect_cluster(method: str = "auto") -> tuple[type, int] | None:
    """``(environment, process count)`` of the cluster this process was launched in, or None.

    Asks JAX's cluster environments whether they are present, as ``jax.distributed.initialize()``
    does, without starting anything: ``"auto"`` tries those JAX tries by default, in its order
    (Open MPI, SLURM, Cloud TPU on GKE, Cloud TPU VM, and Kubernetes only in an indexed Job,
    with ``JOB_COMPLETION_INDEX`` set); a name (``"ompi"``, ``"slurm"``, ``"mpi4py"``, ...) only
    that one, which must be present; ``"none"`` none. Only on a Cloud TPU VM (libtpu and TPU
    chips found) does the Cloud TPU check ask the VM's metadata server; elsewhere nothing here
    touches the network.
    """
    methods = detection_methods()
    if method not in methods:
        raise ValueError(
            f"{CLUSTER_DETECTION_ENV}={method!r} is not a cluster detection method; use one of "
            f"{', '.join(methods)}"
        )
    if method == "none":
        return None
    if method == "auto":
        envs = [
            env
            for env in cluster_environments()
            if not env.opt_in_only_method
            # Kubernetes only in an indexed Job (JAX needs its JOB_COMPLETION_INDEX): any other
            # pod (a notebook, a CI runner) would make JAX ask the cluster's API, or warn
            and (env.__name__ != "K8sCluster" or "JOB_COMPLETION_INDEX" in os.environ)
        ]
        env = next((env for env in envs if env.is_env_present()), None)
        if env is None:
            return None
    else:
        env = next(env for env in cluster_environments() if env.name == method)
        if not env.is_env_present():
            raise ValueError(
                f"{CLUSTER_DETECTION_ENV}={method} but {_NOT_PRESENT.get(method, 'it is absent')}"
                f"; or unset {CLUSTER_DETECTION_ENV} to detect the cluster"
            )
    return env, env.get_process_count()


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cluster_detection: str | None = None,
) -> str | None:
    """Starts multi-host JAX (``jax.distributed.initialize``) when this program is one of several
    processes; returns how they were found (None for a single process, nothing started).

    Explicit: the arguments, defaulting to the environment variables ``MVCL_COORDINATOR``
    (host:port), ``MVCL_NUM_PROCESSES`` and ``MVCL_PROCESS_ID``. When ``num_processes`` or any
    of them is given, they decide (one process: nothing is started) and no cluster is detected.

    Detected: otherwise JAX's own cluster detection (`detect_cluster`) runs with
    ``cluster_detection``, default ``MVCL_CLUSTER_DETECTION`` or ``"auto"``: under Open MPI's
    ``mpirun``, SLURM's ``srun``, on the workers of a Cloud TPU pod slice, in an indexed
    Kubernetes Job (or with ``"mpi4py"``, under any MPI) JAX finds the coordinator, the process
    count and this process's id itself, and on GPUs gives each process of a host one GPU when
    the launcher started one process per GPU. A cluster of one process, or none, starts
    nothing: the process sees its local devices only. ``"none"`` never detects.

    Call before anything touches a JAX device.

    Examples:
      >>> import mvcl
      >>> mvcl.parallel.initialize(num_processes=1)  # one process: nothing to start
    """
    env = os.environ
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None) or any(
        name in env for name in MVCL_ENV
    )
    if explicit:
        coordinator_address = coordinator_address or env.get("MVCL_COORDINATOR")
        if num_processes is None and "MVCL_NUM_PROCESSES" in env:
            num_processes = int(env["MVCL_NUM_PROCESSES"])
        if process_id is None and "MVCL_PROCESS_ID" in env:
            process_id = int(env["MVCL_PROCESS_ID"])
        if num_processes is None:
            raise ValueError(
                "MVCL_COORDINATOR or MVCL_PROCESS_ID is set without MVCL_NUM_PROCESSES: set all "
                "three, or none of them to let JAX detect the cluster"
            )
        if num_processes == 1:
            return None
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
        return "the MVCL_* variables"
    method = cluster_detection or env.get(CLUSTER_DETECTION_ENV) or "auto"
    found = detect_cluster(method)
    if found is None or found[1] == 1:
        return None
    cluster, _ = found
    # JAX then reads the coordinator, process count and id from the environment found here
    # (Kubernetes has no name to ask for: JAX's own order finds it, the only one present)
    jax.distributed.initialize(cluster_detection_method=cluster.name or None)
    return _FOUND_BY.get(cluster.name, cluster.__name__)


def startup_line(found_by: str) -> str:
    """The line process 0 prints after `initialize` joined several processes."""
    local = jax.local_device_count()
    return (
        f"mvcl: {jax.process_count()} processes, {jax.device_count()} devices ({local} per "
        f"process), cluster found by {found_by}"
    )


def agree(flag: bool) -> bool:
    """Whether ``flag`` holds on any process (a blocking collective with several)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.process_allgather(np.int32(flag)).any())


def announce(message: str) -> None:
    """Prints ``message`` on the first process only (above a tqdm progress bar, if tqdm is
    installed)."""
    if jax.process_index() != 0:
        return
    try:
        from tqdm import tqdm
    except ImportError:  # (the training stack's; the core needs only JAX and NumPy)
        print(message, flush=True)
    else:
        tqdm.write(message)


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
