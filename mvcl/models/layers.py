"""Building blocks shared by every encoder: convolution, BatchNorm and pooling.

One place decides the BatchNorm convention for the whole package:

* momentum 0.9 and epsilon 1e-5 (PyTorch's 0.1 "momentum" in flax's convention, as in the
  authors' PyTorch code and the flax ImageNet example);
* batch statistics in training, running averages in evaluation (``use_running_average=not
  train``);
* ``axis_name``: when the model runs inside ``jax.shard_map`` / ``jax.pmap`` over that axis, the
  mean and variance are ``lax.pmean``-ed over it, so every BatchNorm normalises with the
  statistics of the **global** batch (SyncBatchNorm), exactly as a single device would on the
  full batch. Contrastive learning needs this: per-device statistics leak which samples share a
  device and let the network cheat (Chen et al. 2020, sec. B.9).

Parameters are always float32; ``dtype`` is the compute dtype (float32 or bfloat16). flax's
BatchNorm reduces in float32 whatever ``dtype`` is.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from mvcl.models import loop_conv as loop_friendly

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

Dtype = Any


def batch_norm(train: bool, dtype: Dtype, axis_name: str | None) -> Callable[..., nn.BatchNorm]:
    """A ``nn.BatchNorm`` constructor with the package convention filled in.

    Further keyword arguments (``scale_init``, ``use_bias``, ``name``) go to ``nn.BatchNorm``.
    """
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        axis_name=axis_name,
    )


def conv(
    features: int, kernel_size: int, strides: int = 1, *, dtype: Dtype, name: str | None = None
) -> nn.Conv:
    """A bias-free ``k x k`` convolution (a BatchNorm always follows) with PyTorch padding.

    Padding is ``k // 2`` on every side, so a stride-2 layer samples the same pixels as
    ``torch.nn.Conv2d(..., padding=k // 2)`` (``"SAME"`` would pad only bottom/right). Inside
    a `mvcl.models.loop_conv.loop_friendly` block (gradient caching's chunk loop) the convolution's
    gradients are ones that stay fast inside loops on the CPU.
    """
    pad = kernel_size // 2
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=loop_friendly.current(),
        name=name,
    )


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, C) spatial mean, accumulated and returned in float32."""
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1: the width multiplier of every encoder."""
    return max(1, int(round(channels * width)))
