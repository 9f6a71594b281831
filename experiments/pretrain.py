r"""Contrastive pretraining from a config file, then evaluation.

    python experiments/pretrain.py --config=configs/digits.py
    python experiments/pretrain.py --config=configs/digits.py:loss=mv_infonce,views=2 \
        --workdir=/tmp/digits --config.num_epochs=20

Any config field can be overridden with ``--config.<field>=<value>``. The default workdir is
``./workdirs/<config.name>``; rerunning the same command with the same workdir resumes from its
newest checkpoint. SIGTERM saves a checkpoint and exits with status 0.

Several processes (one per host): set ``MVCL_COORDINATOR=host:port``, ``MVCL_NUM_PROCESSES`` and
``MVCL_PROCESS_ID`` in each (see ``mvcl.parallel.initialize``).
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for configs/

from mvcl import train  # noqa: E402
from mvcl.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; default ./workdirs/<config.name>.")
flags.mark_flags_as_required(["config"])


def main(argv):
    cli.start(argv)
    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
    train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(main)
