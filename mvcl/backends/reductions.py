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
import math
from collections.abc import Hashable
from typing import Any, Callable, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from mvcl._deprecation import warn_moved

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

    Examples:
      >>> import jax.numpy as jnp
      >>> from mvcl import backends
      >>> same_instance = jnp.array([[True], [False]])  # two keys: the query's instance, another
      >>> same_view = jnp.array([[True, False]])  # two key views: the query's view, another
      >>> backends.keep("instance", same_instance, same_view)
      Array([[False, False],
             [ True,  True]], dtype=bool)
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

    Every method works on tiles of similarities ``s`` of shape (..., rows, keys) and reduces
    them over the keys (``axis=-1``: one output per tile row) or, for a tile of a symmetric S
    seen from its other side, over the rows (``axis=-2``: one output per tile column). Outputs
    and per-row values (``out``, ``g``) are carried as (..., rows) arrays, or (..., rows, B) with
    ``key_views``.

    Attributes:
      name: ``"lse"`` or ``"sum"``.
      fn: for ``"sum"``, the elementwise function of the similarity that is summed.
      bound: for ``"lse"``, a static bound on the similarities, ``|s| <= bound`` (``1/τ`` for
        unit embeddings: `lse_bounded`), or None. Where ``exp(-2·bound)`` is a normal number of
        the compute dtype (`fixed_shift`), streams shift every exponential by ``bound`` instead
        of a running maximum, and a symmetric tile computes one exponential for its rows and
        its columns (`update_pair`, `pair_weights`) instead of one each.
      key_views: None for one output per row; B for one output per row *and key view*
        (`per_key_view`): the keys come instance-major with B views per instance (every tile's
        key count a multiple of B), and the output of a row holds its reduction over each view's
        keys separately, (..., rows, B). PWE reads its V(V−1)/2 two-view energies from these.
      precision: with ``key_views``, the precision of the one-hot matmuls that spread per-view
        values over a tile (`expand`).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array] | None = None
    bound: float | None = None
    key_views: int | None = None
    precision: Any = None

    def fixed_shift(self, dtype) -> bool:
        """Whether the fixed shift by ``bound`` is exact in ``dtype``: every kept
        ``exp(s - bound) >= exp(-2·bound)`` stays a normal number and ``exp(bound - out) <=
        exp(2·bound)`` finite, with a margin of e^8 for the sums."""
        if self.name != "lse" or self.bound is None:
            return False
        return 2 * self.bound <= -math.log(float(jnp.finfo(dtype).tiny)) - 8

    def out_shape(self, rows: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the outputs of ``rows`` (a shape): ``rows`` or ``rows + (B,)``."""
        return rows if self.key_views is None else (*rows, self.key_views)

    def over(self, op, x: jax.Array, axis: int, *, matmul: bool = True) -> jax.Array:
        """``op`` (a jnp reduction) of a tile over its keys (``axis=-1``) or its rows (-2), with
        ``key_views`` once per view: (..., R, K) -> (..., R) / (..., K), or (..., R, B) /
        (..., K, B).

        With ``key_views``, a sum over the keys is by default a matmul with the one-hot
        (keys × views) matrix: a strided sum (every B-th key) is slow on the CPU (timings in
        ``experiments/results/loss_benchmarks/README.md``). The
        matmul materialises ``x``; ``matmul=False`` sums in place, for an ``x`` that is a whole
        similarity matrix (dense's backward pass: a second matrix would be 1.5x its memory).
        """
        if self.key_views is None:
            return op(x, axis=axis)
        b = self.key_views
        *lead, r, k = x.shape
        if axis == -1:
            if matmul and op is jnp.sum:
                one_hot = jnp.asarray(np.arange(k)[:, None] % b == np.arange(b), x.dtype)
                return jnp.einsum("...rk,kb->...rb", x, one_hot, precision=self.precision)
            return op(x.reshape(*lead, r, k // b, b), axis=-2)
        return jnp.swapaxes(op(x.reshape(*lead, r // b, b, k), axis=-3), -1, -2)

    def expand(self, x: jax.Array, axis: int, shape: tuple[int, ...]) -> jax.Array:
        """Per-output values ``x`` of a reduction over ``axis`` back onto the tile ``shape``:
        the inverse broadcast of :meth:`over` (each similarity gets the value of the output it
        entered)."""
        if self.key_views is None:
            return jnp.expand_dims(x, axis)
        # A matmul with the one-hot (keys × views) matrix, faster on the CPU than a broadcast
        # and reshape (one-off; see experiments/results/loss_benchmarks/README.md).
        size = shape[-1] if axis == -1 else shape[-2]
        one_hot = np.arange(size)[:, None] % self.key_views == np.arange(self.key_views)
        one_hot = jnp.asarray(one_hot, x.dtype)
        if axis == -1:  # x: (..., R, B); the key at column c belongs to view c mod B
            return jnp.einsum("...rb,kb->...rk", x, one_hot, precision=self.precision)
        # x: (..., K, B); the row r of the tile belongs to view r mod B
        return jnp.einsum("...kb,rb->...rk", x, one_hot, precision=self.precision)

    def dense(self, s: jax.Array, keep_: jax.Array, axis: int = -1, *, axes=None) -> jax.Array:
        """Reduce the masked similarities ``s`` over ``axis`` in one go (``axes=(k,)``, the
        former argument, still works for one release). Per-view sums are summed in place
        (`over`'s ``matmul=False``): ``s`` may be a whole similarity matrix."""
        axis = _axis(axis, axes, s.ndim)
        if self.name == "lse":
            # Each reduction selects on its own (one select feeding both would be materialised).
            m = self.over(jnp.max, jnp.where(keep_, s, -jnp.inf), axis)
            shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
            p = jnp.exp(jnp.where(keep_, s - self.expand(shift, axis, s.shape), -jnp.inf))
            return jnp.log(self.over(jnp.sum, p, axis, matmul=False)) + shift
        # Evaluate fn only where kept, so that a masked key (say the query itself, at distance 0)
        # cannot leak an infinite derivative into the gradient.
        return self.over(jnp.sum, jnp.where(keep_, self.fn(jnp.where(keep_, s, 0.0)), 0.0), axis)

    # Streaming form: carry = (running max, running sum) for lse, (running sum of exp(s - bound),)
    # for lse with a fixed shift, (running sum,) for sum.
    def init(self, shape: tuple[int, ...], dtype) -> tuple[jax.Array, ...]:
        """The identity carry of rows of ``shape`` (`out_shape` is added)."""
        shape = self.out_shape(tuple(shape))
        if self.name == "lse" and not self.fixed_shift(dtype):
            return (jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype))
        return (jnp.zeros(shape, dtype),)

    def _shifted(self, s: jax.Array, keep_: jax.Array) -> jax.Array:
        """``exp(s - bound)`` where kept, else 0 (the fixed-shift form)."""
        return jnp.where(keep_, jnp.exp(s - self.bound), 0.0)

    def update(self, carry, s: jax.Array, keep_: jax.Array, axis: int = -1, *, axes=None):
        """Fold one tile of similarities into the carry (online log-sum-exp for lse)."""
        axis = _axis(axis, axes, s.ndim)
        if self.fixed_shift(s.dtype):
            return (carry[0] + self.over(jnp.sum, self._shifted(s, keep_), axis),)
        if self.name == "lse":
            m, l = carry
            tile_max = self.over(jnp.max, jnp.where(keep_, s, -jnp.inf), axis)
            m_new = jnp.maximum(m, tile_max)
            # A row that has seen no key yet keeps m = -inf; shift by 0 there to avoid inf - inf.
            shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            p = jnp.where(keep_, jnp.exp(s - self.expand(shift, axis, s.shape)), 0.0)
            l = l * jnp.exp(m - shift) + self.over(jnp.sum, p, axis)
            return (m_new, l)
        (acc,) = carry
        return (acc + self.dense(s, keep_, axis),)

    def update_pair(self, rows, cols, s: jax.Array, keep_: jax.Array):
        """`update` of the carries of a tile's rows and of its columns, for a tile of a
        symmetric S seen from both sides; one exponential with a fixed shift."""
        if self.fixed_shift(s.dtype):
            p = self._shifted(s, keep_)
            return (rows[0] + self.over(jnp.sum, p, -1),), (cols[0] + self.over(jnp.sum, p, -2),)
        return self.update(rows, s, keep_, -1), self.update(cols, s, keep_, -2)

    def finalize(self, carry) -> jax.Array:
        if len(carry) == 1 and self.name == "lse":  # the fixed shift
            return self.bound + jnp.log(carry[0])
        if self.name == "lse":
            m, l = carry
            return m + jnp.log(l)
        return carry[0]

    def weights(self, s: jax.Array, keep_: jax.Array, out: jax.Array, axis: int = -1):
        """``∂ out / ∂ s`` for every similarity of a tile (zero where masked), ``out`` being the
        outputs of the reduction over ``axis`` (carried form, see the class docstring)."""
        if self.name == "lse":
            return jnp.where(keep_, jnp.exp(s - self.expand(out, axis, s.shape)), 0.0)
        safe = jnp.where(keep_, s, 0.0)
        _, slope = jax.jvp(self.fn, (safe,), (jnp.ones_like(safe),))  # fn is elementwise
        return jnp.where(keep_, slope, 0.0)

    def pair_weights(self, s, keep_, out_rows, g_rows, out_cols, g_cols) -> jax.Array:
        """``W + Wᵀ`` on a tile of a symmetric S: ``∂out_a/∂s_ab · g_a + ∂out_b/∂s_ab · g_b``.

        ``out_rows, g_rows`` belong to the tile's rows, ``out_cols, g_cols`` to its columns, in
        carried form. With a fixed shift, ``exp(s - out_a) = exp(s - bound) · exp(bound - out_a)``:
        one exponential per similarity instead of two.
        """
        if not self.fixed_shift(s.dtype):
            return self.weights(s, keep_, out_rows, -1) * self.expand(
                g_rows, -1, s.shape
            ) + self.weights(s, keep_, out_cols, -2) * self.expand(g_cols, -2, s.shape)

        return self.shifted_pair_weights(
            self._shifted(s, keep_), out_rows, g_rows, out_cols, g_cols
        )

    def shifted_pair_weights(self, p, out_rows, g_rows, out_cols, g_cols) -> jax.Array:
        """`pair_weights` from ``p = exp(s - bound)`` (0 where masked), with a fixed shift."""

        def scale(out, g, axis):  # a row without keys (out = -inf) has no weights
            factor = jnp.where(jnp.isfinite(out), jnp.exp(self.bound - out), 0.0) * g
            return self.expand(factor, axis, p.shape)

        return p * (scale(out_rows, g_rows, -1) + scale(out_cols, g_cols, -2))


def _axis(axis: int, axes, ndim: int) -> int:
    """``axis`` (-1: over the keys, -2: over the rows), or the former ``axes=(k,)`` turned into
    it, with a DeprecationWarning."""
    if axes is None:
        return axis
    warn_moved("Reduction's axes=(k,)", "axis=-1 (over the keys) or axis=-2 (over the rows)")
    (k,) = axes
    if k - ndim not in (-1, -2):
        raise ValueError(f"a reduction runs over the last or second-last axis, got axes={axes}")
    return k - ndim


LSE = Reduction("lse")


def lse_bounded(bound: float) -> Reduction:
    """:data:`LSE` for similarities known to satisfy ``|s| <= bound`` (see `Reduction.bound`)."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    return Reduction("lse", bound=float(bound))


def per_key_view(reduction: Reduction, views: int, precision: Any = "highest") -> Reduction:
    """``reduction`` once per key view: each row's output over the keys of each of the ``views``
    views of the key instances separately, (..., rows, views) (see `Reduction.key_views`).

    ``precision``: of the one-hot matmuls that spread per-view values over a tile (the losses
    pass their own; by default exact).

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> per_view = backends.per_key_view(backends.LSE, 4)
      >>> out = backends.self_rows("dense", v, mask="instance", reduction=per_view)
      >>> out.shape  # (G, n, A, key views)
      (1, 8, 4, 4)
    """
    if not (isinstance(views, int) and views >= 1):
        raise ValueError(f"views must be a positive int, got {views!r}")
    return dataclasses.replace(reduction, key_views=views, precision=precision)


def check_key_views(reduction: Reduction, b: int) -> None:
    """A per-key-view reduction needs keys with exactly its number of views per instance."""
    if reduction.key_views is not None and reduction.key_views != b:
        raise ValueError(
            f"the reduction is per key view over {reduction.key_views} views, but the keys have "
            f"{b} rows per instance: build it with per_key_view(reduction, {b})"
        )


def sum_of(fn: Callable[[jax.Array], jax.Array]) -> Reduction:
    """The reduction ``Σ_keys fn(s)``; ``fn`` must be elementwise and differentiable.

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> import jax.numpy as jnp
      >>> sums = backends.self_rows("dense", v, mask="self", reduction=backends.sum_of(jnp.exp))
      >>> lse = backends.self_rows("dense", v, mask="self", reduction=backends.LSE)
      >>> bool(jnp.allclose(jnp.log(sums), lse))
      True
    """
    return Reduction("sum", fn)


def instance_offset(q: jax.Array, axis_name: AxisName | None) -> jax.Array | int:
    """Global index of this device's first query instance (instances are sharded on axis 1)."""
    if axis_name is None:
        return 0
    return jax.lax.axis_index(axis_name) * q.shape[1]
