"""A plain CNN for 28x28 images (Fashion-MNIST, MNIST), with wide features at low resolution.

    conv3x3(32) -> [conv3x3(64, stride 2), conv3x3(64)] -> [conv3x3(128, stride 2), conv3x3(128)]
    -> conv1x1(512) -> global average pool -> (B, 512)

every convolution followed by BatchNorm and ReLU. The two stride-2 stages take 28x28 to 14x14
and 7x7, so the wide layers run where pixels are few: at width 1 one 28x28 image costs about 25
million multiply-adds, about 1.4x the three-layer `SmallCNN` at the same size, for 5 layers
instead of 3 and 512 features instead of 128. The last 1x1 expansion (as MobileNet's last layer)
gives the linear probe a wide representation for little compute: it acts on the 7x7 map only.

BatchNorm follows the package convention in ``mvcl.models.layers`` (``axis_name`` for
global-batch statistics).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from mvcl.models.layers import batch_norm, conv, global_avg_pool, scaled_channels


class ConvNet(nn.Module):
    """Stem, stages of 3x3 convolutions (the first of each with stride 2), a 1x1 expansion.

    Attributes:
      stem: output channels of the first 3x3 convolution (stride 1).
      stages: output channels of each stage; a stage is two 3x3 convolutions, the first strided.
      features: output channels of the final 1x1 convolution (the feature dimension at width 1).
      width: channel multiplier applied to every layer.
      dtype: compute dtype; parameters stay float32 and the features are float32.
      axis_name: mapped axis for global-batch BatchNorm statistics, or None.
    """

    stem: int = 32
    stages: Sequence[int] = (64, 128)
    features: int = 512
    width: float = 1.0
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """(B, H, W, C) images -> (B, features * width) float32 features."""
        chex.assert_rank(x, 4)
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        norm = batch_norm(train, self.dtype, self.axis_name)
        x = jnp.asarray(x, self.dtype)
        layers = [(self.stem, 3, 1)]
        for channels in self.stages:
            layers += [(channels, 3, 2), (channels, 3, 1)]
        layers.append((self.features, 1, 1))
        for channels, kernel, strides in layers:
            x = conv(scaled_channels(channels, self.width), kernel, strides, dtype=self.dtype)(x)
            x = nn.relu(norm()(x))
        return global_avg_pool(x)
