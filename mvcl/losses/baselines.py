"""Multi-view baselines: pairwise (PWE) and average (AVG) aggregation, poly-view (PVC),
multi-positive InfoNCE.

PWE and AVG build G two-view problems, (G, n, 2, D), and hand them all at once to a two-view
loss's ``*_terms`` function (the backend runs them as G independent groups).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mvcl.losses import _common as c
from mvcl.losses import pairwise
from mvcl.losses.multiview import dhel_terms

PAIR_LOSSES = {"infonce": pairwise.infonce_terms, "dhel": dhel_terms}


def _mean_pair_loss(pairs, temperature, pair_loss, *, axis_name, backend):
    terms = PAIR_LOSSES[pair_loss](pairs, temperature, axis_name=axis_name, backend=backend)
    return c.mean_over_instances(jnp.mean(terms, axis=0), axis_name)


def pwe(
    z: jax.Array, *, temperature: float, pair_loss: str = "infonce", axis_name=None, backend="dense"
) -> jax.Array:
    """Pairwise aggregation: the mean over the V(V−1)/2 view pairs a < b of the two-view loss.

    Args:
      z: (N, V, D) embeddings (the local shard under ``axis_name``).
      temperature: τ > 0.
      pair_loss: ``"infonce"`` or ``"dhel"``.
      axis_name, backend: as in :func:`mvcl.losses.mv_infonce`.
    """
    c.check_choice("pair_loss", pair_loss, PAIR_LOSSES)
    c.check_temperature(temperature)
    u = c.prepare(z, loss="pwe", axis_name=axis_name)
    a, b = np.triu_indices(u.shape[1], k=1)
    pairs = jnp.stack([u[:, a], u[:, b]], axis=2).swapaxes(0, 1)  # (pairs, n, 2, D)
    return _mean_pair_loss(pairs, temperature, pair_loss, axis_name=axis_name, backend=backend)


def avg(
    z: jax.Array, *, temperature: float, pair_loss: str = "infonce", axis_name=None, backend="dense"
) -> jax.Array:
    """Average aggregation: the mean over l of the two-view loss between u_l and ū_{−l}.

    ū_{−l} = 1/(V−1) Σ_{m≠l} u_m is the mean of the other views. With ``pair_loss="infonce"`` it
    is not renormalised (as in the authors' code, so its logits shrink); with ``"dhel"`` it is.
    Arguments as in :func:`pwe`.
    """
    c.check_choice("pair_loss", pair_loss, PAIR_LOSSES)
    c.check_temperature(temperature)
    u = c.prepare(z, loss="avg", axis_name=axis_name)
    v = u.shape[1]
    others = (jnp.sum(u, axis=1, keepdims=True) - u) / (v - 1)  # ū_{−l} for every l: (n, V, D)
    if pair_loss == "dhel":
        others = c.normalize(others)
    pairs = jnp.stack([u, others], axis=2).swapaxes(0, 1)  # (V, n, 2, D)
    return _mean_pair_loss(pairs, temperature, pair_loss, axis_name=axis_name, backend=backend)


def pvc(z: jax.Array, *, temperature: float, axis_name=None, backend="dense") -> jax.Array:
    """Poly-view contrastive loss (Shidani et al. 2024), geometric aggregation.

        L = 1/(V(V−1)) Σ_{α≠β} 1/N Σ_j [ LSE_{(k,c) ∈ K_jβ} s(u_jα, u_kc) − s(u_jα, u_jβ) ]
        K_jβ = {(k, c): k ≠ j, c ∈ [V]} ∪ {(j, β)}

    The negatives are every view of every other instance; each ordered pair adds its one positive
    to that energy. Equals InfoNCE at V = 2. Arguments as in :func:`mvcl.losses.mv_infonce`.
    """
    c.check_temperature(temperature)
    u = c.prepare(z, loss="pvc", axis_name=axis_name)
    negatives = c.energy(
        u[None], temperature, mask="instance", axis_name=axis_name, backend=backend
    )[0]  # (n, V): LSE over k ≠ j, all c
    s = c.view_similarities(u, temperature)  # (n, V, V): s(u_jα, u_jβ)
    per_pair = jnp.logaddexp(negatives[:, :, None], s) - s
    v = u.shape[1]
    off_diagonal = ~np.eye(v, dtype=bool)
    terms = jnp.sum(jnp.where(off_diagonal, per_pair, 0.0), axis=(1, 2)) / (v * (v - 1))
    return c.mean_over_instances(terms, axis_name)


def multipos_infonce(
    z: jax.Array, *, temperature: float, axis_name=None, backend="dense"
) -> jax.Array:
    """Multi-positive InfoNCE (SupCon-style): every other view of the instance is a positive.

        L = 1/N Σ_i 1/V Σ_l 1/(V−1) Σ_{m≠l} [ LSE_{(k,c) ≠ (i,l)} s(u_il, u_kc) − s(u_il, u_im) ]

    Arguments as in :func:`mvcl.losses.mv_infonce`.
    """
    c.check_temperature(temperature)
    u = c.prepare(z, loss="multipos_infonce", axis_name=axis_name)
    rows = c.energy(u[None], temperature, mask="self", axis_name=axis_name, backend=backend)[
        0
    ]  # (n, V)
    v = u.shape[1]
    s = c.view_similarities(u, temperature)
    positives = (jnp.sum(s, axis=(1, 2)) - jnp.trace(s, axis1=1, axis2=2)) / (v * (v - 1))
    return c.mean_over_instances(jnp.mean(rows, axis=1) - positives, axis_name)
