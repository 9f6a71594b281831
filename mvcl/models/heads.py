"""The SimCLR projection head g(h) that maps backbone features to the contrastive space.

    Dense(hidden, no bias) -> BN -> ReLU -> Dense(out_dim, no bias) -> BN(scale, no bias)

This is the head of simclr-pytorch's ``EncodeProject``, on which the paper's released code
(Koromilas et al.) is built, and SimCLR v2's ``projection_head`` with two layers: biases are
dropped before each BatchNorm (redundant with its shift), ``hidden`` defaults to the feature
dimension F, and the final BatchNorm keeps its scale but has **no bias** (simclr-pytorch's
``BatchNorm1dNoBias`` freezes it at zero; SimCLR's TensorFlow code uses ``center=False``), so in
training the projections have zero mean per dimension over the (global) batch.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax.numpy as jnp

from mvcl.models.layers import batch_norm


class ProjectionHead(nn.Module):
    """(B, F) features -> (B, out_dim) float32 projections.

    Attributes:
      hidden_dim: width of the hidden layer; None means F (the input dimension).
      out_dim: projection dimension (128 as in SimCLR and the paper).
      dtype: compute dtype; parameters stay float32.
      axis_name: mapped axis for global-batch BatchNorm statistics, or None.
    """

    hidden_dim: int | None = None
    out_dim: int = 128
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        chex.assert_rank(x, 2)
        norm = batch_norm(train, self.dtype, self.axis_name)
        hidden = self.hidden_dim or x.shape[-1]
        x = nn.Dense(hidden, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)(x)
        x = nn.relu(norm()(x))
        x = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)(x)
        x = norm(use_bias=False)(x)
        return x.astype(jnp.float32)
