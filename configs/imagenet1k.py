"""ImageNet-1K, the paper's setup (the authors' ``imagenet1k_train_epochs100_bs256_01.yaml``).

As ImageNet-100 (``configs/imagenet100.py``) with lr 0.3 and τ = 0.1, on tfds ``imagenet2012``.
The authors' file is named for 100 epochs (its ``iters`` field would be ~200 epochs at batch 256);
100 epochs is used here.

    mvcl-pretrain --config=imagenet1k:loss=mv_dhel,views=4
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import imagenet100


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    config = imagenet100.imagenet_config("imagenet2012", arg)
    config.loss.temperature = 0.1
    config.optim.lr = 0.3
    config.num_epochs = 100
    return config
