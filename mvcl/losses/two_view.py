"""Two-view losses (V = 2): InfoNCE / NT-Xent, DCL, DHEL, KCL.

``x_i = u_i0``, ``y_i = u_i1``; the key set of InfoNCE and DCL is all 2N rows of the global
batch. The ``*_terms`` functions take G independent pairs of views, (G, n, 2, D), already
normalised, and return per-instance terms (G, n); the baselines of :mod:`mvcl.losses.baselines`
reuse them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mvcl import backends
from mvcl.backends import AxisName, BackendLike, PrecisionLike
from mvcl.losses import _common as c
from mvcl.losses.multiview import dhel_terms


def dcl_rows(
    u: jax.Array,
    temperature: ArrayLike,
    *,
    axis_name: AxisName | None,
    backend: BackendLike,
    precision: PrecisionLike,
) -> jax.Array:
    """LSE_{k ∉ {x_i, y_i}} s(·, k) of every row: (G, n, 2, D) -> (G, n, 2)."""
    return c.energy(
        u, temperature, mask="instance", axis_name=axis_name, backend=backend, precision=precision
    )


def _positive(u, temperature):
    """s(x_i, y_i): (G, n, 2, D) -> (G, n)."""
    return jnp.sum(u[:, :, 0] * u[:, :, 1], axis=-1) / temperature


def infonce_terms(
    u: jax.Array,
    temperature: ArrayLike,
    *,
    axis_name: AxisName | None,
    backend: BackendLike,
    precision: PrecisionLike,
) -> jax.Array:
    """½[(LSE_{k ≠ x_i} s(x_i, k) − s(x_i, y_i)) + (LSE_{k ≠ y_i} s(y_i, k) − s(y_i, x_i))].

    Each half is softplus(LSE_{k ∉ {x_i, y_i}} s − s(x_i, y_i)): the positive taken out of the
    LSE, so that the term is never negative and exact in float32 near 0.
    """
    rows = dcl_rows(u, temperature, axis_name=axis_name, backend=backend, precision=precision)
    return jnp.mean(jax.nn.softplus(rows - _positive(u, temperature)[..., None]), axis=-1)


def dcl_terms(
    u: jax.Array,
    temperature: ArrayLike,
    *,
    axis_name: AxisName | None,
    backend: BackendLike,
    precision: PrecisionLike,
) -> jax.Array:
    """InfoNCE with the positive removed from each LSE: keys k ∉ {x_i, y_i}."""
    rows = dcl_rows(u, temperature, axis_name=axis_name, backend=backend, precision=precision)
    return jnp.mean(rows, axis=-1) - _positive(u, temperature)


def infonce(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """InfoNCE / NT-Xent (SimCLR), symmetric over the two views.

        L = 1/N Σ_i ½[ (LSE_{k ≠ x_i} s(x_i, k) − s(x_i, y_i))
                     + (LSE_{k ≠ y_i} s(y_i, k) − s(y_i, x_i)) ]

    Args:
      z: (N, 2, D) embeddings (the local shard under ``axis_name``).
      temperature: τ > 0.
      axis_name: mesh axis of a surrounding ``shard_map``/``pmap``, or ``None``.
      backend: a name from :data:`mvcl.backends.NAMES` or a backend function.
      precision: matmul precision, as in :func:`mvcl.losses.mv_infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 2, 16))  # N = 8, V = 2, D = 16
      >>> print(f"{losses.infonce(z, temperature=0.5):.4f}")
      2.6528

    References:
      Chen et al. 2020 (SimCLR), the NT-Xent loss.
    """
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="infonce", axis_name=axis_name, views=2, precision=precision)
    terms = infonce_terms(
        u[None], temperature, axis_name=axis_name, backend=backend, precision=precision
    )
    return c.mean_over_instances(terms[0], axis_name)


def dcl(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """Decoupled contrastive loss (Yeh et al. 2022): InfoNCE without the positive in the LSE.

        L = 1/N Σ_i ½[ (LSE_{k ∉ {x_i, y_i}} s(x_i, k) − s(x_i, y_i))
                     + (LSE_{k ∉ {x_i, y_i}} s(y_i, k) − s(y_i, x_i)) ]

    Arguments as in :func:`infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 2, 16))  # N = 8, V = 2, D = 16
      >>> print(f"{losses.dcl(z, temperature=0.5):.4f}")
      2.5717

    References:
      Yeh et al. 2022, decoupled contrastive learning.
    """
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="dcl", axis_name=axis_name, views=2, precision=precision)
    terms = dcl_terms(
        u[None], temperature, axis_name=axis_name, backend=backend, precision=precision
    )
    return c.mean_over_instances(terms[0], axis_name)


def dhel(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    anchor_only: bool = False,
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """Decoupled hyperspherical energy loss (Koromilas et al. 2024).

        L = 1/N Σ_i [ LSE_{j≠i} s(x_i, x_j) + LSE_{j≠i} s(y_i, y_j) − s(x_i, y_i) ]

    This is MV-DHEL at V = 2. ``anchor_only=True`` drops the y energy. Other arguments as in
    :func:`infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 2, 16))  # N = 8, V = 2, D = 16
      >>> print(f"{losses.dhel(z, temperature=0.5):.4f}")
      3.7749
      >>> print(f"{losses.mv_dhel(z, temperature=0.5):.4f}")  # MV-DHEL at V = 2
      3.7749

    References:
      Koromilas et al., "Bridging Mini-Batch and Asymptotic Analysis in Contrastive
      Learning: From InfoNCE to Kernel-Based Losses", ICML 2024, arXiv:2405.18045.
    """
    c.check_temperature(temperature)
    u, precision = c.prepare(z, loss="dhel", axis_name=axis_name, views=2, precision=precision)
    terms = dhel_terms(
        u[None],
        temperature,
        axis_name=axis_name,
        backend=backend,
        precision=precision,
        anchor_views=[0] if anchor_only else None,
    )
    return c.mean_over_instances(terms[0], axis_name)


def _gaussian(sq_dist, t):
    return jnp.exp(-t * sq_dist)


def _log(sq_dist, t):
    return -0.5 * jnp.log(t * sq_dist + 1.0)


def _imq(sq_dist, t):
    return t / jnp.sqrt(t * t + sq_dist)


def _riesz(sq_dist, t):
    if t > 0:
        return sq_dist ** (-t / 2)
    # −δ^|t| is 0 at δ = 0 with derivative 0 there (the limit for t < −1, the minimal
    # subgradient at t = −1); the double where keeps the power from being differentiated at 0.
    positive = sq_dist > 0
    return jnp.where(positive, -(jnp.where(positive, sq_dist, 1.0) ** (-t / 2)), 0.0)


KernelName = Literal["gaussian", "log", "imq", "riesz"]
"""KCL's kernels (see :func:`kcl`)."""
KERNELS: dict[KernelName, Callable[[jax.Array, float], jax.Array]] = {
    "gaussian": _gaussian,
    "log": _log,
    "imq": _imq,
    "riesz": _riesz,
}


def kcl(
    z: ArrayLike,
    *,
    kernel: KernelName = "gaussian",
    t: float = 2.0,
    gamma: float = 16.0,
    axis_name: AxisName | None = None,
    backend: BackendLike = "dense",
    precision: PrecisionLike = None,
) -> jax.Array:
    """Kernel contrastive loss (Koromilas et al. 2024); no temperature.

        L = −2 · mean_i k(x_i, y_i) + γ [ mean_{i<j} k(x_i, x_j) + mean_{i<j} k(y_i, y_j) ]

    with δ = ||a − b|| of unit vectors (δ² = 2 − 2 a·b): gaussian exp(−t δ²); log
    −½ log(t δ² + 1); imq t / sqrt(t² + δ²); riesz δ^(−t) for t > 0 and −δ^|t| for t < 0.
    For riesz with t < 0 an identical pair (δ = 0) gets derivative 0: the limit for t ≤ −1;
    for −1 < t < 0 the derivative grows like δ^(|t|−1) as δ → 0, so 0 at δ = 0 is a convention
    and nearly identical pairs get very large gradients. For t > 0 an identical pair is a pole.
    The log kernel's alignment term is −log(t δ² + 1) (no ½) while its energy terms keep
    −½ log(t δ² + 1), as in the authors' code (docs/losses.md, "KCL").

    Args:
      z: (N, 2, D) embeddings (the local shard under ``axis_name``).
      kernel: one of :data:`KERNELS`.
      t: the kernel parameter (non-zero for riesz).
      gamma: weight of the uniformity term.
      axis_name: as in :func:`infonce`.
      backend: as in :func:`infonce`.
      precision: as in :func:`infonce`.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 2, 16))  # N = 8, V = 2, D = 16
      >>> print(f"{losses.kcl(z):.4f}")  # gaussian kernel, t = 2, gamma = 16
      0.7177
      >>> print(f"{losses.kcl(z, kernel='log', t=1.0):.4f}")
      -15.8666

    References:
      Koromilas et al., "Bridging Mini-Batch and Asymptotic Analysis in Contrastive
      Learning: From InfoNCE to Kernel-Based Losses", ICML 2024, arXiv:2405.18045.
    """
    c.check_choice("kernel", kernel, KERNELS)
    if kernel == "riesz" and t == 0:
        raise ValueError("t must be non-zero for the riesz kernel")
    u, precision = c.prepare(z, loss="kcl", axis_name=axis_name, views=2, precision=precision)
    n_global = u.shape[0] * c.axis_size(axis_name)

    def of_dot(dot):
        return KERNELS[kernel](jnp.maximum(2.0 - 2.0 * dot, 0.0), t)

    per_view = jnp.swapaxes(u, 0, 1)[:, :, None, :]  # (2, n, 1, D): each view its own key set
    row_sums = c.energy(
        per_view,
        1.0,
        mask="instance",
        axis_name=axis_name,
        backend=backend,
        precision=precision,
        reduction=backends.sum_of(of_dot),
    )[..., 0]
    # Σ_{i≠j} is twice Σ_{i<j}, over N(N−1)/2 pairs: mean_{i<j} = Σ_i rows_i / (N(N−1)).
    uniformity = jnp.sum(row_sums, axis=0) / (n_global - 1)
    # The positive pair's δ² from the difference: relatively exact when x_i ≈ y_i, where
    # 2 − 2 x·y cancels (the energies need the matmul's x·y; their pairs are rarely that close).
    alignment = KERNELS[kernel](jnp.sum(jnp.square(u[:, 0] - u[:, 1]), axis=-1), t)
    if kernel == "log":
        alignment = 2.0 * alignment  # the authors' alignment term: −log(t δ² + 1), no ½
    return c.mean_over_instances(-2.0 * alignment + gamma * uniformity, axis_name)
