"""Multi-view baselines: pairwise (PWE) and average (AVG) aggregation, poly-view (PVC),
multi-positive InfoNCE.

AVG builds V two-view problems, (V, n, 2, D), and hands them all at once to a two-view loss's
``*_terms`` function (the backend runs them as V independent groups). PWE's V(V−1)/2 pairs share
their view blocks instead: a pair's energies are sums over the keys of its two views, so PWE reads
them from one reduction of all NV rows per key view (the work of one MV-InfoNCE energy, not of
V(V−1)/2 two-view problems of 2N rows each); with ``pair_loss="dhel"`` it needs only each view's
own energy, computed once per view.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mvcl.backends import AxisName, BackendLike, PrecisionLike
from mvcl.losses import _common as c
from mvcl.losses import two_view
from mvcl.losses.multiview import dhel_terms

PairLoss = Literal["infonce", "dhel"]
"""The two-view loss that PWE and AVG aggregate."""
PAIR_LOSSES = {"infonce": two_view.infonce_terms, "dhel": dhel_terms}


def _mean_pair_loss(
    pairs: jax.Array,
    temperature: ArrayLike,
    pair_loss: PairLoss,
    *,
    axis_name: AxisName | None,
    backend: BackendLike,
    precision: PrecisionLike,
) -> jax.Array:
    terms = PAIR_LOSSES[pair_loss](
        pairs, temperature, axis_name=axis_name, backend=backend, precision=precision
    )
    return c.mean_over_instances(jnp.mean(terms, axis=0), axis_name)


def pwe(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    pair_loss: PairLoss = "infonce",
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """Pairwise aggregation: the mean over the V(V−1)/2 view pairs a < b of the two-view loss.

        L = 2/(V(V−1)) Σ_{a<b} L_pair(u_a, u_b)

    computed without forming the pairs: with E[i, a, b] = LSE_{j ≠ i} s(u_ia, u_jb), one
    reduction of the N·V rows per key view, the InfoNCE form is

        L = 1/N Σ_i 1/(V(V−1)) Σ_{a≠b} softplus( logaddexp(E[i,a,a], E[i,a,b]) − s(u_ia, u_ib) )

    (MV-InfoNCE's O((NV)² D) work). With ``pair_loss="dhel"`` each view's own energy is shared by
    its V − 1 pairs.

    Args:
      z: (N, V, D) embeddings (the local shard under ``axis_name``).
      temperature: τ > 0.
      pair_loss: ``"infonce"`` or ``"dhel"``.
      axis_name: as in :func:`mvcl.losses.mv_infonce`.
      backend: as in :func:`mvcl.losses.mv_infonce`.
      precision: as in :func:`mvcl.losses.mv_infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> print(f"{losses.pwe(z, temperature=0.5):.4f}")
      2.7694
      >>> print(f"{losses.pwe(z, temperature=0.5, pair_loss='dhel'):.4f}")
      3.9483
      >>> two = z[:, :2]  # at V = 2, PWE is InfoNCE
      >>> pwe, infonce = losses.pwe(two, temperature=0.5), losses.infonce(two, temperature=0.5)
      >>> bool(jax.numpy.allclose(pwe, infonce))
      True

    References:
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
      2025, arXiv:2507.06979.
    """
    c.check_choice("pair_loss", pair_loss, PAIR_LOSSES)
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="pwe", axis_name=axis_name, precision=precision)
    v = u.shape[1]
    if pair_loss == "infonce":
        # Row (i, a) of pair {a, b} contrasts with the keys (j, a) and (j, b), j ≠ i: its
        # negatives' LSE is logaddexp(E[i, a, a], E[i, a, b]), E the energies per key view.
        # The mean over pairs a < b of the two rows' terms is the mean over ordered a ≠ b.
        energies = c.other_instance_energy(
            u,
            temperature,
            axis_name=axis_name,
            backend=backend,
            precision=precision,
            per_key_view=True,
        )  # (n, V, V)
        own = jnp.diagonal(energies, axis1=1, axis2=2)  # E[i, a, a]: (n, V)
        negatives = jnp.logaddexp(own[:, :, None], energies)
        s = c.view_similarities(u, temperature, precision)
        return c.mean_over_ordered_pairs(jax.nn.softplus(negatives - s), axis_name)
    # "dhel": a pair's DHEL energies are its two views' own (LSE_{j≠i} s(u_il, u_jl)), shared by
    # the V − 1 pairs of each view: computed once per view (V energies, not V(V − 1)). The mean
    # over pairs of E_a + E_b − s(u_a, u_b) is then (2/V)·Σ_l E_l − mean_{a<b} s(u_a, u_b).
    energies = c.energy(
        jnp.swapaxes(u, 0, 1)[:, :, None],
        temperature,
        mask="instance",
        axis_name=axis_name,
        backend=backend,
        precision=precision,
    )[..., 0]  # (V, n)
    s = c.view_similarities(u, temperature, precision)  # (n, V, V)
    a, b = np.triu_indices(v, k=1)
    terms = 2.0 / v * jnp.sum(energies, axis=0) - jnp.mean(s[:, a, b], axis=-1)
    return c.mean_over_instances(terms, axis_name)


def avg(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    pair_loss: PairLoss = "infonce",
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """Average aggregation: the mean over l of the two-view loss between u_l and ū_{−l}.

        L = 1/V Σ_l L_pair(u_l, ū_{−l}),   ū_{−l} = 1/(V−1) Σ_{m≠l} u_m

    ū_{−l} is the mean of the other views. With ``pair_loss="infonce"`` it
    is not renormalised (as in the authors' code, so its logits shrink); with ``"dhel"`` it is.
    Arguments as in :func:`pwe`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> print(f"{losses.avg(z, temperature=0.5):.4f}")
      2.7147

    References:
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
      2025, arXiv:2507.06979.
    """
    c.check_choice("pair_loss", pair_loss, PAIR_LOSSES)
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="avg", axis_name=axis_name, precision=precision)
    v = u.shape[1]
    others = (jnp.sum(u, axis=1, keepdims=True) - u) / (v - 1)  # ū_{−l} for every l: (n, V, D)
    if pair_loss == "dhel":
        others = c.normalize(others)
    pairs = jnp.stack([u, others], axis=2).swapaxes(0, 1)  # (V, n, 2, D)
    return _mean_pair_loss(
        pairs, temperature, pair_loss, axis_name=axis_name, backend=backend, precision=precision
    )


def pvc(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """Poly-view contrastive loss (Shidani et al. 2024), geometric aggregation.

        L = 1/(V(V−1)) Σ_{α≠β} 1/N Σ_j [ LSE_{(k,c) ∈ K_jβ} s(u_jα, u_kc) − s(u_jα, u_jβ) ]
        K_jβ = {(k, c): k ≠ j, c ∈ [V]} ∪ {(j, β)}

    The negatives are every view of every other instance; each ordered pair adds its one positive
    to that energy, so each term is softplus(E_jα − s(u_jα, u_jβ)) with E_jα the LSE over the
    negatives (never negative). Equals InfoNCE at V = 2. Arguments as in
    :func:`mvcl.losses.mv_infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> print(f"{losses.pvc(z, temperature=0.5):.4f}")
      3.4456

    References:
      Shidani et al., "Poly-View Contrastive Learning", ICLR 2024.
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
      2025, arXiv:2507.06979.
    """
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="pvc", axis_name=axis_name, precision=precision)
    negatives = c.other_instance_energy(
        u, temperature, axis_name=axis_name, backend=backend, precision=precision
    )  # (n, V): LSE over k ≠ j, all c
    s = c.view_similarities(u, temperature, precision)  # (n, V, V): s(u_jα, u_jβ)
    return c.mean_over_ordered_pairs(jax.nn.softplus(negatives[:, :, None] - s), axis_name)


def multipos_infonce(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """Multi-positive InfoNCE (SupCon-style): every other view of the instance is a positive.

        L = 1/N Σ_i 1/V Σ_l 1/(V−1) Σ_{m≠l} [ LSE_{(k,c) ≠ (i,l)} s(u_il, u_kc) − s(u_il, u_im) ]

    Each term is written log(1 + Σ_{x ≠ (i,m)} exp(s(u_il, x) − s(u_il, u_im))): the key (i, m)
    contributes exactly 1, so the term is never negative and exact in float32 near 0. The other
    instances' keys enter through their LSE E_il (the backend's reduction), the anchor's other
    views one by one. Arguments as in :func:`mvcl.losses.mv_infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> print(f"{losses.multipos_infonce(z, temperature=0.5):.4f}")
      3.5154

    References:
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
      2025, arXiv:2507.06979.
      (a baseline there; SupCon-style multi-positive InfoNCE).
    """
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="multipos_infonce", axis_name=axis_name, precision=precision)
    negatives = c.other_instance_energy(
        u, temperature, axis_name=axis_name, backend=backend, precision=precision
    )  # (n, V): E_il = LSE over k ≠ i, all c
    v = u.shape[1]
    s = c.view_similarities(u, temperature, precision)  # s[i, l, m] = s(u_il, u_im)
    # others[i, l, m, m'] = s(u_il, u_im') − s(u_il, u_im) for the views m' ∉ {l, m}.
    l, m, m2 = np.indices((v, v, v))
    other_views = (m2 != l) & (m2 != m)
    others = jnp.where(other_views, s[:, :, None, :] - s[:, :, :, None], -jnp.inf)
    rest = jnp.concatenate([others, (negatives[:, :, None] - s)[..., None]], axis=-1)
    per_pair = jax.nn.softplus(jax.nn.logsumexp(rest, axis=-1))  # (n, V, V)
    return c.mean_over_ordered_pairs(per_pair, axis_name)
