"""The materialising backends: ``dense`` (one device) and ``gather`` (all-gathered keys).

Both build the similarity matrix of the local query rows against the global key set in one matmul
and reduce it with the mask. ``gather`` first collects every device's keys with
``lax.all_gather`` (whose transpose, ``psum_scatter``, returns each key gradient to its owner);
autodiff gives its backward pass for general keys, and :func:`gather_self` a one-matmul symmetric
backward pass for keys that are the query rows themselves (what every loss uses). Memory per
device is O(rows_local · rows_global). The maths is in docs/losses.md, "Backends".

``dense`` has a symmetric path, :func:`dense_self`, for keys that are the query rows themselves:
a ``custom_jvp`` whose tangent ``dS = X + Xᵀ`` (``X = dv vᵀ``) transposes, in reverse mode, into
the single matmul ``dv = (W + Wᵀ) v`` (``W = ∂out/∂S · g``), where autodiff of the plain
formula would do two (``W k`` and ``Wᵀ q``); ``W + Wᵀ`` is formed from S in one elementwise pass
(S is symmetric, so no transpose is read). Forward mode stays available, as the float64 gradient
checks need it. S is computed whole and kept: memory stays O(rows²), as this backend promises.
:func:`gather_self` builds its matrix the same way (`_self_matrix`, against the gathered rows).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mvcl.backends import reductions
from mvcl.backends.precision import PrecisionLike
from mvcl.backends.reductions import AxisName, Mask, Reduction


def _flat(x):
    """(G, n, A, D) -> (G, n·A, D): the rows, instance-major."""
    g, n, a, d = x.shape
    return x.reshape(g, n * a, d)


def _keep(mask, n, a, m, b, q_offset=0):
    """(n·A, m·B) mask of a query block (instances from ``q_offset``) against all keys."""
    rows = q_offset * a + jnp.arange(n * a)
    return reductions.keep_rows(mask, rows[:, None], jnp.arange(m * b)[None, :], a, b)


def rows_against(
    q: jax.Array,
    k_all: jax.Array,
    *,
    q_offset: jax.Array | int,
    mask: Mask,
    reduction: Reduction,
    precision: PrecisionLike = None,
) -> jax.Array:
    """Reduce ``q`` (G, n, A, D) against all keys ``k_all`` (G, N, B, D) in one matrix.

    ``q_offset`` is the global instance index of the first local query instance.
    """
    s = jnp.einsum(
        "gqd,gkd->gqk",
        _flat(q),
        _flat(k_all),
        precision=precision,
        preferred_element_type=q.dtype,
    )
    keep = _keep(mask, *q.shape[1:3], *k_all.shape[1:3], q_offset)
    return reduction.dense(s, keep[None]).reshape(reduction.out_shape(q.shape[:3]))


def dense(
    q: ArrayLike,
    k: ArrayLike,
    *,
    mask: Mask,
    reduction: Reduction,
    axis_name: AxisName | None = None,
    precision: PrecisionLike = None,
) -> jax.Array:
    """Row reductions of ``q`` (G, n, A, D) over ``k`` (G, n, B, D), one device: (G, n, A).

        out[g, i, a] = LSE_{(j, b) kept by mask} q_gia · k_gjb   (or Σ fn(q_gia · k_gjb) for sum_of)

    over the global key instances j and their views b (docs/losses.md, "Backends"); the
    (nA) × (nB) similarity matrix of each group is computed whole.

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> from mvcl.backends import dense
      >>> out = dense.dense(v, v, mask="self", reduction=backends.LSE)
      >>> out.shape
      (1, 8, 4)
      >>> print(f"{out[0, 0, 0]:.4f}")  # log Σ_{k ≠ (0, 0)} exp(v_00 · v_k)
      4.0330

    References:
      docs/losses.md, "Backends".
    """
    q, k = jnp.asarray(q), jnp.asarray(k)
    _single_device(axis_name)
    reductions.check_key_views(reduction, k.shape[2])
    return rows_against(q, k, q_offset=0, mask=mask, reduction=reduction, precision=precision)


def dense_self(
    v: ArrayLike,
    *,
    mask: Mask,
    reduction: Reduction,
    axis_name: AxisName | None = None,
    precision: PrecisionLike = None,
) -> jax.Array:
    """:func:`dense` with ``q = k = v``, differentiated through the symmetric tangent."""
    _single_device(axis_name)
    v = jnp.asarray(v)
    reductions.check_key_views(reduction, v.shape[2])
    return _dense_self(v, mask, reduction, precision)


def _single_device(axis_name):
    if axis_name is not None:
        raise ValueError(
            f"backend 'dense' is single-device, but axis_name={axis_name!r} was given; "
            "use backend='gather' or 'ring' inside shard_map/pmap"
        )


FEW_EXCLUDED: tuple[Mask, ...] = ("self", "instance")
"""Masks that leave out O(n·A²) pairs of n instances: `_self_matrix` sets those entries of S to
-inf rather than selecting over the whole matrix (for a log-sum-exp)."""


def _excluded(mask, n, a):
    """(row, col) ids of the pairs a mask leaves out when they are few (O(n·A²)), else None."""
    if mask == "self":
        rows = np.arange(n * a)
        return rows, rows
    if mask == "instance":
        instance, l, m = np.meshgrid(np.arange(n), np.arange(a), np.arange(a), indexing="ij")
        return (instance * a + l).ravel(), (instance * a + m).ravel()
    return None


def _self_matrix(v, mask, reduction, precision, keys=None, offset=0):
    """Rows, their (G, R, M) matrix against the keys, the keep mask and every row's output (G, R).

    ``keys`` (G, m, A, D) are the global rows, ``v``'s instances starting at instance ``offset``
    of them (``gather``); by default ``v`` itself (``dense``: a symmetric (G, R, R) matrix).

    The matrix is S = v kᵀ, or, for a log-sum-exp with a fixed shift (`Reduction.fixed_shift`),
    ``P = exp(S - bound)`` with the masked entries 0: then the weights of the backward pass are
    ``P`` times a per-row factor, and no exponential is computed twice. It is computed and
    reduced whole and kept for the backward pass (rather than a chunk of rows at a time in a
    loop, as this backend once did: the timings behind that choice are in
    ``experiments/results/loss_benchmarks/README.md``). For a log-sum-exp whose mask leaves out
    few pairs (self, instance) those entries of S are set to -inf instead (exp(-inf) = 0), so
    that nothing downstream needs a select over the whole matrix.
    """
    rows = _flat(v)
    key_rows = rows if keys is None else _flat(keys)
    m_keys = key_rows.shape[1]
    n, a = v.shape[1:3]
    s = jnp.einsum(
        "gqd,gkd->gqk", rows, key_rows, precision=precision, preferred_element_type=v.dtype
    )
    excluded = _excluded(mask, n, a) if reduction.name == "lse" else None
    if excluded is None:
        keep = _keep(mask, n, a, m_keys // a, a, offset)
    else:  # the global ids of the rows start at offset · A
        s, keep = s.at[:, excluded[0], offset * a + excluded[1]].set(-jnp.inf), np.True_
    if reduction.fixed_shift(v.dtype):
        p = jnp.where(keep, jnp.exp(s - reduction.bound), 0.0)
        return rows, p, np.True_, reduction.bound + jnp.log(reduction.over(jnp.sum, p, -1))
    return rows, s, keep, reduction.dense(s, keep)


def _matrix_keep(mask, reduction, dtype, n, a, m, offset=0):
    """The keep mask that goes with `_self_matrix`'s matrix of n against m instances, recomputed:
    True where the matrix carries the mask itself (P, 0 where masked, or S, -inf where masked),
    else the (1, n·A, m·A) mask."""
    if reduction.fixed_shift(dtype) or (reduction.name == "lse" and mask in FEW_EXCLUDED):
        return np.True_
    return _keep(mask, n, a, m, a, offset)[None]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _dense_self(v, mask, reduction, precision):
    return _self_matrix(v, mask, reduction, precision)[3].reshape(reduction.out_shape(v.shape[:3]))


@_dense_self.defjvp
def _dense_self_jvp(mask, reduction, precision, primals, tangents):
    # dS = X + Xᵀ with X = dv vᵀ, and d out_a = Σ_b W_ab dS_ab = Σ_b W_ab X_ab + Σ_b W_ba X_ba,
    # where W_ba = ∂out_b/∂S_ba is computed from S_ab = S_ba without transposing anything. In
    # reverse mode this transposes into X̄ = ḡ_a W_ab + ḡ_b W_ba (one elementwise pass over S)
    # and dv = X̄ v (one matmul).
    (v,), (dv,) = primals, tangents
    rows, m, keep, out = _self_matrix(v, mask, reduction, precision)
    x = jnp.einsum(
        "gqd,gkd->gqk", _flat(dv), rows, precision=precision, preferred_element_type=v.dtype
    )
    if reduction.fixed_shift(v.dtype):
        # W_ab = P_ab · exp(bound - out_a): the only matrix kept is P (the tangent is linear in
        # X with P as its coefficient), and the transpose is X̄ = P ⊙ (c_a + c_b), one pass.
        scale = jnp.where(jnp.isfinite(out), jnp.exp(reduction.bound - out), 0.0)
        px = m * x
        d_out = scale * (
            reduction.over(jnp.sum, px, -1, matmul=False) + reduction.over(jnp.sum, px, -2)
        )
    else:
        w_rows = reduction.weights(m, keep, out, -1)
        w_cols = reduction.weights(m, keep, out, -2)
        d_out = reduction.over(jnp.sum, w_rows * x, -1, matmul=False) + reduction.over(
            jnp.sum, w_cols * x, -2
        )
    shape = reduction.out_shape(v.shape[:3])
    return out.reshape(shape), d_out.reshape(shape)


def gather(
    q: ArrayLike,
    k: ArrayLike,
    *,
    mask: Mask,
    reduction: Reduction,
    axis_name: AxisName | None = None,
    precision: PrecisionLike = None,
) -> jax.Array:
    """Row reductions of ``q`` (G, n, A, D) over all devices' ``k`` (``all_gather``): (G, n, A).

        out[g, i, a] = LSE_{(j, b) kept by mask} q_gia · k_gjb   (or Σ fn(q_gia · k_gjb) for sum_of)

    over the global key instances j and their views b (docs/losses.md, "Backends"); each
    device computes its local rows against the gathered keys, (nA) × (NB) per group.

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> from mvcl.backends import dense
      >>> out = dense.gather(v, v, mask="self", reduction=backends.LSE)  # no axis_name: one device
      >>> bool(jax.numpy.allclose(out, dense.dense(v, v, mask="self", reduction=backends.LSE)))
      True

    References:
      docs/losses.md, "Backends".
    """
    q, k = jnp.asarray(q), jnp.asarray(k)
    reductions.check_key_views(reduction, k.shape[2])
    if axis_name is None:
        return rows_against(q, k, q_offset=0, mask=mask, reduction=reduction, precision=precision)
    k_all = jax.lax.all_gather(k, axis_name, axis=1, tiled=True)
    offset = reductions.instance_offset(q, axis_name)
    return rows_against(
        q, k_all, q_offset=offset, mask=mask, reduction=reduction, precision=precision
    )


def gather_self(
    v: ArrayLike,
    *,
    mask: Mask,
    reduction: Reduction,
    axis_name: AxisName | None = None,
    precision: PrecisionLike = None,
) -> jax.Array:
    """:func:`gather` with ``q = k = v``, with the symmetric backward pass written out.

    Autodiff of :func:`gather` would do two matmuls backward (``dq = W k_all`` and
    ``dk_all = Wᵀ q``, then ``psum_scatter`` the latter to the keys' owners). With keys = queries,
    S is symmetric across devices, so for local rows a and global rows b the transposed weight
    ``W_ba = ∂out_b/∂S_ba · g_b`` can be formed locally from ``S_ab`` once every device has every
    row's ``out`` and ``g`` (two all-gathers of vectors): ``dv_a = Σ_b (W_ab + W_ba) v_b`` is then
    one matmul against the gathered keys, with no cotangent to scatter back. The matrix is built
    as dense's (`_self_matrix`: ``P = exp(S - bound)`` with a fixed shift, so that the backward
    pass computes no exponential) and kept from the forward pass (the memory this backend
    already takes).
    """
    v = jnp.asarray(v)
    reductions.check_key_views(reduction, v.shape[2])
    if axis_name is None:
        return _dense_self(v, mask, reduction, precision)
    return _gather_self(v, mask, reduction, axis_name, precision)


def _gather_matrix(v, mask, reduction, axis_name, precision):
    """(gathered keys, the local rows' matrix against them, out of the local rows):
    `_self_matrix` against every device's rows."""
    k_all = jax.lax.all_gather(v, axis_name, axis=1, tiled=True)
    offset = reductions.instance_offset(v, axis_name)
    _, matrix, _, out = _self_matrix(v, mask, reduction, precision, k_all, offset)
    return k_all, matrix, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _gather_self(v, mask, reduction, axis_name, precision):
    out = _gather_matrix(v, mask, reduction, axis_name, precision)[2]
    return out.reshape(reduction.out_shape(v.shape[:3]))


def _gather_self_fwd(v, mask, reduction, axis_name, precision):
    k_all, matrix, out = _gather_matrix(v, mask, reduction, axis_name, precision)
    return out.reshape(reduction.out_shape(v.shape[:3])), (k_all, matrix, out)


def _gather_self_bwd(mask, reduction, axis_name, precision, residuals, g):
    k_all, matrix, out = residuals
    n, a = g.shape[1:3]
    offset = reductions.instance_offset(g, axis_name)  # read from g while it is (G, n, A, ...)
    g = g.reshape(out.shape)
    out_all = jax.lax.all_gather(out, axis_name, axis=1, tiled=True)
    g_all = jax.lax.all_gather(g, axis_name, axis=1, tiled=True)
    if reduction.fixed_shift(k_all.dtype):  # the matrix is P: W + Wᵀ without an exponential
        w = reduction.shifted_pair_weights(matrix, out, g, out_all, g_all)
    else:  # the mask is recomputed, not kept from the forward pass
        keep = _matrix_keep(mask, reduction, k_all.dtype, n, a, k_all.shape[1], offset)
        w = reduction.pair_weights(matrix, keep, out, g, out_all, g_all)
    dv = jnp.einsum(
        "gqk,gkd->gqd", w, _flat(k_all), precision=precision, preferred_element_type=k_all.dtype
    )
    return (dv.reshape(g.shape[0], n, a, -1),)


_gather_self.defvjp(_gather_self_fwd, _gather_self_bwd)
