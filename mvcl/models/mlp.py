"""A small MLP encoder for vector inputs (e.g. a 1-D signal), the MLP counterpart of SmallCNN.

    flatten -> [Dense(h, no bias) -> BN -> ReLU] per hidden width -> (B, hidden[-1])

BatchNorm follows the package convention in ``mvcl.models.layers`` (``axis_name`` for
global-batch statistics).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mvcl.models.layers import batch_norm, scaled_channels


class MLP(nn.Module):
    """Dense-BN-ReLU layers on the flattened input.

    Attributes:
      hidden: widths of the layers (at least one); the last one is the feature dimension.
      width: multiplier applied to ``hidden``.
      dtype: compute dtype; parameters stay float32 and the features are float32.
      axis_name: mapped axis for global-batch BatchNorm statistics, or None.
    """

    hidden: Sequence[int] = (128, 128)
    width: float = 1.0
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """(B, ...) inputs -> (B, hidden[-1] * width) float32 features."""
        if not self.hidden:
            raise ValueError("hidden must list at least one layer width, got ()")
        norm = batch_norm(train, self.dtype, self.axis_name)
        x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
        for features in self.hidden:
            x = nn.Dense(
                scaled_channels(features, self.width),
                use_bias=False,
                dtype=self.dtype,
                param_dtype=jnp.float32,
            )(x)
            x = nn.relu(norm()(x))
        return x.astype(jnp.float32)
