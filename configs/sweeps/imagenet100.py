"""Reproduction sweep, ImageNet-100: the paper's setup, unchanged; the same as
``sweeps/paper:dataset=imagenet100`` (``configs/sweeps/paper.py``, with the published targets).

    mvcl-sweep --config=sweeps/imagenet100 \
        --workdir=/mnt/shared/sweeps/imagenet100 --outdir=experiments/results/imagenet100
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs.sweeps import paper


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return paper.sweep_for("imagenet100", arg)
