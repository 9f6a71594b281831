"""ResNet-18 and ResNet-50 backbones (He et al. 2016) in flax.linen, without the classifier.

``ResNet(stage_sizes, block, width, stem)(x, train) -> (B, F)`` globally average-pooled
features, F = 512·width (BasicBlock) or 2048·width (Bottleneck).

* ``stem="cifar"``: 3x3 conv, stride 1, no max-pool (32x32 inputs keep their resolution into
  stage 1; SimCLR's CIFAR variant). ``stem="imagenet"``: 7x7 conv stride 2, then 3x3 max-pool
  stride 2.
* Stage i has ``64·width·2^i`` filters; stages 2-4 downsample by 2 in their first block. The
  Bottleneck strides its 3x3 convolution (torchvision "v1.5") and expands by 4.
* The last BatchNorm of every residual branch has its scale initialised to zero (Goyal et al.
  2017), so each block starts as the identity (projection shortcuts aside); standard in SimCLR
  and the flax ImageNet example, and it stabilises large-batch training.
* At full width the backbone has 11,168,832 (ResNet-18, CIFAR stem) and 23,508,032 (ResNet-50)
  parameters: torchvision's counts without the fully-connected classifier.

BatchNorm conventions (momentum, ``axis_name`` for global-batch statistics) are in
``mvcl.models.layers``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from mvcl.models.layers import batch_norm, conv, global_avg_pool, scaled_channels

STEMS = ("cifar", "imagenet")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; output channels = ``filters``."""

    filters: int
    strides: int
    dtype: Any
    axis_name: str | None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.axis_name)
        y = conv(self.filters, 3, self.strides, dtype=self.dtype)(x)
        y = nn.relu(norm()(y))
        y = conv(self.filters, 3, dtype=self.dtype)(y)
        y = norm(scale_init=nn.initializers.zeros_init())(y)
        return nn.relu(_shortcut(x, y, self.strides, self.dtype, norm) + y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand; output channels = ``4 * filters``."""

    filters: int
    strides: int
    dtype: Any
    axis_name: str | None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.axis_name)
        y = conv(self.filters, 1, dtype=self.dtype)(x)
        y = nn.relu(norm()(y))
        y = conv(self.filters, 3, self.strides, dtype=self.dtype)(y)
        y = nn.relu(norm()(y))
        y = conv(4 * self.filters, 1, dtype=self.dtype)(y)
        y = norm(scale_init=nn.initializers.zeros_init())(y)
        return nn.relu(_shortcut(x, y, self.strides, self.dtype, norm) + y)


def _shortcut(
    x: jnp.ndarray, y: jnp.ndarray, strides: int, dtype: Any, norm: Callable[..., nn.BatchNorm]
) -> jnp.ndarray:
    """Identity, or a strided 1x1 conv + BatchNorm projection when the shape changes."""
    if x.shape == y.shape:
        return x
    x = conv(y.shape[-1], 1, strides, dtype=dtype, name="shortcut_conv")(x)
    return norm(name="shortcut_norm")(x)


class ResNet(nn.Module):
    """A ResNet backbone: stem, four residual stages, global average pool.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block: ``BasicBlock`` or ``Bottleneck``.
      width: channel multiplier (1.0 is the standard network; e.g. 1/8 for fast tests).
      stem: ``"cifar"`` or ``"imagenet"`` (see the module docstring).
      dtype: compute dtype; parameters stay float32 and the features are float32.
      axis_name: mapped axis for global-batch BatchNorm statistics, or None.
    """

    stage_sizes: Sequence[int]
    block: type[BasicBlock] | type[Bottleneck]
    width: float = 1.0
    stem: str = "cifar"
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """(B, H, W, C) images -> (B, F) float32 features."""
        chex.assert_rank(x, 4)
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        norm = batch_norm(train, self.dtype, self.axis_name)
        x = jnp.asarray(x, self.dtype)
        stem_channels = scaled_channels(64, self.width)
        if self.stem == "cifar":
            x = conv(stem_channels, 3, dtype=self.dtype, name="stem_conv")(x)
            x = nn.relu(norm(name="stem_norm")(x))
        else:
            x = conv(stem_channels, 7, 2, dtype=self.dtype, name="stem_conv")(x)
            x = nn.relu(norm(name="stem_norm")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            filters = scaled_channels(64 * 2**i, self.width)
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block(
                    filters, strides, self.dtype, self.axis_name, name=f"stage{i + 1}_block{j + 1}"
                )(x, train)
        return global_avg_pool(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)
