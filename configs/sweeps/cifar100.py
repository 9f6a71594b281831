"""Reproduction sweep, CIFAR-100: the paper's setup, unchanged; the same as
``sweeps/paper:dataset=cifar100`` (``configs/sweeps/paper.py``, with the published targets).

    mvcl-sweep --config=sweeps/cifar100 \
        --workdir=/mnt/shared/sweeps/cifar100 --outdir=experiments/results/cifar100
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs.sweeps import paper


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return paper.sweep_for("cifar100", arg)
