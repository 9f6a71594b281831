"""The materialising backends: ``dense`` (one device) and ``gather`` (all-gathered keys).

Both build the similarity matrix of the local query rows against the global key set in one einsum
and reduce it with the mask; autodiff gives the backward pass. ``gather`` first collects every
device's keys with ``lax.all_gather`` (whose transpose, ``psum_scatter``, returns each key gradient
to its owner). Memory per device is O(rows_local · rows_global).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvcl.kernels import reductions


def rows_against(q, k_all, *, q_offset, mask: str, reduction: reductions.Reduction):
    """Reduce ``q`` (G, n, A, D) against all keys ``k_all`` (G, N, B, D) in one matrix.

    ``q_offset`` is the global instance index of the first local query instance.
    """
    s = jnp.einsum("gnad,gmbd->gnamb", q, k_all, preferred_element_type=q.dtype)
    n, a = q.shape[1:3]
    m, b = k_all.shape[1:3]
    same_instance = (q_offset + jnp.arange(n))[:, None] == jnp.arange(m)[None, :]
    same_view = jnp.arange(a)[:, None] == jnp.arange(b)[None, :]
    keep = reductions.keep(mask, same_instance[:, None, :, None], same_view[None, :, None, :])
    return reduction.dense(s, keep, axes=(3, 4))


def dense(q, k, *, mask, reduction, axis_name=None):
    if axis_name is not None:
        raise ValueError(
            f"backend 'dense' is single-device, but axis_name={axis_name!r} was given; "
            "use backend='gather' or 'ring' inside shard_map/pmap"
        )
    return rows_against(q, k, q_offset=0, mask=mask, reduction=reduction)


def gather(q, k, *, mask, reduction, axis_name=None):
    if axis_name is None:
        return rows_against(q, k, q_offset=0, mask=mask, reduction=reduction)
    k_all = jax.lax.all_gather(k, axis_name, axis=1, tiled=True)
    return rows_against(
        q, k_all, q_offset=reductions.instance_offset(q, axis_name), mask=mask, reduction=reduction
    )
