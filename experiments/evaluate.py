r"""Evaluates the newest checkpoint of a pretraining run: linear probe, kNN, geometry.

    python experiments/evaluate.py --workdir=workdirs/digits_mv_dhel_v4
    python experiments/evaluate.py --workdir=... --config=configs/digits.py \
        --config.eval.knn_k=50

Without ``--config`` the run's own config (``<workdir>/config.json``) is used. Results are
printed and appended to ``<workdir>/metrics.jsonl`` and the TensorBoard events as ``eval/*``.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for configs/

from mvcl import train  # noqa: E402
from mvcl.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file; default: the config saved in the workdir."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv)
    train.evaluate_workdir(_WORKDIR.value, _CONFIG.value)


if __name__ == "__main__":
    cli.run(main)
