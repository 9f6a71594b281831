"""Runs a command (``mvcl-pretrain``, ``mvcl-evaluate``, ``mvcl-sweep``) in this process, as its
console script does, and interrupts it on cue.

``python tests/train_worker.py ACTION STEP [CHECKPOINT_STEP] -- COMMAND <command arguments>``

The cue is the training loop logging ``train/*`` at step ``STEP`` (every run here logs every
step), or for ``term-eval`` the start of an evaluation. ACTION:

  kill       wait until the checkpoint of step ``CHECKPOINT_STEP`` is complete on disk (orbax
             renames its temporary directory when done; in a bucket, gs://, it writes a commit
             marker), then SIGKILL this process: no handler runs and nothing is cleaned up, as
             in a crash or an out-of-memory kill;
  term, int  send this process SIGTERM / SIGINT once (as a scheduler or Ctrl-C would);
  int2       send SIGINT twice in a row (Ctrl-C pressed again);
  term-eval  send SIGTERM when the evaluation starts (``mvcl.evaluation.evaluate``);
  pause      wait until the file ``MVCL_TEST_RESUME`` exists (at most ``MVCL_TEST_PAUSE``
             seconds, default 60), then go on;
  fill       wait until the checkpoint of step ``CHECKPOINT_STEP`` is complete, then fill the
             file system of the workdir (a file ``filler`` beside it) but for
             ``MVCL_TEST_FILL_LEAVE`` bytes (default 0), as a disk that runs full.

With ``MVCL_TEST_SIGNAL_PROCESS=i`` set, only the process with ``MVCL_PROCESS_ID=i`` of a
multi-process run acts; the others run undisturbed.
"""

import importlib
import os
import signal
import sys
import time

action, step = sys.argv[1], int(sys.argv[2])
rest = sys.argv[3:]
checkpoint_step = int(rest.pop(0)) if action in ("kill", "fill") else None
assert rest[0] == "--", sys.argv
script, script_args = rest[1], rest[2:]

from run_helpers import COMMANDS  # noqa: E402

from mvcl import evaluation  # noqa: E402
from mvcl.train import writers  # noqa: E402

target = os.environ.get("MVCL_TEST_SIGNAL_PROCESS")
acts = target is None or target == os.environ.get("MVCL_PROCESS_ID", "0")


def wait_for_checkpoint() -> str:
    """Waits for the checkpoint of ``checkpoint_step`` (complete as orbax sees it, locally or in
    a bucket); returns the workdir."""
    import orbax.checkpoint as ocp
    from etils import epath

    workdir = next(a.split("=", 1)[1] for a in script_args if a.startswith("--workdir="))
    checkpoints = epath.Path(workdir) / "checkpoints"
    deadline = time.time() + 120
    while checkpoint_step not in ocp.path.step.checkpoint_steps(checkpoints):
        assert time.time() < deadline, f"no checkpoint {checkpoint_step} in {checkpoints}"
        time.sleep(0.05)
    return workdir


def fill_disk(workdir: str) -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(workdir)), "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    os.close(fd)
    leave = int(os.environ.get("MVCL_TEST_FILL_LEAVE", "0"))
    os.truncate(path, max(0, os.path.getsize(path) - leave))


def interrupt() -> None:
    if action == "kill":
        wait_for_checkpoint()
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "pause":
        deadline = time.monotonic() + float(os.environ.get("MVCL_TEST_PAUSE", "60"))
        resume = os.environ.get("MVCL_TEST_RESUME", "")
        while not os.path.exists(resume) and time.monotonic() < deadline:
            time.sleep(0.05)
    elif action == "fill":
        fill_disk(wait_for_checkpoint())
    elif action in ("term", "term-eval"):
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "int":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "int2":
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    else:
        raise ValueError(f"unknown action {action!r}")


write_scalars = writers.MetricWriter.write_scalars


def write_scalars_and_interrupt(self, at_step, scalars):
    write_scalars(self, at_step, scalars)
    if acts and action != "term-eval" and at_step == step and "train/loss" in scalars:
        interrupt()


run_evaluation = evaluation.evaluate


def evaluate_and_interrupt(*args, **kwargs):
    if acts and action == "term-eval":
        interrupt()
    return run_evaluation(*args, **kwargs)


writers.MetricWriter.write_scalars = write_scalars_and_interrupt
evaluation.evaluate = evaluate_and_interrupt
sys.argv = [script, *script_args]
importlib.import_module(COMMANDS[script]).run()
