"""The bundled default: 8x8 handwritten digits, small CNN, a few minutes on a laptop CPU.

    mvcl-pretrain --config=digits            # mv_dhel, V = 4
    mvcl-pretrain --config=digits:loss=mv_infonce,views=2

The data set ships with mvcl (scikit-learn's digits, 1,437 train / 360 test images) and is written
to ``config.dataset.data_dir`` on first use. Augmentations are milder than SimCLR's (crops keep at
least a third of an 8x8 image; no flips, which would turn digits into other glyphs). With
``multicrop=K`` the K small crops are 4x4 views of 10-30% of the image.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common

TRAIN_EXAMPLES = 1437  # the bundled train split (mvcl.data.digits)
ONLINE_EVAL_EPOCHS = 10  # epochs between online evaluations (config.eval.every_steps)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **common.common_args(views=4))
    config = common.base_config()
    config.dataset.name = "digits"
    config.dataset.fake_shape = (8, 8, 1)

    config.augment.crop_size = 8
    config.augment.min_scale = 0.3
    config.augment.jitter_strength = 0.5
    config.augment.p_jitter = 0.8
    config.augment.p_gray = 0.0
    config.augment.p_blur = 0.0
    config.augment.flip = False
    config.augment.multicrop.small_size = 4
    config.augment.multicrop.small_min_scale = 0.1
    config.augment.multicrop.small_max_scale = 0.3

    config.model.name = "small_cnn"
    config.model.kwargs = config_dict.ConfigDict({"width": 1.0})

    config.loss.temperature = 0.5
    config.optim.name = "sgd"
    config.optim.lr = 0.5
    config.optim.weight_decay = 1e-5
    config.optim.warmup_fraction = 0.05

    config.batch_size = 256
    config.num_epochs = 100
    config.log_every_steps = 5
    config.checkpoint_every_steps = 100
    config.eval.batch_size = 512
    config.eval.probe_batch_size = 128  # 11 minibatches of the 1,437 train images per epoch
    # Online evaluation every ONLINE_EVAL_EPOCHS epochs (50 steps at batch 256; follows
    # --config.batch_size): an epoch is only 5 steps, and one evaluation costs about as much as
    # a few of them (experiments/results/online_eval/README.md).
    config.eval.every_steps = ONLINE_EVAL_EPOCHS * (TRAIN_EXAMPLES // config.get_ref("batch_size"))
    return common.apply_args(config, args)
