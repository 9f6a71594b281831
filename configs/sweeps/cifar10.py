"""Reproduction sweep, CIFAR-10: the paper's setup, unchanged; the same as
``sweeps/paper:dataset=cifar10`` (``configs/sweeps/paper.py``, with the published targets).

    mvcl-sweep --config=sweeps/cifar10 \
        --workdir=/mnt/shared/sweeps/cifar10 --outdir=experiments/results/cifar10
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs.sweeps import paper


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return paper.sweep_for("cifar10", arg)
