"""Reproduction sweep, CIFAR-100: the paper's setup, unchanged.

``mvcl/configs/cifar100.py``: ResNet-18, batch 256, 200 epochs.

The distinct losses at V = 2 and every multi-view loss at V = 4, 11 runs (see
``mvcl/configs/sweeps/common.py``, ``paper_sweep``)::

    mvcl-sweep --config=sweeps/cifar100 \
        --workdir=/mnt/shared/sweeps/cifar100 --outdir=experiments/results/cifar100

Published linear-probe accuracy (%): MV-DHEL 59.4 (V = 2) and 62.7 (V = 4); the best
baseline 58.1 and 61.1.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common
from mvcl.configs.sweeps import common as sweeps


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **sweeps.sweep_args())
    config = sweeps.paper_sweep(
        "cifar100",
        "cifar100",
        epochs=200,
        mv_dhel=(59.4, 62.7),
        best_baseline=(58.1, 61.1),
    )
    return sweeps.apply_args(config, args)
