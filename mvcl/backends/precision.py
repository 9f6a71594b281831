"""The matmul precision of every backend and loss.

On TPUs a float32 matmul runs by default as bfloat16 passes, on recent GPUs as TF32: "computed in
float32" would then hold on the CPU only. Every backend and loss therefore takes ``precision``, and
passes it to every ``dot_general`` of its forward and backward pass:

* ``None`` (the default): ``Precision.HIGHEST`` (full float32/float64 passes) for float32 and
  float64 inputs; ``Precision.DEFAULT`` (the platform's native passes) for bfloat16 and float16
  inputs, which gain nothing from exact passes over already-rounded values.
* a ``jax.lax.Precision`` (``DEFAULT``, ``HIGH``, ``HIGHEST``) or its name (``"default"``,
  ``"high"``, ``"highest"``, any case): used as given, to trade accuracy for speed.

See docs/losses.md, "Precision".
"""

from __future__ import annotations

from typing import Literal, get_args

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

Precision = jax.lax.Precision
PrecisionName = Literal["default", "high", "highest"]
CHOICES: tuple[PrecisionName, ...] = get_args(PrecisionName)
PrecisionLike = Precision | PrecisionName | None
"""What a ``precision`` argument takes (a name in any case works too)."""


def resolve(precision: PrecisionLike | str, dtype: DTypeLike) -> Precision:
    """The ``jax.lax.Precision`` that ``precision`` asks for, for inputs of ``dtype``."""
    if precision is None:
        exact = jnp.dtype(dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))
        return Precision.HIGHEST if exact else Precision.DEFAULT
    if isinstance(precision, Precision):
        return precision
    if isinstance(precision, str) and precision.lower() in CHOICES:
        return Precision[precision.upper()]
    raise ValueError(
        f"precision must be None, a jax.lax.Precision or one of {CHOICES}, got {precision!r}"
    )
