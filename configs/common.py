"""What every pretraining config shares: the fields, their defaults, and big_vision-style arguments.

A config file is a tiny program::

    def get_config(arg=None):
        args = common.parse_arg(arg, loss="mv_dhel", views=2)
        config = common.base_config()
        config.dataset.name = "cifar10"
        ...
        return common.apply_args(config, args)

and is used as ``--config=cifar10:loss=mv_infonce,views=4`` (see `mvcl.configs`); any field can
then be overridden with ``--config.optim.lr=0.5`` (ml_collections ``config_flags``).

Arguments understood by every config (``apply_args``):

  loss=NAME       ``config.loss.name``, one of ``mvcl.losses.NAMES``.
  views=V         ``config.num_views``, views per image (>= 2; exactly 2 for two-view losses).
  backend=B       ``config.loss.backend``: "gather" or "ring" (the step runs inside shard_map).
  width=W         ``config.model.kwargs.width``: backbone channel multiplier (e.g. 0.0625 in tests).
  multicrop=K     ``config.augment.multicrop.num_small``: K small crops per image on top of the
                  ``views`` large ones (0, the default, is off); the loss sees views + K views.
  fake=True       random uint8 images of ``config.dataset.fake_shape`` instead of the data set
                  (``config.dataset.fake``); evaluation is then skipped. For tests and smoke runs.

Multi-crop (SwAV, Caron et al. 2020), ``config.augment.multicrop``: every image gives
``config.num_views`` large crops (``crop_size``, area fraction in ``[min_scale, 1]``) and
``num_small`` small crops (``small_size``, area fraction in ``[small_min_scale,
small_max_scale]``), all with the same colour augmentation; the model runs once per resolution
and the loss sees ``(N, num_views + num_small, D)``. SwAV's ImageNet recipe is 2 large crops of
scale (0.14, 1) at 224 and 6 small ones of scale (0.05, 0.14) at 96: ``views=2,multicrop=6`` with
``--config.augment.min_scale=0.14``. Two-view losses cannot take multi-crop.
"""

from __future__ import annotations

import os
from typing import Any

from ml_collections import config_dict

_TRUE = ("1", "true", "yes", "y")
_FALSE = ("0", "false", "no", "n")


def _cast(key: str, value: str, default: Any) -> Any:
    """Parses the string ``value`` of argument ``key`` as the type of ``default``."""
    if isinstance(default, bool):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"config argument {key}={value!r} must be a boolean (true/false)")
    if isinstance(default, (int, float)):
        try:
            return type(default)(value)
        except ValueError as e:
            raise ValueError(
                f"config argument {key}={value!r} must be {type(default).__name__}"
            ) from e
    return value


def _items(arg: str | None) -> list[str]:
    """The ``key=value`` items of ``"k1=v1,k2=v2"`` (None or "": none)."""
    return [item for item in (arg or "").split(",") if item]


def parse_arg(arg: str | None, **defaults: Any) -> config_dict.ConfigDict:
    """Parses ``"k1=v1,k2=v2"`` into a ConfigDict of ``defaults`` updated with typed values.

    Only the keys of ``defaults`` are allowed; each value is cast to the type of its default.
    """
    args = dict(defaults)
    for item in _items(arg):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"config argument {item!r} is not of the form key=value")
        if key not in defaults:
            raise ValueError(
                f"unknown config argument {key!r}; known arguments: {', '.join(sorted(defaults))}"
            )
        args[key] = _cast(key, value.strip(), defaults[key])
    return config_dict.ConfigDict(args)


def given_args(arg: str | None) -> set[str]:
    """The keys ``arg`` (``"k1=v1,k2=v2"``) sets: for defaults that depend on other arguments."""
    return {item.partition("=")[0].strip() for item in _items(arg)}


def default_data_dir() -> str:
    """``$TFDS_DATA_DIR`` if set, else ``./data`` (relative to the working directory)."""
    return os.environ.get("TFDS_DATA_DIR", "./data")


def base_config() -> config_dict.ConfigDict:
    """Every field of a pretraining config, with data-set-neutral defaults (SimCLR-like)."""
    config = config_dict.ConfigDict()
    config.name = "run"  # default workdir: ./workdirs/<name>
    config.seed = 0

    config.dataset = config_dict.ConfigDict()
    config.dataset.name = "digits"  # tfds name, or "digits" (bundled)
    config.dataset.data_dir = default_data_dir()
    config.dataset.train_split = "train"
    config.dataset.test_split = "test"  # evaluation: linear probe and kNN test accuracy
    # Host-side resize (shorter side) + centre crop, for data sets of varying image sizes.
    config.dataset.image_size = config_dict.placeholder(int)
    # Training only: longer side resized to this, padded to a square, valid extent sent along;
    # the random crops then cover the whole image (torchvision's RandomResizedCrop). Evaluation
    # keeps image_size's centre squares.
    config.dataset.whole_image_size = config_dict.placeholder(int)
    config.dataset.fake = False
    config.dataset.fake_shape = (32, 32, 3)  # (H, W, C) of fake images
    config.dataset.fake_num_examples = 64

    config.data = config_dict.ConfigDict()  # the host input pipeline (grain)
    # Worker processes that read, decode and resize batches: 0 = a background thread of the main
    # process (fastest for the small stored images of digits and CIFAR), -1 = one per CPU core.
    config.data.num_workers = 0
    config.data.prefetch = 2  # batches each worker keeps ready

    config.num_views = 2  # V views of every image, made on the device
    config.augment = config_dict.ConfigDict()
    config.augment.crop_size = 32
    config.augment.min_scale = 0.08
    config.augment.jitter_strength = 0.5
    config.augment.p_jitter = 0.8
    config.augment.p_gray = 0.2
    config.augment.p_blur = 0.0
    config.augment.flip = True
    config.augment.multicrop = config_dict.ConfigDict()
    config.augment.multicrop.num_small = 0  # small crops per image; 0: off
    # Side of the small crops: 3/7 of crop_size (SwAV's 96 of 224) unless set.
    config.augment.multicrop.small_size = config.augment.get_ref("crop_size") * 3 // 7
    config.augment.multicrop.small_min_scale = 0.05  # area fraction range of the small crops
    config.augment.multicrop.small_max_scale = 0.14

    config.model = config_dict.ConfigDict()
    config.model.name = "resnet18"
    config.model.proj_dim = 128
    config.model.proj_hidden_dim = config_dict.placeholder(int)  # None: feature dimension
    config.model.dtype = "float32"  # compute dtype: "float32" or "bfloat16"
    config.model.kwargs = config_dict.ConfigDict({"width": 1.0})  # backbone arguments
    # None: one shared backbone + head for every view. Else a list of per-group mappings
    # {views, name, input, encoder, kwargs, head, proj_dim, proj_hidden_dim}: one encoder and
    # projection head per group of views (mvcl.models.per_view.from_config); name/kwargs unused.
    config.model.per_view = None

    config.loss = config_dict.ConfigDict()
    config.loss.name = "mv_dhel"
    config.loss.temperature = 0.5  # not passed to mvcl.losses.TEMPERATURE_FREE losses
    config.loss.backend = "gather"  # "gather" or "ring"
    # Matmul precision of the loss: None is "highest" for float32 embeddings and the native
    # passes for bfloat16; "default", "high" or "highest" as given (mvcl.backends.precision).
    config.loss.precision = config_dict.placeholder(str)
    config.loss.kwargs = config_dict.ConfigDict()  # extra loss arguments

    config.optim = config_dict.ConfigDict()
    config.optim.name = "sgd"  # "sgd" or "lars"
    config.optim.lr = 1.0  # peak learning rate (not rescaled by the batch size)
    config.optim.momentum = 0.9
    config.optim.nesterov = False
    config.optim.weight_decay = 1e-6  # not on biases and BatchNorm parameters
    config.optim.warmup_fraction = 0.01  # linear warmup over this fraction of the steps
    config.optim.trust_coefficient = 0.001  # LARS only

    config.batch_size = 256  # unique images per global batch (each gives num_views views)
    config.num_epochs = 200
    config.num_steps = -1  # > 0 overrides num_epochs
    config.num_devices = -1  # devices of the mesh; -1 means all devices of all processes

    config.train = config_dict.ConfigDict()
    # Gradient caching (mvcl.train.grad_cache): images per device per encoder chunk, so the
    # encoder holds one chunk's activations whatever batch_size and num_views; None: off. Must
    # divide batch_size / devices. BatchNorm then uses each chunk's statistics.
    config.train.micro_batch = config_dict.placeholder(int)
    # The divergence guard (mvcl.train.guard): a step with a non-finite loss, gradient or state
    # is not applied; this many in a row stop the run (exit status 3), saving nothing more.
    config.train.max_bad_steps = 10
    # Steps the host may dispatch ahead of the last completed one: signals, the progress line,
    # the guard and save failures act within this many steps of the devices.
    config.train.steps_ahead = 2

    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3  # >= 2, so a corrupted latest one can fall back
    config.progress_bar = True

    config.eval = config_dict.ConfigDict()
    config.eval.enabled = True  # evaluate at the end of pretraining (False: no online one either)
    config.eval.batch_size = 256  # images per global forward pass when extracting features
    # Train images whose features the probe and kNN use: None = all, an int = a fixed subset.
    config.eval.train_examples = config_dict.placeholder(int)
    config.eval.feature_dtype = "float16"  # host feature bank: "float16" or "float32"
    config.eval.knn_k = 20  # neighbours of the weighted kNN classifier (cosine similarity)
    config.eval.knn_temperature = 0.07  # vote weights exp(similarity / T), as InstDisc
    config.eval.knn_chunk_size = 8192  # train features sent to the devices at a time
    config.eval.probe_weight_decay = 1e-4  # linear probe: L2 penalty on standardised features
    config.eval.probe_epochs = 100  # linear probe: minibatch Adam, cosine-decayed learning rate
    config.eval.probe_batch_size = 256
    config.eval.probe_lr = 0.01
    config.eval.pixel_baseline = True  # also probe raw pixels (off for large images)
    config.eval.geometry_examples = 512  # test images whose views give the geometry metrics
    # Online evaluation during training (mvcl.train.online_eval), every every_steps steps; 0: off.
    config.eval.every_steps = 0
    config.eval.online_train_examples = 1000  # fixed random subset of the train split (kNN bank)
    config.eval.online_test_examples = 500  # fixed random subset of the test split (queries, views)
    # Collapse alarm of the online evaluation: the projections' effective rank below
    # collapse_rank_fraction x their dimension D, or the mean per-dimension standard deviation of
    # the L2-normalised projections below collapse_std / sqrt(D) (uniform on the sphere: 1/sqrt(D)).
    config.eval.collapse_check = True
    config.eval.collapse_rank_fraction = 0.02
    config.eval.collapse_std = 0.01
    return config


def common_args(**defaults: Any) -> dict[str, Any]:
    """Defaults of the arguments every config understands, updated with ``defaults``."""
    args = {
        "loss": "mv_dhel",
        "views": 2,
        "backend": "gather",
        "width": 1.0,
        "fake": False,
        "multicrop": 0,
    }
    args.update(defaults)
    return args


def apply_args(config: config_dict.ConfigDict, args: config_dict.ConfigDict):
    """Applies the common arguments (see the module docstring) to ``config`` and names the run."""
    config.loss.name = args.loss
    config.num_views = args.views
    config.loss.backend = args.backend
    config.model.kwargs.width = args.width
    config.augment.multicrop.num_small = args.multicrop
    if args.fake:
        config.dataset.fake = True
        config.eval.enabled = False
    fake = "_fake" if args.fake else ""
    multicrop = f"_mc{args.multicrop}" if args.multicrop else ""
    config.name = f"{config.dataset.name}{fake}_{args.loss}_v{args.views}{multicrop}"
    return config
