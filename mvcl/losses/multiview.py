"""The multi-view losses of Koromilas et al. (2025): MV-InfoNCE and MV-DHEL.

Notation (docs/losses.md): ``z`` is (N, V, D); ``u_il`` its unit rows; ``s(a, b) = a·b / τ``;
means over instances run over the global batch when ``axis_name`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mvcl.backends import AxisName, BackendLike, PrecisionLike
from mvcl.losses import _common as c

Negatives = Literal["all", "other_views"]
"""MV-InfoNCE's key set (see :func:`mv_infonce`)."""
NEGATIVES: tuple[Negatives, ...] = get_args(Negatives)


def mv_infonce(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    negatives: Negatives = "all",
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """MV-InfoNCE: one log-sum-exp per instance over all of its anchors.

        L = 1/N Σ_i [ LSE_{l ∈ [V], (j,m) ≠ (i,l)} s(u_il, u_jm)  −  LSE_{l ≠ m} s(u_il, u_im) ]

    The first LSE pools the V anchors of instance i against every key of the global batch but the
    anchor itself (positives and same-view negatives included). ``negatives="other_views"`` keeps
    only keys of another view (m ≠ l, any j). Cost O((NV)² D).

    The positives P_i = LSE_{l ≠ m} s(u_il, u_im) are part of the first LSE, which is therefore
    logaddexp(E_i, P_i) with E_i the LSE over the other instances' keys only; the loss is
    computed as softplus(E_i − P_i): never negative, and accurate in float32 when it is near 0
    (docs/losses.md, "Float32").

    Args:
      z: (N, V, D) embeddings (the local shard of instances under ``axis_name``).
      temperature: τ > 0.
      negatives: ``"all"`` (the authors' code) or ``"other_views"`` (the paper README's reading).
      axis_name: mesh axis of a surrounding ``shard_map``/``pmap`` to take negatives from the
        global batch; ``None`` for one device.
      backend: a name from :data:`mvcl.backends.NAMES` or a backend function.
      precision: matmul precision (:mod:`mvcl.backends.precision`): ``None`` is HIGHEST for
        float32/float64 input and the native passes for bfloat16/float16; a
        ``jax.lax.Precision`` or ``"default"``/``"high"``/``"highest"`` as given.

    Returns:
      The scalar loss over the global batch.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> print(f"{losses.mv_infonce(z, temperature=0.5):.4f}")
      2.3215
      >>> print(f"{losses.mv_infonce(z, temperature=0.5, negatives='other_views'):.4f}")
      2.0803
      >>> loss, grad = jax.value_and_grad(lambda z: losses.mv_infonce(z, temperature=0.5))(z)
      >>> grad.shape
      (8, 4, 16)

    References:
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
      2025, arXiv:2507.06979.
    """
    c.check_choice("negatives", negatives, NEGATIVES)
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="mv_infonce", axis_name=axis_name, precision=precision)
    mask = "instance" if negatives == "all" else "instance_and_view"
    rows = c.energy(
        u[None], temperature, mask=mask, axis_name=axis_name, backend=backend, precision=precision
    )[0]
    negative = c.logsumexp_last(rows)  # see its docstring for why not jax.nn.logsumexp
    positive = c.lse_over_pairs(c.view_similarities(u, temperature, precision), ordered=True)
    return c.mean_over_instances(jax.nn.softplus(negative - positive), axis_name)


def dhel_terms(
    u: jax.Array,
    temperature: ArrayLike,
    *,
    axis_name: AxisName | None,
    backend: BackendLike,
    precision: PrecisionLike,
    anchor_views: Sequence[int] | None = None,
) -> jax.Array:
    """Per-instance MV-DHEL terms for G independent groups of views: (G, n, V, D) -> (G, n).

        Σ_{l ∈ anchor_views} LSE_{j ≠ i} s(u_il, u_jl)  −  LSE_{l < m} s(u_il, u_im)

    Each view is its own key set (V·N² work, not (VN)²). ``anchor_views`` (default: all) limits
    the uniformity term to some views, as in two-view DHEL with ``anchor_only``.
    """
    g, n, v, d = u.shape
    per_view = jnp.swapaxes(u, 1, 2).reshape(g * v, n, 1, d)
    rows = c.energy(
        per_view,
        temperature,
        mask="instance",
        axis_name=axis_name,
        backend=backend,
        precision=precision,
    ).reshape(g, v, n)
    if anchor_views is not None:
        rows = rows[:, anchor_views]
    alignment = c.lse_over_pairs(c.view_similarities(u, temperature, precision), ordered=False)
    return jnp.sum(rows, axis=1) - alignment


def mv_dhel(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """MV-DHEL: uniformity within each view, alignment over all view pairs, decoupled.

        L = 1/N Σ_i [ Σ_{l ∈ [V]} LSE_{j ≠ i} s(u_il, u_jl)  −  LSE_{l < m} s(u_il, u_im) ]

    Positives never enter the energy. Cost O(V N² D): linear in V. Arguments as in
    :func:`mv_infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> print(f"{losses.mv_dhel(z, temperature=0.5):.4f}")
      6.0199
      >>> print(f"{losses.mv_dhel(z, temperature=0.5, backend='blockwise'):.4f}")  # any backend
      6.0199

    References:
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
      2025, arXiv:2507.06979.
    """
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="mv_dhel", axis_name=axis_name, precision=precision)
    terms = dhel_terms(
        u[None], temperature, axis_name=axis_name, backend=backend, precision=precision
    )[0]
    return c.mean_over_instances(terms, axis_name)
