"""Helpers of the whole-run tests (test_train.py, test_run_safety.py): tiny configs, programs in
fresh interpreters on simulated devices, and readers of a run's logs and checkpoints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from etils import epath
from tensorboard.compat.proto import event_pb2

from mvcl import configs, train
from mvcl.train import writers

REPO = Path(__file__).resolve().parents[1]

# The commands, run as their console scripts run them (`console_script`); train_worker.py runs
# them the same way, after patching what it interrupts.
PRETRAIN = "mvcl-pretrain"
EVALUATE = "mvcl-evaluate"
SWEEP = "mvcl-sweep"
COMMANDS = {
    PRETRAIN: "mvcl.pretrain",
    EVALUATE: "mvcl.evaluate",
    SWEEP: "mvcl.sweep",
    "mvcl-import": "mvcl.import_data",
}
WORKER = str(REPO / "tests" / "train_worker.py")
WIDTH = {"small_cnn": 0.125, "convnet": 0.125, "resnet18": 1 / 16, "resnet50": 1 / 32}
# A tiny run on random 8x8 images: 16 per batch, 4 views, 20 steps, every step logged. The small
# learning rate keeps float rounding (which differs with the device count) from being amplified
# by the training dynamics on noise images beyond the 1e-4 the runs are compared to.
TINY_RUN = [
    "--config=digits:fake=True,width=0.125",
    "--config.dataset.fake_num_examples=64",
    "--config.batch_size=16",
    "--config.optim.lr=0.05",
    "--config.model.proj_dim=16",
    "--config.num_steps=20",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=1000",
    "--config.progress_bar=False",
]


def console_script(command: str) -> str:
    """Python code that runs ``command`` (``"mvcl-pretrain"``, ...) as its console script does:
    the command's module is imported (not run as ``__main__``), ``sys.argv[0]`` is its name."""
    return f"import sys; sys.argv[0] = {command!r}; from {COMMANDS[command]} import run; run()"


def get_config(name: str, arg: str = ""):
    return configs.load(name, arg)


def tiny_config(name: str = "digits", **overrides):
    """A config of ``configs/<name>.py`` on two fake images, one step, narrow model.

    ``overrides``: ``field=value``, nested fields as ``section__field``.
    """
    config = get_config(name, "fake=True")
    config.model.kwargs.width = WIDTH[config.model.name]
    config.model.proj_dim = 16
    config.dataset.fake_num_examples = 2
    config.batch_size = 2
    config.num_steps = 1
    config.progress_bar = False
    for key, value in overrides.items():
        target = config
        *path, field = key.split("__")
        for part in path:
            target = target[part]
        target[field] = value
    return config


def _path(workdir) -> epath.Path:
    """``workdir`` (a local path or a bucket's, gs://) as an ``epath.Path``."""
    return epath.Path(os.fspath(workdir))


def read_metrics(workdir) -> list[dict]:
    text = (_path(workdir) / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def train_losses(workdir) -> list[float]:
    return [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m]


def logged_steps(workdir, name: str = "train/loss") -> list[int]:
    """The steps at which ``metrics.jsonl`` holds ``name``, in file order."""
    return [m["step"] for m in read_metrics(workdir) if name in m]


def tensorboard_steps(workdir, tag: str = "train/loss") -> list[int]:
    """The steps of every ``tag`` value in the run's TensorBoard files, oldest file first."""
    steps = []
    for path in sorted(_path(workdir).glob("events.out.tfevents.*")):
        for raw in writers._read_events(path):
            event = event_pb2.Event.FromString(raw)
            steps += [int(event.step) for v in event.summary.value if v.tag == tag]
    return steps


def checkpoint_steps(workdir) -> list[int]:
    checkpointer = train.Checkpointer(_path(workdir) / "checkpoints", max_to_keep=3, read_only=True)
    steps = checkpointer.all_steps()
    checkpointer.close()
    return steps


def saved_state(workdir, step: int) -> dict:
    """The train state saved at ``step``, as arrays on this process's first device (whatever
    devices wrote it)."""
    path = _path(workdir) / "checkpoints" / str(step) / "state"
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        tree = getattr(metadata, "item_metadata", metadata)
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            getattr(tree, "tree", tree),
        )
        return checkpointer.restore(path, target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    args,
    *,
    devices: int = 1,
    env: dict | None = None,
    script: str = PRETRAIN,
    worker: list[str] | None = None,
) -> subprocess.Popen:
    """Starts the command ``script`` (`COMMANDS`) with ``args`` in a fresh interpreter on
    ``devices`` simulated CPU devices.

    ``worker``: the arguments of ``tests/train_worker.py`` (``[ACTION, STEP, ...]``) to run the
    command under, interrupted on cue.
    """
    full_env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices), **(env or {}))
    command = [WORKER, *worker, "--", script] if worker else ["-c", console_script(script)]
    return subprocess.Popen(
        [sys.executable, *command, *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def xla_flags(devices: int, flags: str | None = None) -> str:
    """``XLA_FLAGS`` for a program on ``devices`` simulated CPU devices: ``flags`` (by default
    this process's, e.g. conftest's compile setting) with their device count replaced."""
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    kept = [f for f in flags.split() if "xla_force_host_platform_device_count" not in f]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])


def processes(count: int) -> list[dict]:
    """The environments of ``count`` processes joined by ``jax.distributed`` on 127.0.0.1."""
    port = free_port()
    return [
        {
            "MVCL_COORDINATOR": f"127.0.0.1:{port}",
            "MVCL_NUM_PROCESSES": str(count),
            "MVCL_PROCESS_ID": str(i),
        }
        for i in range(count)
    ]


def finish(proc: subprocess.Popen, timeout: float = 600, status: int = 0) -> tuple[str, str]:
    """Waits for ``proc``; asserts its exit status; returns its (stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == status, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    return out, err
