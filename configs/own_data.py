"""Your own small data set, imported with ``mvcl-import``: defaults that fit tens of images.

    mvcl-import --source=path/to/photos --name=my_photos     # <class>/<image>, in ./data
    mvcl-pretrain --config=own_data:name=my_photos           # the run: my_photos_mv_dhel_v2
    mvcl-pretrain --config=own_data:name=my_photos,batch=64,epochs=300,size=64,views=4

Arguments (besides the common ones of ``configs/common.py``):

  name=NAME    ``config.dataset.name``: the name given to ``mvcl-import --name``. The run is
               named after it (``<name>_<loss>_v<views>``), also when it is set later with
               ``--config.dataset.name=NAME``.
  batch=B      ``config.batch_size``, images per batch (default 16, so that a set of 30 images,
               24 of them for training after ``mvcl-import``'s 20 % hold-out, fits; it must not
               exceed the training images, and must divide over the devices).
  epochs=E     ``config.num_epochs`` (default 100).
  size=S       images are resized (shorter side) and centre-cropped to S x S on the host, so sets
               of any image size work (default 32); the random crops are S x S too.

The model is the ``convnet`` of Fashion-MNIST (two stride-2 stages, 512 features at width 1),
the augmentations SimCLR's with crops of at least a fifth of the image, and the evaluation's kNN
uses 10 neighbours. Larger sets: raise ``batch`` (256 is the paper's) and lower ``epochs``.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(
        arg, **common.common_args(name="", batch=16, epochs=100, size=32, views=2)
    )
    config = common.base_config()
    config.dataset.name = args.name
    config.dataset.image_size = args.size
    config.dataset.fake_shape = (args.size, args.size, 3)

    config.augment.crop_size = args.size
    config.augment.min_scale = 0.2

    config.model.name = "convnet"
    config.model.kwargs = config_dict.ConfigDict({"width": 1.0})

    config.loss.temperature = 0.5
    config.optim.lr = 0.3
    config.optim.weight_decay = 1e-5
    config.optim.warmup_fraction = 0.05

    config.batch_size = args.batch
    config.num_epochs = args.epochs
    config.log_every_steps = 10
    config.checkpoint_every_steps = 500
    config.eval.batch_size = 64
    config.eval.probe_batch_size = 64
    config.eval.knn_k = 10
    config = common.apply_args(config, args)
    # The run is named after the data set, whichever way the name is given.
    suffix = config.name.removeprefix(config.dataset.name)
    config.name = config.dataset.get_ref("name") + suffix
    return config
