"""Start-up in clusters: JAX's cluster detection (`mvcl.parallel.initialize`), real launchers.

The unit tests set the variables a launcher sets and record what would be passed to
``jax.distributed.initialize`` (nothing is started). The ``slow`` tests start programs with real
launchers, from Debian's packages that ``.ci/run`` installs (skipped where they are missing):
Open MPI's ``mpirun -np 2`` (``openmpi-bin``) and SLURM's ``srun -n 2`` on a one-node cluster
that the test starts on 127.0.0.1 (``slurm-wlm``: slurmctld, slurmd, munged; as root).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from run_helpers import REPO, finish, free_port, saved_state, train_losses, xla_flags

from mvcl import parallel

LAUNCHER_PREFIXES = ("OMPI_", "PMIX_", "SLURM_", "TPU_", "JAX_COORDINATOR")
LAUNCHER_NAMES = (
    *parallel.MVCL_ENV,
    parallel.CLUSTER_DETECTION_ENV,
    "KUBERNETES_SERVICE_HOST",
    "JOB_COMPLETION_INDEX",
)


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
    assert no_launcher == [{"coordinator_address": None, "cluster_detection_method": "slurm"}]


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


# --- programs started by launchers ---------------------------------------------------------------

BIN = Path(sys.executable).parent  # the console scripts mvcl-pretrain, mvcl-evaluate, ...
LAUNCH = REPO / "experiments" / "launch"
needs_mpirun = pytest.mark.skipif(
    shutil.which("mpirun") is None,
    reason="Open MPI's mpirun is not installed (apt-get install openmpi-bin; .ci/run does)",
)
# The bundled digits, a narrow model, 8 steps of 32 images; no evaluation at the end.
DIGITS = "digits:width=0.125"
DIGITS_RUN = [
    "--config.batch_size=32",
    "--config.num_steps=8",
    "--config.model.proj_dim=16",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=1000",
    "--config.progress_bar=False",
    "--config.eval.enabled=False",
]


def program_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """This environment without any launcher's variables, on ``devices`` CPU devices, with the
    console scripts first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(LAUNCHER_PREFIXES) or k in LAUNCHER_NAMES)
    }
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=xla_flags(devices, env.get("XLA_FLAGS", "")),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    )
    return env


def popen(command, env) -> subprocess.Popen:
    return subprocess.Popen(
        [str(c) for c in command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def digits_dir(tmp_path):
    """The bundled digits prepared once, before several processes read them."""
    from mvcl.data import digits

    digits.prepare_digits(tmp_path / "tfds")
    return tmp_path / "tfds"


STARTUP = "mvcl: 2 processes, 2 devices (1 per process), cluster found by {}"


def assert_two_processes_end_as_one(tmp_path, out_one: str, out_two: str, found_by: str) -> None:
    """The 2-process run (``tmp_path/two``) printed the start-up line once and ends with the
    losses and train state, bitwise, of the 1-process run on 2 devices (``tmp_path/one``): the
    same global batches (each process read its half), the same 2-device mesh, the same
    per-device programs."""
    assert out_two.count(STARTUP.format(found_by)) == 1  # process 0 only
    assert "on 2 device(s) in 2 process(es)" in out_two
    assert "on 2 device(s) in 1 process(es)" in out_one and "mvcl:" not in out_one
    losses = train_losses(tmp_path / "one")
    assert len(losses) == 8 and train_losses(tmp_path / "two") == losses
    expected, got = saved_state(tmp_path / "one", 8), saved_state(tmp_path / "two", 8)
    for name in ("params", "batch_stats", "opt_state"):
        jax.tree.map(np.testing.assert_array_equal, got[name], expected[name])


@pytest.mark.slow
@needs_mpirun
def test_mpirun_recipe_ends_bitwise_as_one_process_on_two_devices(tmp_path, digits_dir):
    args = [f"--config.dataset.data_dir={digits_dir}", *DIGITS_RUN]
    one = popen(
        [BIN / "mvcl-pretrain", f"--config={DIGITS}", f"--workdir={tmp_path / 'one'}", *args],
        program_env(devices=2),
    )
    # experiments/launch/mpirun.sh: mpirun -np 2 ... mvcl-pretrain --config=digits:... <args>
    recipe = program_env(
        NP="2",
        CONFIG=DIGITS,
        WORKDIR=str(tmp_path / "two"),
        MPIRUN_ARGS="--oversubscribe",  # 2 processes on CI's 2 cores
        JAX_COORDINATOR_PORT=str(free_port()),
    )
    two = popen([LAUNCH / "mpirun.sh", *args], recipe)
    (out_one, _), (out_two, _) = finish(one), finish(two)
    assert_two_processes_end_as_one(tmp_path, out_one, out_two, "Open MPI (OMPI_* variables)")


@pytest.mark.slow
@needs_mpirun
def test_mpirun_evaluate_prints_the_table_of_one_process(tmp_path, digits_dir):
    from mvcl import configs, train

    config = configs.load("digits", "width=0.125")
    config.dataset.data_dir = str(digits_dir)
    config.batch_size, config.num_steps, config.progress_bar = 32, 2, False
    config.model.proj_dim = 16
    config.eval.enabled = False  # evaluated below, by the programs
    config.eval.probe_epochs, config.eval.geometry_examples = 2, 64
    config.eval.train_examples, config.eval.pixel_baseline = 512, False
    train.train_and_evaluate(config, tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    one = popen([BIN / "mvcl-evaluate", f"--workdir={tmp_path / 'one'}"], program_env(devices=2))
    mpirun = ["mpirun", "-np", "2", "--oversubscribe"]
    if os.getuid() == 0:
        mpirun.append("--allow-run-as-root")
    two = popen(
        [*mpirun, BIN / "mvcl-evaluate", f"--workdir={tmp_path / 'two'}"],
        program_env(JAX_COORDINATOR_PORT=str(free_port())),
    )
    (out_one, _), (out_two, _) = finish(one), finish(two)
    assert out_two.count(STARTUP.format("Open MPI (OMPI_* variables)")) == 1
    table = out_one[out_one.index("Evaluation at step 2:") :]
    assert "backbone" in table and "projector" in table and "effective_rank" in table
    assert table in out_two and out_two.count("Evaluation at step") == 1


@pytest.mark.slow
@needs_mpirun
def test_mpi4py_detection_named_in_the_environment_joins_mpirun_processes():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (the test extra installs it)")
    show = "import sys, jax; from mvcl import parallel; f = parallel.initialize(); " + (
        # one write per line: print's two writes (text, newline) of two processes interleave
        "sys.stdout.write(f'{jax.process_index()} {jax.process_count()} {jax.device_count()} "
        "{f}\\n'); sys.stdout.flush()"
    )
    mpirun = ["mpirun", "-np", "2", "--oversubscribe"]
    if os.getuid() == 0:
        mpirun.append("--allow-run-as-root")
    env = program_env(MVCL_CLUSTER_DETECTION="mpi4py", JAX_COORDINATOR_PORT=str(free_port()))
    out, _ = finish(popen([*mpirun, sys.executable, "-c", show], env))
    lines = sorted(line for line in out.splitlines() if "mpi4py" in line)
    assert lines == [f"{i} 2 2 mpi4py (MPI.COMM_WORLD)" for i in (0, 1)], out


SLURM_PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "srun", "sinfo")
SLURM_CONF = """\
ClusterName=mvcltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def sbin(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


@pytest.fixture
def slurm(tmp_path):
    """A one-node SLURM cluster on 127.0.0.1 (Debian's slurm-wlm: slurmctld, slurmd and munged
    if not running), started for the test and stopped after it; yields the variable SLURM_CONF
    that names it.
    Skips where SLURM is not installed or this is not root (the daemons' user here)."""
    missing = [name for name in SLURM_PROGRAMS if sbin(name) is None]
    if missing or os.getuid() != 0:
        pytest.skip(f"no one-node SLURM here (missing: {missing or 'root'}; .ci/run installs it)")
    host = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(host)  # JAX's coordinator is the job's first node, by name
    except OSError:
        pytest.skip(f"the host name {host!r} does not resolve")
    munged_pid = None
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode:
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", sbin("munged")], check=True)
        munged_pid = int(Path("/run/munge/munged.pid").read_text())
    conf_dir = tmp_path / "slurm"
    for sub in ("state", "spool"):
        (conf_dir / sub).mkdir(parents=True)
    conf = conf_dir / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=host,
            ctld_port=free_port(),
            d_port=free_port(),
            dir=conf_dir,
            cpus=os.cpu_count(),
        )
    )
    env = dict(os.environ, SLURM_CONF=str(conf))
    daemons = [
        subprocess.Popen(
            [sbin(d), "-D", "-f", str(conf)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for d in ("slurmctld", "slurmd")
    ]
    try:
        deadline = time.time() + 30
        while True:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True
            ).stdout.strip()
            if state == "idle":
                break
            assert time.time() < deadline, f"the SLURM node is {state!r} after 30 s"
            assert all(d.poll() is None for d in daemons), (conf_dir / "slurmctld.log").read_text()
            time.sleep(0.5)
        yield {"SLURM_CONF": str(conf)}
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait(timeout=30)
        if munged_pid is not None:  # started here: stopped here
            os.kill(munged_pid, signal.SIGTERM)


@pytest.mark.slow
def test_srun_two_tasks_end_bitwise_as_one_task_on_two_devices(tmp_path, digits_dir, slurm):
    def srun(tasks: int, devices: int, workdir: str) -> subprocess.Popen:
        command = [
            "srun",
            f"--ntasks={tasks}",
            "--kill-on-bad-exit=1",
            BIN / "mvcl-pretrain",
            f"--config={DIGITS}",
            f"--workdir={tmp_path / workdir}",
            f"--config.dataset.data_dir={digits_dir}",
            *DIGITS_RUN,
        ]
        # JAX derives the coordinator's port from the job id; a free one, as CI runs other jobs
        env = program_env(devices, JAX_COORDINATOR_PORT=str(free_port()), **slurm)
        return popen(command, env)

    one, two = srun(1, 2, "one"), srun(2, 1, "two")
    (out_one, _), (out_two, _) = finish(one), finish(two)
    # (a SLURM job of one task stays one process: nothing started, nothing printed)
    assert_two_processes_end_as_one(tmp_path, out_one, out_two, "SLURM (SLURM_* variables)")


@pytest.mark.slow
def test_launch_recipes_name_mvcl_commands_that_parse(tmp_path):
    recipes = {  # (mpirun.sh's command runs for real above)
        "tpu_pod_slice.sh": ["dry-run", "--config.num_epochs=20"],
        "slurm_gpus.sbatch": ["--dry-run"],
    }
    for recipe, args in recipes.items():
        done = subprocess.run(
            ["bash", LAUNCH / recipe, *args],
            env=program_env(HOME=str(tmp_path)),
            capture_output=True,
            text=True,
            check=True,
        )
        command = shlex.split(done.stdout)
        assert command[0] == "mvcl-pretrain" and any(a.startswith("--workdir=") for a in command)
        # --helpshort after every other flag: the flags and the config (with its overrides)
        # are parsed, then the program exits without running
        parsed = subprocess.run(
            [BIN / command[0], *command[1:], "--helpshort"],
            env=program_env(),
            capture_output=True,
            text=True,
        )
        assert parsed.returncode == 0, f"{recipe}: {command}\n{parsed.stderr[-2000:]}"
    # ... which fails for a command that does not parse
    bad = subprocess.run(
        [BIN / "mvcl-pretrain", "--config=imagenet1k", "--config.num_epoch=20", "--helpshort"],
        env=program_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "did you mean --config.num_epochs" in bad.stderr


def test_tpu_and_slurm_recipes_launch_their_dry_run_command_on_every_worker(tmp_path):
    # gcloud and srun replaced by a script that prints its arguments, one a line
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("gcloud", "srun"):
        (fake / name).write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$(basename "$0")" "$@"\n')
        (fake / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", HOME=str(tmp_path))

    def bash(*args: str) -> str:
        return subprocess.run(
            ["bash", *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    tpu, sbatch = LAUNCH / "tpu_pod_slice.sh", LAUNCH / "slurm_gpus.sbatch"
    command = bash(str(tpu), "dry-run", "--config.num_epochs=20").strip()
    ssh = bash(str(tpu), "train", "--config.num_epochs=20").splitlines()
    assert ssh[:3] == ["gcloud", "compute", "tpus"] and "--worker=all" in ssh
    remote = "\n".join(ssh[ssh.index(next(a for a in ssh if a.startswith("--command="))) :])
    assert f"nohup {command} >" in remote
    command = shlex.split(bash(str(sbatch), "--dry-run", "--config.num_epochs=20"))
    assert bash(str(sbatch), "--config.num_epochs=20").splitlines() == [
        "srun",
        "--kill-on-bad-exit=1",
        *command,
    ]


@pytest.mark.slow
def test_bad_detection_method_is_one_line_naming_the_choices(tmp_path):
    done = subprocess.run(
        [BIN / "mvcl-evaluate", f"--workdir={tmp_path}"],
        env=program_env(MVCL_CLUSTER_DETECTION="mpi"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mvcl-evaluate: error: MVCL_CLUSTER_DETECTION='mpi' is not a cluster detection method; "
        "use one of " + ", ".join(parallel.detection_methods())
    ]
