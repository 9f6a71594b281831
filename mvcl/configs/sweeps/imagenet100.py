"""Reproduction sweep, ImageNet-100: the paper's setup, unchanged.

``mvcl/configs/imagenet100.py``: ResNet-50, batch 256, 200 epochs.

The distinct losses at V = 2 and every multi-view loss at V = 4, 11 runs (see
``mvcl/configs/sweeps/common.py``, ``paper_sweep``)::

    mvcl-sweep --config=sweeps/imagenet100 \
        --workdir=/mnt/shared/sweeps/imagenet100 --outdir=experiments/results/imagenet100

Published linear-probe accuracy (%): MV-DHEL 73.3 (V = 2) and 77.2 (V = 4); the best
baseline 72.2 and 74.4.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common
from mvcl.configs.sweeps import common as sweeps


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **sweeps.sweep_args())
    config = sweeps.paper_sweep(
        "imagenet100",
        "imagenet100",
        epochs=200,
        mv_dhel=(73.3, 77.2),
        best_baseline=(72.2, 74.4),
    )
    return sweeps.apply_args(config, args)
