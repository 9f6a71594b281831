"""Reproduction sweep, ImageNet-1K: the paper's setup, unchanged; the same as
``sweeps/paper:dataset=imagenet1k`` (``configs/sweeps/paper.py``, with the published targets).

    mvcl-sweep --config=sweeps/imagenet1k \
        --workdir=/mnt/shared/sweeps/imagenet1k --outdir=experiments/results/imagenet1k
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs.sweeps import paper


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return paper.sweep_for("imagenet1k", arg)
