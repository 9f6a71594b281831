"""ImageNet-100, the paper's setup (the authors' ``imagenet-100_train_epochs200_bs256_05.yaml``).

ResNet-50 (ImageNet stem), 256 images per batch, 200 epochs, SGD (momentum 0.9, weight decay
1e-6) at lr 1.4 with 10% linear warmup then cosine to zero, τ = 0.5, colour-jitter strength 1.0,
Gaussian blur with probability 0.5, 224x224 crops with scale in [0.08, 1].

    mvcl-pretrain --config=imagenet100:loss=mv_dhel,views=4

``config.dataset.name`` is "imagenet100": a tfds data set of the 100 ImageNet classes of CMC
(Tian et al. 2019), prepared as ArrayRecord in ``config.dataset.data_dir``; point it elsewhere with
``--config.dataset.name=...``. For training the host resizes every image whole so that its longer
side is 320 and pads it to 320 x 320 (the valid extent travels with it); the device draws the
random crops over the whole image, as torchvision's RandomResizedCrop. Evaluation images are
resized (shorter side) and centre-cropped to 224 on the host.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common


def imagenet_config(dataset: str, arg: str | None) -> config_dict.ConfigDict:
    """The ResNet-50 ImageNet setup shared by ImageNet-100 and ImageNet-1K."""
    args = common.parse_arg(arg, **common.common_args())
    config = common.base_config()
    config.dataset.name = dataset
    config.dataset.image_size = 224  # evaluation: shorter side 224, centre square
    config.dataset.whole_image_size = 320  # training: crops over the whole image (README)
    config.data.num_workers = -1  # decoding JPEGs needs every host core
    config.dataset.test_split = "validation"
    config.dataset.fake_shape = (224, 224, 3)

    config.augment.crop_size = 224
    config.augment.min_scale = 0.08
    config.augment.jitter_strength = 1.0
    config.augment.p_blur = 0.5

    config.model.name = "resnet50"
    config.model.kwargs = config_dict.ConfigDict({"width": 1.0, "stem": "imagenet"})

    config.optim.name = "sgd"
    config.optim.warmup_fraction = 0.1
    config.batch_size = 256
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval.pixel_baseline = False  # 150,528 raw pixels per image: not a useful baseline
    return common.apply_args(config, args)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    config = imagenet_config("imagenet100", arg)
    config.loss.temperature = 0.5
    config.optim.lr = 1.4
    config.num_epochs = 200
    return config
