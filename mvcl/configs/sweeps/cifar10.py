"""Reproduction sweep, CIFAR-10: the paper's setup, unchanged.

``mvcl/configs/cifar10.py``: ResNet-18, batch 256, 200 epochs.

The distinct losses at V = 2 and every multi-view loss at V = 4, 11 runs (see
``mvcl/configs/sweeps/common.py``, ``paper_sweep``)::

    mvcl-sweep --config=sweeps/cifar10 \
        --workdir=/mnt/shared/sweeps/cifar10 --outdir=experiments/results/cifar10

Published linear-probe accuracy (%): MV-DHEL 87.4 (V = 2) and 89.5 (V = 4); the best
baseline 86.0 and 88.7.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common
from mvcl.configs.sweeps import common as sweeps


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **sweeps.sweep_args())
    config = sweeps.paper_sweep(
        "cifar10",
        "cifar10",
        epochs=200,
        mv_dhel=(87.4, 89.5),
        best_baseline=(86.0, 88.7),
    )
    return sweeps.apply_args(config, args)
