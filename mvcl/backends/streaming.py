"""The memory-linear backend: online row reductions over key tiles, blocks passed round a ring.

Forward, per device: the local query rows are cut into tiles of at most ``tile`` rows, the keys
into tiles of at most ``tile`` keys (by default :func:`default_tile`: 512 rows for one group,
384 for several on one device, 512 on the ring). For each key block (the device's own first,
then, with ``axis_name``, the block of the previous device on the ring, arriving by
``lax.ppermute`` while the current one is being computed) every (query tile, key tile)
similarity matrix is formed, masked by *global* instance and view ids, and folded into a running
carry (running max and sum for log-sum-exp). Only the inputs and ``out`` are saved.

Backward (``jax.custom_vjp``): given ``g = ∂L/∂out``, each tile is recomputed and its weights
``W = ∂out/∂S · g`` applied:

* general keys (:func:`streaming`): ``dq += W k`` and ``dk += Wᵀ q``; on the ring the ``dk``
  buffer travels with its key block and is back with its owner after P hops;
* keys = queries (:func:`streaming_self`, what every loss uses): S and the mask are symmetric, so
  ``dv = (W + Wᵀ) v``. On the ring each key block travels with its rows' ``out`` and ``g``, the
  tile's ``A = W + Wᵀ`` is formed elementwise and ``dv += A k``: one matmul fewer per tile and no
  gradient buffer on the ring. On one device every off-diagonal pair of tiles (I < J) is computed
  once, for both of its tile rows: rows reduce into I, columns into J; ``dv_I += A v_J`` and
  ``dv_J += Aᵀ v_I``. That halves the forward matmuls and leaves 1.5 of the 3 matmul passes of
  the backward.

Memory per device: O((rows + keys)·D + tile²·G); never the full similarity matrix of more than
`UNROLL_TILES` tiles' rows (up to which the single-device loops, and on the ring the loop over a
key block's tiles, are unrolled).
Named ``blockwise`` (one device, ``axis_name=None``) and ``ring`` (``axis_name`` given): the same
kernel, a ring of one device being the single-device case. The maths is in docs/losses.md,
"Backends".
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mvcl.backends import reductions
from mvcl.backends.precision import PrecisionLike
from mvcl.backends.reductions import AxisName, Mask, Reduction

TILE_ELEMENTS = 512 * 512
"""Default similarity-tile size of a single group: 1 MiB of float32."""
MIN_TILE = 384
"""Fewest rows per tile and group by default. Many groups (PWE's V(V−1)/2, MV-DHEL's V) once
shared ``TILE_ELEMENTS`` (tiles of 96-181 rows at V = 4 and 8); the per-tile work around the
small matmuls then cost more than the cache saved (the timings:
``experiments/results/loss_benchmarks/README.md``)."""


UNROLL_TILES = 4
"""On one device, up to this many tiles per group the loops over tile pairs are unrolled into
straight-line code. XLA then slices tiles statically (no copy) and may run independent tiles at
once; it may also keep several tiles' similarities alive at once, so temporary memory can reach
``UNROLL_TILES²`` tiles (the whole similarity matrix of at most ``UNROLL_TILES · tile`` rows).
Unrolling every loop whatever the count kept the whole matrix for no gain in time: hence the
bound, which does not grow with N.

On the ring only the loop over a key block's tiles is unrolled (`_unroll`), the loop over the
query tiles stays rolled: unrolling more held memory that grows with the block. The timings
behind these choices are in ``experiments/results/loss_benchmarks/README.md``."""


def _unroll(tiling) -> bool:
    """Whether a loop over ``tiling``'s tiles is unrolled: up to the platform's `unroll_tiles`
    (`UNROLL_TILES` on the CPU, see `TILE_DEFAULTS`)."""
    return tiling.count <= tile_defaults().unroll_tiles


RING_TILE = 512
"""Rows per tile by default on the ring (an ``axis_name`` given), whatever the number of groups.
The ring's loop over its query tiles stays rolled (`UNROLL_TILES`), and each trip costs its
dynamic slices and carry updates, so fewer, larger tiles pay; on one device 512 rows were no
faster than 384 (a one-off comparison; the committed runs on the ring:
``experiments/results/loss_benchmarks/README.md``)."""


@dataclasses.dataclass(frozen=True)
class TileDefaults:
    """The default tiling of one platform (see `TILE_DEFAULTS`).

    Attributes:
      tile_elements: similarity entries of one tile of all G groups on one device: tiles of
        ``sqrt(tile_elements / G)`` rows (rounded down to a multiple of 8),
      min_tile: but at least this many rows;
      ring_tile: rows per tile on the ring, whatever G;
      unroll_tiles: loops over at most this many tiles are unrolled (`UNROLL_TILES`).
    """

    tile_elements: int
    min_tile: int
    ring_tile: int
    unroll_tiles: int


ACCELERATOR_TILES = TileDefaults(
    tile_elements=8192 * 8192, min_tile=2048, ring_tile=8192, unroll_tiles=4
)
"""GPU and TPU defaults, PROVISIONAL: chosen by reasoning, not yet measured on an accelerator
(``experiments/bench_accelerator.py`` measures tiles of 1,024 to 16,384 rows; see
``experiments/results/accelerator/README.md``). Each trip of a tile loop costs a handful of
kernel launches and, for a rolled loop, a loop-condition round trip: some 10-50 µs on a GPU. A
512-row tile at D = 128 is 67 MFLOP (about 1 µs of an H100 in float32, 0.15 µs as TF32), so the
CPU's tiles would leave the GPU idle; an 8,192-row tile is 17 GFLOP (about 0.3 ms in float32,
35 µs as TF32), so the overhead is a few per cent at most. Its similarities take 256 MiB of
float32 per tile, and an unrolled loop may hold up to ``unroll_tiles²`` tiles (4 GiB: the whole
matrix of 32,768 rows), small next to an accelerator's 16-141 GiB; from 5 tiles on (N·V > 32,768
for one group) the loops stay rolled and memory stays linear in N·V."""

TILE_DEFAULTS: dict[str, TileDefaults] = {
    "cpu": TileDefaults(TILE_ELEMENTS, MIN_TILE, RING_TILE, UNROLL_TILES),
    "gpu": ACCELERATOR_TILES,
    "tpu": ACCELERATOR_TILES,
}
"""The default tiling by platform (``jax.default_backend()``: where ``jit`` runs a computation
unless told otherwise). The rule: tiles as large as keep the per-trip overhead of a tile loop
small next to a tile's matmuls, but not larger, so that memory stays linear in N·V.

* ``cpu``: the figures above, measured on a 2-core CPU (`TILE_ELEMENTS`, `MIN_TILE`,
  `RING_TILE`, `UNROLL_TILES`): there a trip costs little, and tiles that stay in the cache pay.
* ``gpu``, ``tpu`` and any other platform: `ACCELERATOR_TILES` (provisional).

A ``tile=`` given to the backend (``mvcl.backends.get("blockwise", tile=...)``) overrides it."""


def tile_defaults(platform: str | None = None) -> TileDefaults:
    """The default tiling of ``platform`` (default: ``jax.default_backend()``); a platform not in
    `TILE_DEFAULTS` gets the accelerators'."""
    platform = jax.default_backend() if platform is None else platform
    return TILE_DEFAULTS.get(platform.lower(), ACCELERATOR_TILES)


def default_tile(groups: int, ring: bool = False, platform: str | None = None) -> int:
    """Rows per tile when none is given, by the platform's `TileDefaults` (`TILE_DEFAULTS`): on
    one device ``sqrt(tile_elements / G)``, at least ``min_tile``; on the ring ``ring_tile``.
    On the CPU: 512 rows for one group, 384 for two or more, 512 on the ring; on a GPU or TPU
    (provisional): 8,192 rows for one group, 4,096 for 4 groups, at least 2,048, 8,192 on the
    ring."""
    d = tile_defaults(platform)
    if ring:
        return d.ring_tile
    return max(d.min_tile, math.isqrt(d.tile_elements // groups) // 8 * 8)


def _check_tile(tile: int | None, x: jax.Array, axis_name: AxisName | None) -> int:
    if tile is None:
        return default_tile(x.shape[0], ring=axis_name is not None)
    if tile < 1:
        raise ValueError(f"tile must be a positive number of rows, got {tile}")
    return tile


def streaming(
    q: ArrayLike,
    k: ArrayLike,
    *,
    mask: Mask,
    reduction: Reduction,
    axis_name: AxisName | None = None,
    precision: PrecisionLike = None,
    tile: int | None = None,
) -> jax.Array:
    """Row reductions of ``q`` (G, n, A, D) over global keys ``k`` (G, n, B, D): (G, n, A).

        out[g, i, a] = LSE_{(j, b) kept by mask} q_gia · k_gjb   (or Σ fn(q_gia · k_gjb) for sum_of)

    over the global key instances j and their views b (docs/losses.md, "Backends"); the
    similarities are formed a (query tile, key tile) pair at a time and folded into a running
    carry, the key blocks passed round the ring with ``axis_name`` (``blockwise`` without).

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> from mvcl.backends import dense, streaming
      >>> out = streaming.streaming(v, v, mask="self", reduction=backends.LSE, tile=8)  # 4 tiles
      >>> bool(jax.numpy.allclose(out, dense.dense(v, v, mask="self", reduction=backends.LSE)))
      True

    References:
      docs/losses.md, "Backends".
    """
    q, k = jnp.asarray(q), jnp.asarray(k)
    reductions.check_key_views(reduction, k.shape[2])
    tile = _check_tile(tile, q, axis_name)
    return _stream(q, k, mask, reduction, axis_name, tile, precision)


class _Tiling:
    """Rows of a (G, n, A, D) shard cut into tiles, with the global ids of every row.

    With ``whole_instances`` every tile holds whole instances (a multiple of A rows), as the keys
    of a per-key-view reduction must (`Reduction.key_views`).
    """

    def __init__(self, x, tile, whole_instances=False):
        self.g, self.n, self.per, self.d = x.shape
        self.rows = self.n * self.per
        if whole_instances:
            tile = max(1, tile // self.per) * self.per
        self.count = -(-self.rows // tile)
        # Balanced tiles (rounded up to a multiple of 8, or of A, within ``tile``): little padding.
        even = -(-self.rows // self.count)
        unit = self.per if whole_instances else 8
        self.size = min(tile, -(-even // unit) * unit) if tile >= unit else even

    def split(self, x):
        """(G, n, A, ...) -> (count, G, size, ...), zero-padded."""
        flat = x.reshape(self.g, self.rows, *x.shape[3:])
        pad = self.count * self.size - self.rows
        flat = jnp.pad(flat, [(0, 0), (0, pad)] + [(0, 0)] * (flat.ndim - 2))
        return jnp.moveaxis(flat.reshape(self.g, self.count, self.size, *x.shape[3:]), 1, 0)

    def join(self, tiles, trailing=()):
        """Inverse of :meth:`split`."""
        flat = jnp.moveaxis(tiles, 0, 1).reshape(self.g, self.count * self.size, *trailing)
        return flat[:, : self.rows].reshape(self.g, self.n, self.per, *trailing)

    def ids(self, index, offset):
        """Global row ids (instance · A + view) and validity of the rows of tile ``index``."""
        r = index * self.size + jnp.arange(self.size)
        return offset * self.per + r, r < self.rows


def _keep(mask, qt: _Tiling, qi, q_off, kt: _Tiling, ki, k_off):
    q_row, q_ok = qt.ids(qi, q_off)
    k_row, k_ok = kt.ids(ki, k_off)
    keep = reductions.keep_rows(mask, q_row[:, None], k_row[None, :], qt.per, kt.per)
    return (keep & q_ok[:, None] & k_ok[None, :])[None]  # (1, Tq, Tk), shared by the G groups


def _varying(constants, axis_name):
    """Marks loop carries that start as constants as per-device values, as shard_map requires."""
    if axis_name is None:
        return constants
    return jax.lax.pcast(constants, axis_name, to="varying")


def _ring(axis_name):
    """(devices on the ring, this device's index, pass-to-the-next-device function)."""
    if axis_name is None:
        return 1, 0, None
    size = jax.lax.axis_size(axis_name)
    perm = [(i, (i + 1) % size) for i in range(size)]
    return (
        size,
        jax.lax.axis_index(axis_name),
        functools.partial(jax.lax.ppermute, axis_name=axis_name, perm=perm),
    )


def _around_the_ring(ring, visit, keys, acc, travelling=None):
    """Calls ``visit`` once on every device's key block: its own block first, then, one hop per
    step, the block of the device before it on the ring. ``visit(acc, keys, travelling, src)``
    returns the new ``(acc, travelling)``; ``src`` is the ring index of the block's owner.

    ``keys`` are passed on before each visit, so the transfer overlaps the computation;
    ``travelling`` (values written on the way, such as key gradients) is passed on after it, and
    once more after the last visit, which brings it home to its owner. Returns
    ``(acc, travelling)``. One device (``ring`` of size 1) is a single visit.
    """
    size, me, pass_on = ring

    def step(i, state):
        keys, acc, travelling = state
        arriving = pass_on(keys)  # started before the computation on the current block
        acc, travelling = visit(acc, keys, travelling, (me - i) % size)
        return arriving, acc, None if travelling is None else pass_on(travelling)

    if size > 1:
        keys, acc, travelling = jax.lax.fori_loop(0, size - 1, step, (keys, acc, travelling))
    acc, travelling = visit(acc, keys, travelling, (me - (size - 1)) % size)
    if size > 1 and travelling is not None:
        travelling = pass_on(travelling)
    return acc, travelling


def _forward(q, k, mask, reduction, axis_name, tile, precision):
    qt, kt = _Tiling(q, tile), _Tiling(k, tile, reduction.key_views is not None)
    ring = _ring(axis_name)
    me = ring[1]
    q_tiles = qt.split(q)
    q_off = me * qt.n

    def fold_block(carry, k_tiles, _, src):
        k_off = src * kt.n

        def per_query_tile(args):
            qi, q_tile, c = args

            def per_key_tile(ki, c):
                s = jnp.einsum("gqd,gkd->gqk", q_tile, k_tiles[ki], precision=precision)
                return reduction.update(c, s, _keep(mask, qt, qi, q_off, kt, ki, k_off))

            return jax.lax.fori_loop(0, kt.count, per_key_tile, c, unroll=_unroll(kt))

        return jax.lax.map(per_query_tile, (jnp.arange(qt.count), q_tiles, carry)), None

    carry = _varying(reduction.init((qt.count, qt.g, qt.size), q.dtype), axis_name)
    carry, _ = _around_the_ring(ring, fold_block, kt.split(k), carry)
    return qt.join(reduction.finalize(carry), reduction.out_shape(()))


def _backward(q, k, out, g, mask, reduction, axis_name, tile, precision):
    qt, kt = _Tiling(q, tile), _Tiling(k, tile, reduction.key_views is not None)
    ring = _ring(axis_name)
    q_tiles, out_tiles, g_tiles = qt.split(q), qt.split(out), qt.split(g)
    q_off = ring[1] * qt.n

    def grad_block(dq_tiles, k_tiles, dk_tiles, src):
        """dq += W k on this device's rows, dk += Wᵀ q on the visiting key block."""
        k_off = src * kt.n

        def per_query_tile(dk_tiles, args):
            qi, q_tile, o, g_, dq = args

            def per_key_tile(ki, state):
                dq, dk_tiles = state
                k_tile = k_tiles[ki]
                s = jnp.einsum("gqd,gkd->gqk", q_tile, k_tile, precision=precision)
                keep = _keep(mask, qt, qi, q_off, kt, ki, k_off)
                w = reduction.weights(s, keep, o) * reduction.expand(g_, -1, s.shape)
                dq = dq + jnp.einsum("gqk,gkd->gqd", w, k_tile, precision=precision)
                return dq, dk_tiles.at[ki].add(
                    jnp.einsum("gqk,gqd->gkd", w, q_tile, precision=precision)
                )

            dq, dk_tiles = jax.lax.fori_loop(0, kt.count, per_key_tile, (dq, dk_tiles))
            return dk_tiles, dq

        dk_tiles, dq_tiles = jax.lax.scan(
            per_query_tile, dk_tiles, (jnp.arange(qt.count), q_tiles, out_tiles, g_tiles, dq_tiles)
        )
        return dq_tiles, dk_tiles

    k_tiles = kt.split(k)
    dq_tiles, dk_tiles = jnp.zeros_like(q_tiles), jnp.zeros_like(k_tiles)  # per-device, like q, k
    # The key gradients travel with their key block and are back with its owner at the end.
    dq_tiles, dk_tiles = _around_the_ring(ring, grad_block, k_tiles, dq_tiles, dk_tiles)
    return qt.join(dq_tiles, (q.shape[-1],)), kt.join(dk_tiles, (k.shape[-1],))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _stream(q, k, mask, reduction, axis_name, tile, precision):
    return _forward(q, k, mask, reduction, axis_name, tile, precision)


def _stream_fwd(q, k, mask, reduction, axis_name, tile, precision):
    out = _forward(q, k, mask, reduction, axis_name, tile, precision)
    return out, (q, k, out)


def _stream_bwd(mask, reduction, axis_name, tile, precision, residuals, g):
    q, k, out = residuals
    return _backward(q, k, out, g, mask, reduction, axis_name, tile, precision)


_stream.defvjp(_stream_fwd, _stream_bwd)


def streaming_self(
    v: ArrayLike,
    *,
    mask: Mask,
    reduction: Reduction,
    axis_name: AxisName | None = None,
    precision: PrecisionLike = None,
    tile: int | None = None,
) -> jax.Array:
    """Row reductions of ``v`` (G, n, A, D) over the global rows of ``v`` themselves: (G, n, A).

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> from mvcl.backends import dense, streaming
      >>> out = streaming.streaming_self(v, mask="self", reduction=backends.LSE, tile=8)
      >>> bool(jax.numpy.allclose(out, dense.dense(v, v, mask="self", reduction=backends.LSE)))
      True
    """
    v = jnp.asarray(v)
    reductions.check_key_views(reduction, v.shape[2])
    tile = _check_tile(tile, v, axis_name)
    return _self(v, mask, reduction, axis_name, tile, precision)


def _ring_backward_self(v, out, g, mask, reduction, axis_name, tile, precision):
    """dv = (W + Wᵀ) v with the keys passed round the ring together with their (out, g)."""
    t = _Tiling(v, tile, reduction.key_views is not None)
    ring = _ring(axis_name)
    v_tiles, out_tiles, g_tiles = t.split(v), t.split(out), t.split(g)
    off = ring[1] * t.n

    def grad_block(acc_tiles, keys, _, src):
        k_tiles, k_out, k_g = keys
        k_off = src * t.n

        def per_query_tile(args):
            qi, q_tile, o, g_, acc = args

            def per_key_tile(ki, acc):
                k_tile = k_tiles[ki]
                s = jnp.einsum("gqd,gkd->gqk", q_tile, k_tile, precision=precision)
                keep = _keep(mask, t, qi, off, t, ki, k_off)
                # A = W + Wᵀ on the tile (S and the mask are symmetric)
                a = reduction.pair_weights(s, keep, o, g_, k_out[ki], k_g[ki])
                return acc + jnp.einsum("gqk,gkd->gqd", a, k_tile, precision=precision)

            return jax.lax.fori_loop(0, t.count, per_key_tile, acc, unroll=_unroll(t))

        xs = (jnp.arange(t.count), v_tiles, out_tiles, g_tiles, acc_tiles)
        return jax.lax.map(per_query_tile, xs), None

    keys = (v_tiles, out_tiles, g_tiles)  # each key block travels with its rows' out and g
    acc, _ = _around_the_ring(ring, grad_block, keys, jnp.zeros_like(v_tiles))
    return t.join(acc, (v.shape[-1],))


# One device: every off-diagonal tile pair (I < J) is computed once and serves both tile rows,
# its rows reducing into rows I and its columns into rows J (S_JI = S_IJᵀ): half the matmuls of
# the forward pass, and in the backward pass dv_I += A v_J, dv_J += Aᵀ v_I from one S.


def _pairs(count):
    """Tile pairs (I, J), I < J, row-major: two int32 arrays."""
    i, j = np.triu_indices(count, k=1)
    return jnp.asarray(i, jnp.int32), jnp.asarray(j, jnp.int32)


def _half_forward(v, mask, reduction, tile, precision):
    t = _Tiling(v, tile, reduction.key_views is not None)
    v_tiles = t.split(v)
    carry = reduction.init((t.count, t.g, t.size), v.dtype)
    unroll = _unroll(t)  # straight-line code for a few tiles

    def at(c, index):
        return tuple(x[index] for x in c)

    def put(c, index, new):
        return tuple(x.at[index].set(y) for x, y in zip(c, new))

    def diagonal(i, c):
        s = jnp.einsum("gqd,gkd->gqk", v_tiles[i], v_tiles[i], precision=precision)
        return put(c, i, reduction.update(at(c, i), s, _keep(mask, t, i, 0, t, i, 0)))

    first, second = _pairs(t.count)

    def off_diagonal(p, c):
        i, j = first[p], second[p]
        s = jnp.einsum("gqd,gkd->gqk", v_tiles[i], v_tiles[j], precision=precision)
        rows, cols = reduction.update_pair(at(c, i), at(c, j), s, _keep(mask, t, i, 0, t, j, 0))
        return put(put(c, i, rows), j, cols)

    carry = jax.lax.fori_loop(0, t.count, diagonal, carry, unroll=unroll)
    if t.count > 1:
        carry = jax.lax.fori_loop(0, first.shape[0], off_diagonal, carry, unroll=unroll)
    return t.join(reduction.finalize(carry), reduction.out_shape(()))


def _half_backward(v, out, g, mask, reduction, tile, precision):
    t = _Tiling(v, tile, reduction.key_views is not None)
    v_tiles, out_tiles, g_tiles = t.split(v), t.split(out), t.split(g)
    unroll = _unroll(t)

    def diagonal(i, acc):
        # S_II and its mask are symmetric: W + Wᵀ from rows and columns alike, with no transpose
        # (w + swapaxes(w) was slower: experiments/results/loss_benchmarks/README.md).
        v_i, out_i, g_i = v_tiles[i], out_tiles[i], g_tiles[i]
        s = jnp.einsum("gqd,gkd->gqk", v_i, v_i, precision=precision)
        a = reduction.pair_weights(s, _keep(mask, t, i, 0, t, i, 0), out_i, g_i, out_i, g_i)
        return acc.at[i].add(jnp.einsum("gqk,gkd->gqd", a, v_i, precision=precision))

    first, second = _pairs(t.count)

    def off_diagonal(p, acc):
        i, j = first[p], second[p]
        v_i, v_j = v_tiles[i], v_tiles[j]
        s = jnp.einsum("gqd,gkd->gqk", v_i, v_j, precision=precision)
        a = reduction.pair_weights(
            s,
            _keep(mask, t, i, 0, t, j, 0),
            out_tiles[i],
            g_tiles[i],
            out_tiles[j],
            g_tiles[j],
        )
        acc = acc.at[i].add(jnp.einsum("gqk,gkd->gqd", a, v_j, precision=precision))
        return acc.at[j].add(jnp.einsum("gqk,gqd->gkd", a, v_i, precision=precision))

    acc = jax.lax.fori_loop(0, t.count, diagonal, jnp.zeros_like(v_tiles), unroll=unroll)
    if t.count > 1:
        acc = jax.lax.fori_loop(0, first.shape[0], off_diagonal, acc, unroll=unroll)
    return t.join(acc, (v.shape[-1],))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _self(v, mask, reduction, axis_name, tile, precision):
    if axis_name is None:
        return _half_forward(v, mask, reduction, tile, precision)
    return _forward(v, v, mask, reduction, axis_name, tile, precision)


def _self_fwd(v, mask, reduction, axis_name, tile, precision):
    out = _self(v, mask, reduction, axis_name, tile, precision)
    return out, (v, out)


def _self_bwd(mask, reduction, axis_name, tile, precision, residuals, g):
    v, out = residuals
    if axis_name is None:
        return (_half_backward(v, out, g, mask, reduction, tile, precision),)
    return (_ring_backward_self(v, out, g, mask, reduction, axis_name, tile, precision),)


_self.defvjp(_self_fwd, _self_bwd)
