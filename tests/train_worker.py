"""Runs `mvcl.pretrain` in this process and crashes it with SIGKILL at a chosen step.

``python tests/train_worker.py KILL_STEP CHECKPOINT_STEP -- <mvcl-pretrain arguments>``

Before the input pipeline hands out the batch of step ``KILL_STEP + 1`` (after ``KILL_STEP``
steps), the worker waits until the checkpoint of step ``CHECKPOINT_STEP`` is complete on disk
(orbax renames its temporary directory when done), then sends itself SIGKILL: no handler runs and
nothing is cleaned up, as in a crash or an out-of-memory kill. The steps after the checkpoint are
lost and a rerun has to redo them.
"""

import os
import runpy
import signal
import sys
import time

from mvcl import data

kill_step, checkpoint_step = int(sys.argv[1]), int(sys.argv[2])
assert sys.argv[3] == "--", sys.argv
pretrain_args = sys.argv[4:]

workdir = next(a.split("=", 1)[1] for a in pretrain_args if a.startswith("--workdir="))
checkpoint = os.path.join(workdir, "checkpoints", str(checkpoint_step))
next_batch = data.DevicePrefetcher.__next__  # what the loop takes; the host reads ahead of it


def next_batch_or_crash(self):
    if self.get_state()["step"] == kill_step:
        deadline = time.time() + 120
        while not os.path.isdir(checkpoint):
            assert time.time() < deadline, f"no checkpoint at {checkpoint}"
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    return next_batch(self)


data.DevicePrefetcher.__next__ = next_batch_or_crash
sys.argv = ["mvcl-pretrain", *pretrain_args]
runpy.run_module("mvcl.pretrain", run_name="__main__", alter_sys=True)
