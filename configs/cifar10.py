"""CIFAR-10, the paper's setup (the authors' ``cifar_train_epochs200_bs256_05.yaml``).

ResNet-18 with the CIFAR stem, 256 images per batch, 200 epochs, SGD (momentum 0.9, weight decay
1e-6) at lr 1.0 with 1% linear warmup then cosine to zero, τ = 0.5, colour-jitter strength 0.5,
crops of 32x32 with scale in [0.08, 1].

    mvcl-pretrain --config=cifar10:loss=mv_dhel,views=4

The data set must be prepared as ArrayRecord in ``config.dataset.data_dir`` (see mvcl.data).
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common


def cifar_config(dataset: str, arg: str | None) -> config_dict.ConfigDict:
    """The CIFAR-10/100 setup for tfds data set ``dataset``."""
    args = common.parse_arg(arg, **common.common_args())
    config = common.base_config()
    config.dataset.name = dataset
    config.dataset.fake_shape = (32, 32, 3)

    config.augment.crop_size = 32
    config.augment.min_scale = 0.08
    config.augment.jitter_strength = 0.5
    config.augment.p_blur = 0.0

    config.model.name = "resnet18"
    config.model.kwargs = config_dict.ConfigDict({"width": 1.0, "stem": "cifar"})

    config.loss.temperature = 0.5
    config.optim.name = "sgd"
    config.optim.lr = 1.0
    config.optim.warmup_fraction = 0.01

    config.batch_size = 256
    config.num_epochs = 200
    config.log_every_steps = 39
    config.checkpoint_every_steps = 3900  # ~20 epochs
    return common.apply_args(config, args)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return cifar_config("cifar10", arg)
