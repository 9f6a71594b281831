"""Config checks: every bad field of a pretraining config fails before any work.

`validate_config` turns every bad field into a ``ConfigError`` (a ``ValueError``) naming it
(``config.loss.name``, ``config.num_views``, ``config.batch_size``, ...); a missing data set
fails as ``config.dataset.name`` when the sources are opened (`mvcl.train.inputs`), still
before the first step. `num_train_steps` is the run's length.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from ml_collections import config_dict

from mvcl import backends, losses, models
from mvcl.train import grad_cache, storage
from mvcl.train.errors import ConfigError
from mvcl.train.state import OPTIMIZERS

LOSS_BACKENDS = ("gather", "ring")  # the backends that run inside shard_map over many devices
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric config field may take: ``lo``..``hi`` (``None``: unbounded; ``open``
    excludes that end), integers only if ``integer``; ``special`` values (e.g. ``-1``, ``None``)
    allowed besides, each with what it means."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = True
    lo_open: bool = False
    hi_open: bool = False
    special: tuple[tuple[Any, str], ...] = ()

    def holds(self, value: Any) -> bool:
        if any(value is v or (v is not None and value == v) for v, _ in self.special):
            return not isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            text = f"{kind} in {left}{self.lo:g}, {self.hi:g}{right}"
        elif self.lo is not None:
            text = f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            text = f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = kind
        specials = [f"{'None' if v is None else v} ({meaning})" for v, meaning in self.special]
        return " or ".join([*specials, text])


def _count(lo: int = 1, **kw: Any) -> Range:
    return Range(lo=lo, **kw)


def _fraction(lo_open: bool = False, hi_open: bool = False) -> Range:
    return Range(0, 1, integer=False, lo_open=lo_open, hi_open=hi_open)


_UNSET = ((None, "unset"),)
_POSITIVE = Range(0, integer=False, lo_open=True)
_NON_NEGATIVE = Range(0, integer=False)

# Every numeric field of the common config (`mvcl.configs.common.base_config`) and its range;
# a field absent from a config (one saved by an older mvcl) is not checked. Fields whose range
# depends on other fields (num_devices, batch_size's divisibility, the multi-crop sizes) are
# checked again below with those; train.micro_batch only there, with the images per device
# (`mvcl.train.grad_cache.check_micro_batch`).
RANGES: dict[str, Range] = {
    "seed": Range(),
    "dataset.image_size": _count(special=_UNSET),
    "dataset.whole_image_size": _count(special=_UNSET),
    "dataset.fake_num_examples": _count(2),
    "data.num_workers": _count(0, special=((-1, "one per CPU core"),)),
    "data.prefetch": _count(1),
    "num_views": _count(2),
    "augment.crop_size": _count(1),
    "augment.min_scale": _fraction(lo_open=True),
    "augment.jitter_strength": _NON_NEGATIVE,
    "augment.p_jitter": _fraction(),
    "augment.p_gray": _fraction(),
    "augment.p_blur": _fraction(),
    "augment.multicrop.num_small": _count(0),
    "augment.multicrop.small_size": _count(1),
    "augment.multicrop.small_min_scale": _fraction(lo_open=True),
    "augment.multicrop.small_max_scale": _fraction(lo_open=True),
    "model.proj_dim": _count(1),
    "model.proj_hidden_dim": _count(1, special=_UNSET),
    "model.kwargs.width": _POSITIVE,
    "loss.temperature": _POSITIVE,  # (not for mvcl.losses.TEMPERATURE_FREE losses)
    "optim.lr": _POSITIVE,
    "optim.momentum": _fraction(),
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.warmup_fraction": _fraction(hi_open=True),
    "optim.trust_coefficient": _POSITIVE,
    "batch_size": _count(2),
    "num_epochs": _count(1),
    "num_steps": _count(1, special=((-1, "unset: num_epochs sets the length"),)),
    "num_devices": _count(1, special=((-1, "all devices"),)),
    "train.max_bad_steps": _count(1),
    "train.steps_ahead": _count(1),
    "log_every_steps": _count(1),
    "checkpoint_every_steps": _count(1),
    "keep_checkpoints": _count(1),
    "eval.batch_size": _count(1),
    "eval.train_examples": _count(1, special=((None, "all"),)),
    "eval.knn_k": _count(1),
    "eval.knn_temperature": _POSITIVE,
    "eval.knn_chunk_size": _count(1),
    "eval.probe_weight_decay": _NON_NEGATIVE,
    "eval.probe_epochs": _count(1),
    "eval.probe_batch_size": _count(1),
    "eval.probe_lr": _POSITIVE,
    "eval.geometry_examples": _count(2),
    "eval.every_steps": _count(1, special=((0, "off"),)),
    "eval.online_train_examples": _count(1),
    "eval.online_test_examples": _count(1),
    "eval.collapse_rank_fraction": Range(0, 1, integer=False),  # of D; 0: off
    "eval.collapse_std": Range(0, 1, integer=False),  # of 1/sqrt(D); 0: off
}


def _lookup(config: config_dict.ConfigDict, field: str) -> tuple[bool, Any]:
    node: Any = config
    for part in field.split("."):
        if not isinstance(node, (config_dict.ConfigDict, dict)) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_ranges(config: config_dict.ConfigDict) -> None:
    """Raises ``ConfigError("config.<field>: must be <range>, got <value>")`` for the first
    field of `RANGES` whose value is out of its range or of the wrong type."""
    free = _lookup(config, "loss.name")[1] in losses.TEMPERATURE_FREE
    for field, allowed in RANGES.items():
        if field == "loss.temperature" and free:
            continue
        present, value = _lookup(config, field)
        if present and not allowed.holds(value):
            raise ConfigError(f"config.{field}: must be {allowed}, got {value!r}")


def require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}: {message}")


def validate_config(
    config: config_dict.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int | None = None,
) -> None:
    """Raises ``ConfigError("config.<field>: ...")`` (a ``ValueError``) for the first invalid field
    (`WorkdirError` for a ``config.dataset.data_dir`` of a scheme other than ``gs://``,
    `mvcl.train.storage.check_data_dir`).

    ``device_count`` and ``process_count`` default to ``jax.device_count()`` and
    ``jax.process_count()``. The data set is checked when it is opened
    (`mvcl.train.inputs.open_sources`).
    """
    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    check_ranges(config)
    storage.check_data_dir(config.dataset.get("data_dir"))  # a local path or gs://
    collapse_check = config.eval.get("collapse_check", True)
    require(
        isinstance(collapse_check, bool),
        "eval.collapse_check",
        f"must be True or False, got {collapse_check!r}",
    )
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
        config.optim.name in OPTIMIZERS,
        "optim.name",
        f"must be one of {OPTIMIZERS}, got {config.optim.name!r}",
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
