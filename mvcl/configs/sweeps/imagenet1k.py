"""Reproduction sweep, ImageNet-1K: the paper's setup, unchanged.

``mvcl/configs/imagenet1k.py``: ResNet-50, batch 256, 100 epochs, τ = 0.1.

The distinct losses at V = 2 and every multi-view loss at V = 4, 11 runs (see
``mvcl/configs/sweeps/common.py``, ``paper_sweep``)::

    mvcl-sweep --config=sweeps/imagenet1k \
        --workdir=/mnt/shared/sweeps/imagenet1k --outdir=experiments/results/imagenet1k

Published linear-probe accuracy (%): MV-DHEL 61.2 (V = 2) and 62.6 (V = 4); the best
baseline 60.0 and 62.4.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common
from mvcl.configs.sweeps import common as sweeps


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **sweeps.sweep_args())
    config = sweeps.paper_sweep(
        "imagenet1k",
        "imagenet1k",
        epochs=100,
        mv_dhel=(61.2, 62.6),
        best_baseline=(60.0, 62.4),
    )
    return sweeps.apply_args(config, args)
