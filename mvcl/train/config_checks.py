"""Config checks: every bad field of a pretraining config fails before any work.

`validate_config` turns every bad field into a ``ConfigError`` (a ``ValueError``) naming it
(``config.loss.name``, ``config.num_views``, ``config.batch_size``, ...); a missing data set
fails as ``config.dataset.name`` when the sources are opened (`mvcl.train.sources`), still
before the first step. `num_train_steps` is the run's length.
"""

from __future__ import annotations

import jax
from ml_collections import config_dict

from mvcl import backends, losses, models
from mvcl.train import grad_cache, optim
from mvcl.train.errors import ConfigError

LOSS_BACKENDS = ("gather", "ring")  # the backends that run inside shard_map over many devices
DTYPES = ("float32", "bfloat16")


def require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}: {message}")


def validate_config(
    config: config_dict.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int | None = None,
) -> None:
    """Raises ``ConfigError("config.<field>: ...")`` (a ``ValueError``) for the first invalid field.

    ``device_count`` and ``process_count`` default to ``jax.device_count()`` and
    ``jax.process_count()``. The data set is checked when it is opened
    (`mvcl.train.sources.open_sources`).
    """
    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    loss, views = config.loss.name, config.num_views
    require(
        loss in losses.NAMES,
        "loss.name",
        f"unknown loss {loss!r}; known: {', '.join(losses.NAMES)}",
    )
    require(views >= 2, "num_views", f"contrastive learning needs >= 2 views, got {views}")
    require(
        loss not in losses.TWO_VIEW or views == 2,
        "num_views",
        f"{loss!r} is a two-view loss and needs num_views = 2, got {views}",
    )
    _validate_multicrop(config)
    require(
        config.loss.backend in LOSS_BACKENDS,
        "loss.backend",
        f"must be one of {LOSS_BACKENDS} (of {backends.NAMES}, the ones for many devices), "
        f"got {config.loss.backend!r}",
    )
    require(
        loss in losses.TEMPERATURE_FREE or config.loss.temperature > 0,
        "loss.temperature",
        f"must be > 0, got {config.loss.temperature}",
    )
    require(
        config.model.name in models.BACKBONES,
        "model.name",
        f"unknown model {config.model.name!r}; known: {', '.join(models.BACKBONES)}",
    )
    require(
        config.model.dtype in DTYPES,
        "model.dtype",
        f"must be one of {DTYPES}, got {config.model.dtype!r}",
    )
    require(
        config.optim.name in optim.OPTIMIZERS,
        "optim.name",
        f"must be one of {optim.OPTIMIZERS}, got {config.optim.name!r}",
    )
    require(config.optim.lr > 0, "optim.lr", f"must be > 0, got {config.optim.lr}")
    require(
        0 <= config.optim.warmup_fraction < 1,
        "optim.warmup_fraction",
        f"must be in [0, 1), got {config.optim.warmup_fraction}",
    )
    require(
        config.num_devices == -1 or 1 <= config.num_devices <= device_count,
        "num_devices",
        f"must be -1 (all) or in [1, {device_count}], got {config.num_devices}",
    )
    require(
        process_count == 1 or config.num_devices in (-1, device_count),
        "num_devices",
        "a multi-process run uses every device (-1)",
    )
    devices = device_count if config.num_devices == -1 else config.num_devices
    require(
        config.batch_size >= 2 and config.batch_size % devices == 0,
        "batch_size",
        f"{config.batch_size} images do not divide over {devices} devices",
    )
    grad_cache.check_micro_batch(grad_cache.micro_batch_of(config), config.batch_size // devices)
    require(
        config.num_steps > 0 or config.num_epochs > 0,
        "num_epochs",
        f"set num_epochs > 0 or num_steps > 0, got {config.num_epochs} and {config.num_steps}",
    )
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        require(config[field] >= 1, field, f"must be >= 1, got {config[field]}")


def _validate_multicrop(config: config_dict.ConfigDict) -> None:
    """The checks of ``config.augment.multicrop``; its other fields only matter if it is on."""
    multicrop, loss = config.augment.multicrop, config.loss.name
    field = "augment.multicrop."
    require(
        multicrop.num_small >= 0,
        field + "num_small",
        f"must be >= 0 (0: no multi-crop), got {multicrop.num_small}",
    )
    if not multicrop.num_small:
        return
    require(
        loss not in losses.TWO_VIEW,
        field + "num_small",
        f"{loss!r} is a two-view loss: multi-crop would give it num_views + num_small = "
        f"{config.num_views + multicrop.num_small} views",
    )
    require(
        1 <= multicrop.small_size <= config.augment.crop_size,
        field + "small_size",
        f"must be in [1, crop_size = {config.augment.crop_size}], got {multicrop.small_size}",
    )
    require(
        0 < multicrop.small_min_scale <= 1,
        field + "small_min_scale",
        f"must be in (0, 1], got {multicrop.small_min_scale}",
    )
    require(
        multicrop.small_min_scale <= multicrop.small_max_scale <= 1,
        field + "small_max_scale",
        f"must be in [small_min_scale, 1] = [{multicrop.small_min_scale}, 1], "
        f"got {multicrop.small_max_scale}",
    )


def num_train_steps(config: config_dict.ConfigDict, steps_per_epoch: int) -> int:
    """``config.num_steps`` if set (> 0), else ``config.num_epochs`` epochs."""
    return config.num_steps if config.num_steps > 0 else config.num_epochs * steps_per_epoch
