"""What a backend computes per query row, and which keys it may see.

Every backend reduces one row of similarities ``S[a, (j, b)] = q_a · k_(j,b)`` over the global key
set with a mask. Two reductions exist:

* :data:`LSE`: ``log Σ_keys exp S`` (the energy of every InfoNCE-style loss);
* :func:`sum_of` ``(fn)``: ``Σ_keys fn(S)`` (the kernel sums of KCL).

A streaming backend needs three things from a reduction: an identity carry, an update of the carry
with one (masked) tile of similarities, and, in the backward pass, the weight ``∂out/∂S`` of every
similarity given the row's output. Both reductions are defined here once and shared by every
backend. The maths is in docs/losses.md, "Backends".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Callable, Literal, get_args

import jax
import jax.numpy as jnp

Mask = Literal["none", "self", "instance", "view", "instance_and_view"]
"""Which keys a query row sees (:func:`keep`)."""
MASKS: tuple[Mask, ...] = get_args(Mask)
AxisName = Hashable
"""The name of a mesh axis (``jax.shard_map``/``jax.pmap``); ``None`` where one is optional
means a single device."""


def keep(mask: Mask, same_instance: jax.Array, same_view: jax.Array) -> jax.Array:
    """Which (query, key) pairs enter a row, from broadcastable instance/view equality masks.

    * ``"none"``: every key.
    * ``"self"``: every key but the query itself (same instance and same view).
    * ``"instance"``: keys of other instances only.
    * ``"view"``: keys of other views only (of every instance, the query's own included).
    * ``"instance_and_view"``: keys of another instance and another view.
    """
    if mask == "none":
        return jnp.ones(jnp.broadcast_shapes(same_instance.shape, same_view.shape), bool)
    if mask == "self":
        return ~(same_instance & same_view)
    if mask == "instance":
        return ~same_instance & jnp.ones_like(same_view)
    if mask == "view":
        return ~same_view & jnp.ones_like(same_instance)
    if mask == "instance_and_view":
        return ~same_instance & ~same_view
    raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")


def keep_rows(mask: Mask, row: jax.Array, col: jax.Array, a: int, b: int) -> jax.Array:
    """:func:`keep` from global row ids ``instance · A + view`` of queries and keys (int arrays,
    broadcastable), with A (``a``) views per query instance and B (``b``) per key instance.

    Where the mask only needs "is it the same row" it is one compare (no division per element).
    """
    if a == b and (mask == "self" or (mask == "instance" and a == 1)):
        return row != col
    div, rem = jax.lax.div, jax.lax.rem  # the ids are non-negative: no floor-division fix-ups
    same_instance = div(row, a) == div(col, b)
    return keep(mask, same_instance, rem(row, a) == rem(col, b))


@dataclasses.dataclass(frozen=True)
class Reduction:
    """A row reduction: ``combine`` over keys, written for dense tiles and for streams.

    Attributes:
      name: ``"lse"`` or ``"sum"``.
      fn: for ``"sum"``, the elementwise function of the similarity that is summed.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array] | None = None

    def dense(self, s: jax.Array, keep_: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        """Reduce the masked similarities ``s`` over ``axes`` in one go."""
        if self.name == "lse":
            # Each reduction selects on its own (one select feeding both would be materialised).
            m = jnp.max(jnp.where(keep_, s, -jnp.inf), axis=axes, keepdims=True)
            shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
            total = jnp.sum(jnp.exp(jnp.where(keep_, s - shift, -jnp.inf)), axis=axes)
            return jnp.log(total) + jnp.squeeze(shift, axes)
        # Evaluate fn only where kept, so that a masked key (say the query itself, at distance 0)
        # cannot leak an infinite derivative into the gradient.
        return jnp.sum(jnp.where(keep_, self.fn(jnp.where(keep_, s, 0.0)), 0.0), axis=axes)

    # Streaming form: carry = (running max, running sum) for lse, (running sum,) for sum.
    def init(self, shape: tuple[int, ...], dtype) -> tuple[jax.Array, ...]:
        if self.name == "lse":
            return (jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype))
        return (jnp.zeros(shape, dtype),)

    def update(self, carry, s: jax.Array, keep_: jax.Array, axes: tuple[int, ...]):
        """Fold one tile of similarities into the carry (online log-sum-exp for lse)."""
        if self.name == "lse":
            m, l = carry
            tile_max = jnp.max(jnp.where(keep_, s, -jnp.inf), axis=axes)
            m_new = jnp.maximum(m, tile_max)
            # A row that has seen no key yet keeps m = -inf; shift by 0 there to avoid inf - inf.
            shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            p = jnp.where(keep_, jnp.exp(s - jnp.expand_dims(shift, axes)), 0.0)
            l = l * jnp.exp(m - shift) + jnp.sum(p, axis=axes)
            return (m_new, l)
        (acc,) = carry
        return (acc + self.dense(s, keep_, axes),)

    def finalize(self, carry) -> jax.Array:
        if self.name == "lse":
            m, l = carry
            return m + jnp.log(l)
        return carry[0]

    def weights(self, s: jax.Array, keep_: jax.Array, out: jax.Array) -> jax.Array:
        """``∂ out_row / ∂ s`` for every similarity of a tile (zero where masked).

        ``out`` is the output of the row each similarity belongs to, broadcastable to ``s``.
        """
        if self.name == "lse":
            return jnp.where(keep_, jnp.exp(s - out), 0.0)
        safe = jnp.where(keep_, s, 0.0)
        _, slope = jax.jvp(self.fn, (safe,), (jnp.ones_like(safe),))  # fn is elementwise
        return jnp.where(keep_, slope, 0.0)


LSE = Reduction("lse")


def sum_of(fn: Callable[[jax.Array], jax.Array]) -> Reduction:
    """The reduction ``Σ_keys fn(s)``; ``fn`` must be elementwise and differentiable."""
    return Reduction("sum", fn)


def instance_offset(q: jax.Array, axis_name: AxisName | None) -> jax.Array | int:
    """Global index of this device's first query instance (instances are sharded on axis 1)."""
    if axis_name is None:
        return 0
    return jax.lax.axis_index(axis_name) * q.shape[1]
