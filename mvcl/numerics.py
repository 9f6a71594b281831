"""Row normalisation and compute dtypes, shared by the losses and the metrics (JAX and NumPy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

EPS = 1e-12
"""The floor of a row's norm in :func:`normalize`."""


def compute_dtype(dtype: DTypeLike | None = None) -> jnp.dtype:
    """The float dtype a computation runs in.

    For input of ``dtype`` (the losses): float64 stays float64 (JAX keeps float64 only with x64
    enabled); every other float (bfloat16, float16, float32) is computed in float32.
    ``dtype=None``, whatever the input (the metrics): the widest float JAX has enabled, float64
    under x64 and float32 otherwise.
    """
    if dtype is None:
        return jax.dtypes.canonicalize_dtype(jnp.float64)
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def normalize(z: jax.Array, eps: float = EPS) -> jax.Array:
    """``z / max(||z||, eps)`` along the last axis, with finite derivatives at ``z = 0``.

    The norm is taken as ``sqrt(max(z·z, eps²))``: the same value, but the square root is never
    differentiated at 0 (``d sqrt(x)/dx`` is infinite there), so a zero row (a dead feature
    vector) gives the finite derivative ``1/eps`` instead of NaN.
    """
    sq = jnp.sum(z * z, axis=-1, keepdims=True)
    return z / jnp.sqrt(jnp.maximum(sq, jnp.asarray(eps * eps, sq.dtype)))
