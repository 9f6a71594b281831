"""A small convolutional encoder for tiny images (8x8 digits up to 32x32), fast on a CPU.

    conv3x3(32) -> BN -> ReLU -> conv3x3(64, stride 2) -> BN -> ReLU -> conv3x3(128) -> BN -> ReLU
    -> global average pool -> (B, 128)

One stride-2 layer halves the resolution (8x8 -> 4x4), so the last, widest layer is cheap.
BatchNorm follows the package convention in ``mvcl.models.layers`` (``axis_name`` for
global-batch statistics).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from mvcl.models.layers import batch_norm, conv, global_avg_pool, scaled_channels


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers and a global average pool.

    Attributes:
      channels: output channels of the three convolutions; the second one has stride 2.
      width: channel multiplier applied to ``channels``.
      dtype: compute dtype; parameters stay float32 and the features are float32.
      axis_name: mapped axis for global-batch BatchNorm statistics, or None.
    """

    channels: Sequence[int] = (32, 64, 128)
    width: float = 1.0
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """(B, H, W, C) images -> (B, channels[-1] * width) float32 features."""
        chex.assert_rank(x, 4)
        if len(self.channels) != 3:
            raise ValueError(f"channels must have 3 entries, got {self.channels}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        norm = batch_norm(train, self.dtype, self.axis_name)
        x = jnp.asarray(x, self.dtype)
        for channels, strides in zip(self.channels, (1, 2, 1)):
            x = conv(scaled_channels(channels, self.width), 3, strides, dtype=self.dtype)(x)
            x = nn.relu(norm()(x))
        return global_avg_pool(x)
