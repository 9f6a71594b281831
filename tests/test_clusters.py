"""Start-up in clusters: JAX's cluster detection (`mvcl.parallel.initialize`), real launchers.

The unit tests set the variables a launcher sets and record what would be passed to
``jax.distributed.initialize`` (nothing is started). The ``slow`` tests start programs: Open MPI's
``mpirun -np 2`` (Debian's ``openmpi-bin``, which ``.ci/run`` installs; skipped where ``mpirun``
is missing) and two processes with the variables SLURM's ``srun -n 2`` sets (no SLURM daemons
run here).
"""

from __future__ import annotations

import os

import jax
import pytest

from mvcl import parallel

LAUNCHER_PREFIXES = ("OMPI_", "PMIX_", "SLURM_", "MVCL_", "TPU_", "JAX_COORDINATOR")
LAUNCHER_NAMES = ("KUBERNETES_SERVICE_HOST",)


def slurm_env(ntasks: int, procid: int = 0) -> dict[str, str]:
    """The variables JAX's SLURM detection reads, as ``srun -n NTASKS`` on one node sets them."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid),
    }


@pytest.fixture
def no_launcher(monkeypatch):
    """No launcher's variables in the environment; ``jax.distributed.initialize`` recorded, not
    run. Yields the list of its calls' keyword arguments."""
    for name in list(os.environ):
        if name.startswith(LAUNCHER_PREFIXES) or name in LAUNCHER_NAMES:
            monkeypatch.delenv(name)
    calls = []

    def record(coordinator_address=None, **kwargs):
        calls.append({"coordinator_address": coordinator_address, **kwargs})

    monkeypatch.setattr(jax.distributed, "initialize", record)
    return calls


def test_plain_machine_stays_one_process_without_asking_the_network(no_launcher, monkeypatch):
    requests = pytest.importorskip("requests")  # what JAX's Cloud TPU detection calls

    def no_network(*args, **kwargs):
        raise AssertionError(f"cluster detection made a network call: {args}")

    monkeypatch.setattr(requests, "get", no_network)
    assert parallel.detect_cluster() is None
    assert parallel.initialize() is None
    assert no_launcher == []


def test_slurm_with_one_task_stays_one_process(no_launcher, monkeypatch):
    for name, value in slurm_env(1).items():
        monkeypatch.setenv(name, value)
    env, count = parallel.detect_cluster()
    assert (env.name, count) == ("slurm", 1)
    assert parallel.initialize() is None
    assert no_launcher == []


def test_slurm_with_two_tasks_starts_jax_distributed_with_jax_detection(no_launcher, monkeypatch):
    for name, value in slurm_env(2, procid=1).items():
        monkeypatch.setenv(name, value)
    assert parallel.initialize() == "SLURM (SLURM_* variables)"
    # JAX itself reads the coordinator, the process count and this process's id
    assert no_launcher == [{"coordinator_address": None, "cluster_detection_method": None}]


def test_named_method_is_passed_to_jax_and_none_never_starts(no_launcher, monkeypatch):
    for name, value in slurm_env(2).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(parallel.CLUSTER_DETECTION_ENV, "slurm")
    assert parallel.initialize() == "SLURM (SLURM_* variables)"
    assert no_launcher[-1]["cluster_detection_method"] == "slurm"
    monkeypatch.setenv(parallel.CLUSTER_DETECTION_ENV, "none")
    assert parallel.initialize() is None
    assert len(no_launcher) == 1


def test_open_mpi_variables_are_found(no_launcher, monkeypatch):
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.0.0.1:34911")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    env, count = parallel.detect_cluster()
    assert (env.name, count) == ("ompi", 4)
    assert parallel.initialize() == "Open MPI (OMPI_* variables)"


def test_mvcl_variables_override_the_detected_cluster(no_launcher, monkeypatch):
    for name, value in slurm_env(2).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MVCL_NUM_PROCESSES", "1")
    assert parallel.initialize() is None  # one process asked: the SLURM job is not joined
    monkeypatch.setenv("MVCL_NUM_PROCESSES", "3")
    monkeypatch.setenv("MVCL_PROCESS_ID", "2")
    monkeypatch.setenv("MVCL_COORDINATOR", "10.0.0.1:1234")
    assert parallel.initialize() == "the MVCL_* variables"
    assert no_launcher == [
        {"coordinator_address": "10.0.0.1:1234", "num_processes": 3, "process_id": 2}
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MVCL_CLUSTER_DETECTION": "bogus"}, "use one of auto, none, ompi, slurm, mpi4py"),
        ({"MVCL_CLUSTER_DETECTION": "ompi"}, "start the program with Open MPI's mpirun"),
        ({"MVCL_CLUSTER_DETECTION": "slurm"}, "start the program with srun"),
        ({"MVCL_COORDINATOR": "h:1"}, "without MVCL_NUM_PROCESSES: set all three"),
        ({"MVCL_NUM_PROCESSES": "2"}, "needs coordinator_address and process_id"),
    ],
)
def test_bad_launch_settings_name_the_problem(no_launcher, monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        parallel.initialize()
    assert no_launcher == []


def test_detection_methods_are_jax_cluster_environments():
    # JAX keeps its cluster environments private (jax._src.clusters): this fails if they move.
    methods = parallel.detection_methods()
    assert {"ompi", "slurm", "mpi4py", "gcetpu", "gketpu"} <= set(methods)
    assert methods[:2] == ["auto", "none"]


def test_kubernetes_is_detected_only_in_an_indexed_job(no_launcher, monkeypatch):
    # A pod that is no indexed Job (a notebook server, a CI runner) stays one process; JAX's own
    # check would warn (no `kubernetes` package) or ask the cluster's API.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.setattr(
        jax._src.clusters.K8sCluster, "is_env_present", classmethod(lambda c: 1 / 0)
    )
    assert parallel.detect_cluster() is None
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    with pytest.raises(ZeroDivisionError):  # now JAX's Kubernetes check runs
        parallel.detect_cluster()
