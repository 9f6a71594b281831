"""CIFAR-100, the paper's setup: as CIFAR-10 (``configs/cifar10.py``) on ``cifar100``.

mvcl-pretrain --config=cifar100:loss=mv_dhel,views=4
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import cifar10


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return cifar10.cifar_config("cifar100", arg)
