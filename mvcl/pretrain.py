r"""Contrastive pretraining from a config file, then evaluation.

    mvcl-pretrain --config=digits
    mvcl-pretrain --config=digits:loss=mv_infonce,views=2 \
        --workdir=/tmp/digits --config.num_epochs=20

Any config field can be overridden with ``--config.<field>=<value>``. The default workdir is
``./workdirs/<config.name>``; rerunning the same command with the same workdir resumes from its
newest checkpoint. SIGTERM saves a checkpoint and exits with status 0.

``--summary=FILE`` also writes the finished run's summary (`mvcl.train.workdir.run_summary`:
the command, last step, wall time of this command, last training loss, evaluation results,
config and machine facts) as JSON; the committed results of single runs
(``experiments/results/*/result.json``) are written this way. A run stopped by a signal writes
none.

Several processes: launch them with ``mpirun``, ``srun`` or on every worker of a TPU pod slice
(JAX detects the cluster; recipes in ``experiments/launch/``), or set
``MVCL_COORDINATOR=host:port``, ``MVCL_NUM_PROCESSES`` and ``MVCL_PROCESS_ID`` in each (see
``mvcl.parallel.initialize``).
"""

import os
import sys
import time

import jax
from absl import flags

from mvcl import configs, train
from mvcl.train import cli
from mvcl.train.workdir import run_summary, write_json

_CONFIG = configs.define_flag(
    "config", None, "Config name[:args], e.g. digits:views=2 (mvcl.configs), or a .py file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; default ./workdirs/<config.name>.")
_SUMMARY = flags.DEFINE_string(
    "summary", None, "Also write the finished run's summary (JSON) to this file."
)
flags.mark_flags_as_required(["config"])


def main(argv):
    cli.start(argv)
    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
    start = time.perf_counter()
    out = train.train_and_evaluate(config, workdir)
    if _SUMMARY.value and not out["preempted"]:
        if jax.process_index() == 0:
            seconds = time.perf_counter() - start
            result = run_summary(config, workdir, out, seconds)
            command = " ".join(["mvcl-pretrain", *sys.argv[1:]])
            write_json(_SUMMARY.value, {"command": command, **result})


def run() -> None:
    """The console script ``mvcl-pretrain`` (also ``python -m mvcl.pretrain``)."""
    cli.show_in_help(_CONFIG, _WORKDIR, _SUMMARY)
    cli.run(main)


if __name__ == "__main__":
    run()
