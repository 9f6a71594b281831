"""Geometry metrics of contrastive embeddings (definitions: ``docs/losses.md``).

Every metric is a pure, jit-able function of an embedding array:

- ``z`` of shape ``(N, V, D)``: N instances, V views, D features, instance-major as everywhere in
  mvcl. Only :func:`alignment` needs the view axis; every other metric flattens it to the
  ``M = N * V`` rows of an ``(M, D)`` matrix (so pairs of rows include the views of one instance).
- ``z`` of shape ``(M, D)``: rows, accepted by every metric except :func:`alignment`.

Where a metric lives on the sphere, rows are normalised inside:
``u = z / max(||z||, eps)``. Any float dtype is accepted (bfloat16, float16, float32, float64); the
metric is computed and returned in float32, or in float64 when ``jax_enable_x64`` is on
(:func:`mvcl.numerics.compute_dtype`; rows are normalised by :func:`mvcl.numerics.normalize`, as
in the losses).
Pairwise metrics (:func:`uniformity`, :func:`wasserstein_uniformity`) hold an ``(M, M)`` matrix:
evaluate them on a subsample when M is large.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mvcl.numerics import compute_dtype, normalize

_RANKME_EPS = 1e-7  # the epsilon of RankMe (Garrido et al. 2023, Roy & Vetterli 2007)


def _views(z: ArrayLike) -> jax.Array:
    """Checks an instance-major ``(N, V, D)`` array with V >= 2; casts it to the compute dtype."""
    z = jnp.asarray(z)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (N, V, D); got shape {z.shape}")
    if z.shape[0] < 1:
        raise ValueError(f"z needs at least one instance (N >= 1); got shape {z.shape}")
    if z.shape[1] < 2:
        raise ValueError(f"z needs at least two views (V >= 2); got shape {z.shape}")
    return z.astype(compute_dtype())


def _rows(z: ArrayLike, min_rows: int) -> jax.Array:
    """Flattens ``(N, V, D)`` or passes ``(M, D)`` to ``(M, D)`` rows in the compute dtype."""
    z = jnp.asarray(z)
    if z.ndim not in (2, 3):
        raise ValueError(f"z must have shape (M, D) or (N, V, D); got shape {z.shape}")
    rows = z.reshape(-1, z.shape[-1])
    if rows.shape[0] < min_rows:
        raise ValueError(f"z needs at least {min_rows} rows (M = N * V); got shape {z.shape}")
    return rows.astype(compute_dtype())


def _gram(u: jax.Array) -> jax.Array:
    """u uᵀ at full precision (accelerators default to reduced-precision matmuls)."""
    return jnp.matmul(u, u.T, precision=jax.lax.Precision.HIGHEST)


def _upper_mask(m: int) -> jax.Array:
    """(m, m) boolean mask of the pairs i < j."""
    idx = jnp.arange(m)
    return idx[:, None] < idx[None, :]


def alignment(z: ArrayLike, *, eps: float = 1e-12) -> jax.Array:
    """Alignment of Wang & Isola (2020), averaged over all view pairs.

        A = 1/N Σ_i 2/(V(V−1)) Σ_{l<m} ||u_il − u_im||²,   u = z / max(||z||, eps)

    For V = 2 this is mean_i ||x_i − y_i||². A is 0 when all views agree and 4 when views are
    antipodal (unit rows). Differences are formed directly, not as 2 − 2 cos, so A stays accurate
    near 0.

    Args:
      z: ``(N, V, D)`` embeddings, V >= 2.
      eps: floor of the row norm in the normalisation.

    Returns:
      Scalar in the compute dtype.

    Examples:
      >>> import jax
      >>> from mvcl import metrics
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))
      >>> print(f"{metrics.alignment(z):.4f}")
      1.9883
      >>> print(f"{metrics.alignment(jax.numpy.ones((8, 4, 16))):.4f}")  # all views agree
      0.0000

    References:
      Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment
      and Uniformity on the Hypersphere".
    """
    u = normalize(_views(z), eps)
    first, second = np.triu_indices(u.shape[1], k=1)
    diff = u[:, first] - u[:, second]  # (N, V(V-1)/2, D)
    return jnp.mean(jnp.sum(diff * diff, axis=-1))


def uniformity(z: ArrayLike, t: float = 2.0, *, eps: float = 1e-12) -> jax.Array:
    """Uniformity of Wang & Isola (2020) over all pairs of rows.

        U = log [ 2/(M(M−1)) Σ_{i<j} exp(−t ||u_i − u_j||²) ],   u = z / max(||z||, eps)

    computed as a masked logsumexp minus log(M(M−1)/2), so it is finite for any t and any
    collapse. ``(N, V, D)`` input is flattened to its M = N·V rows: every pair of rows counts,
    including two views of the same instance (Wang & Isola average a per-view value instead; call
    this on ``z[:, l]`` for that). Invariant to scaling rows by c > 0. Range [−4t, 0].

    Args:
      z: ``(M, D)`` or ``(N, V, D)`` embeddings, M >= 2 rows.
      t: kernel scale, > 0.
      eps: floor of the row norm in the normalisation.

    Returns:
      Scalar in the compute dtype.

    Examples:
      >>> import jax
      >>> from mvcl import metrics
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))
      >>> print(f"{metrics.uniformity(z):.4f}")
      -3.5774
      >>> print(f"{metrics.uniformity(jax.numpy.ones((32, 16))):.4f}")  # collapsed
      0.0000

    References:
      Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment
      and Uniformity on the Hypersphere".
    """
    if isinstance(t, (int, float)) and t <= 0:
        raise ValueError(f"t must be > 0; got {t}")
    u = normalize(_rows(z, min_rows=2), eps)
    m = u.shape[0]
    sq_norm = jnp.sum(u * u, axis=-1)
    sq_dist = jnp.maximum(sq_norm[:, None] + sq_norm[None, :] - 2.0 * _gram(u), 0.0)
    lse = jax.nn.logsumexp(-t * sq_dist, where=_upper_mask(m))
    return lse - jnp.log(m * (m - 1) / 2).astype(u.dtype)


def effective_rank(z: ArrayLike) -> jax.Array:
    """RankMe effective rank (Roy & Vetterli 2007; Garrido et al. 2023).

        p_k = σ_k / ||σ||₁ + 1e−7,   erank = exp(−Σ_k p_k log p_k)

    with σ the singular values of the un-centred, un-normalised ``(M, D)`` embedding matrix.
    Lies in about [1, min(M, D)]; k equal non-zero singular values give k. An all-zero matrix
    gives ≈ 1 (||σ||₁ is floored at the smallest normal float).

    Args:
      z: ``(M, D)`` or ``(N, V, D)`` embeddings (flattened to M = N·V rows).

    Returns:
      Scalar in the compute dtype.

    Examples:
      >>> import jax
      >>> from mvcl import metrics
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))
      >>> print(f"{metrics.effective_rank(z):.4f}")
      14.8421
      >>> print(f"{metrics.effective_rank(jax.numpy.eye(4)):.4f}")  # 4 equal singular values
      4.0000

    References:
      Roy & Vetterli 2007, the effective rank; Garrido et al. 2023, RankMe.
    """
    sigma = jnp.linalg.svd(_rows(z, min_rows=1), compute_uv=False)
    p = sigma / jnp.maximum(jnp.sum(sigma), jnp.finfo(sigma.dtype).tiny) + _RANKME_EPS
    return jnp.exp(-jnp.sum(p * jnp.log(p)))


def covariance_rank(z: ArrayLike, tol: float = 1e-5) -> jax.Array:
    """Numerical rank of the centred feature covariance C = XcᵀXc / (M − 1), a D × D matrix.

        rank = #{k : λ_k > tol · λ_max}

    with λ the eigenvalues of C, relative to the largest. The λ are taken as squared singular
    values of the centred data Xc (accurate to ~eps·σ_max in σ, i.e. ~eps² relative in λ, far
    below tol; forming C first would leave ~eps relative noise). The data are shifted by their
    first row before subtracting the mean, so identical rows centre to exactly zero and give rank
    0. ``tol`` on eigenvalues is ``sqrt(tol)`` on singular values of Xc.

    Args:
      z: ``(M, D)`` or ``(N, V, D)`` embeddings (flattened to M = N·V rows), M >= 2.
      tol: relative eigenvalue threshold, 0 <= tol < 1.

    Returns:
      int32 scalar in [0, min(M − 1, D)].

    Examples:
      >>> import jax
      >>> from mvcl import metrics
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))
      >>> int(metrics.covariance_rank(z))  # 32 rows of 16 features
      16
      >>> int(metrics.covariance_rank(jax.numpy.ones((32, 16))))  # identical rows
      0
    """
    if isinstance(tol, (int, float)) and not 0 <= tol < 1:
        raise ValueError(f"tol must be in [0, 1); got {tol}")
    x = _rows(z, min_rows=2)
    x = x - x[0]
    x = x - jnp.mean(x, axis=0)
    eig = jnp.square(jnp.linalg.svd(x, compute_uv=False))  # eigenvalues of C times (M - 1)
    return jnp.sum(eig > tol * jnp.max(eig)).astype(jnp.int32)


def _sphere_cosine_cdf(dim: int, num_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact CDF of c = a·b for a, b independent uniform on S^{dim−1}, on a uniform grid.

    c = cos θ with angle density ∝ sin^{dim−2} θ on [0, π] (smooth for every dim >= 2, unlike
    the density of c at ±1), so the mass of each grid cell [x_k, x_{k+1}] is an 8-point
    Gauss–Legendre integral over θ ∈ [arccos x_{k+1}, arccos x_k]; float64 NumPy, accurate to
    ~1e−12. Runs at trace time: dim and num_grid are static.

    Returns:
      x: ``(num_grid + 1,)`` grid −1 = x_0 < ... < x_K = 1 (spacing 2/num_grid).
      cdf: F(x_k), with F(−1) = 0 and F(1) = 1.
    """
    x = np.linspace(-1.0, 1.0, num_grid + 1)
    theta = np.arccos(x)  # decreasing from pi to 0
    lo, hi = theta[1:], theta[:-1]
    nodes, weights = np.polynomial.legendre.leggauss(8)
    half = (hi - lo) / 2
    angles = (hi + lo)[:, None] / 2 + half[:, None] * nodes
    density = np.exp((dim - 2) * np.log(np.sin(angles)))  # sin^{dim-2}, <= 1, no overflow
    cdf = np.concatenate([[0.0], np.cumsum(half * (density @ weights))])
    return x, cdf / cdf[-1]


def wasserstein_uniformity(z: ArrayLike, *, num_grid: int = 4096, eps: float = 1e-12) -> jax.Array:
    """W1 distance between pairwise cosines and the cosine law of the uniform sphere.

        W = ∫_{−1}^{1} |F_emp(x) − F(x)| dx

    F_emp is the empirical CDF of the P = M(M−1)/2 cosines u_i·u_j, i < j (rows normalised,
    clipped to [−1, 1]). F is the CDF of a·b for a, b independent uniform on S^{D−1}, density
    f(x) ∝ (1 − x²)^{(D−3)/2}, i.e. (1 + x)/2 ~ Beta((D−1)/2, (D−1)/2). W is 0 for a perfectly
    uniform code and near 1 for a collapsed one (all cosines 1: W = E|1 − c| = 1).

    Computation: F is tabulated exactly (float64, see ``_sphere_cosine_cdf``) on the uniform grid
    of ``num_grid`` cells and replaced by its linear interpolant F_h. The cosines and the grid are
    merged in one sort; between consecutive merged points F_emp is constant and F_h is linear, so
    ∫|F_emp − F_h| is integrated exactly (a linear function's absolute value, with its sign
    change). The only approximation is ∫|F − F_h| ≈ h²/6 · max f with h = 2/num_grid, i.e.
    ≈ 4e−8 · sqrt(D/(2π)) for large D at the default grid (< 2e−6 for D <= 8192; ≈ 1.3e−6
    for D = 2, whose density is singular at ±1), plus float rounding of the cosines.

    Args:
      z: ``(M, D)`` or ``(N, V, D)`` embeddings (flattened to M = N·V rows), M >= 2, D >= 2.
      num_grid: number of grid cells for F (static).
      eps: floor of the row norm in the normalisation.

    Returns:
      Scalar in the compute dtype. Memory O(M²), time O(M² log M) (one sort of M² + num_grid
      keys): evaluate it on a subsample when M is large.

    Examples:
      >>> import jax
      >>> from mvcl import metrics
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))
      >>> print(f"{metrics.wasserstein_uniformity(z):.4f}")
      0.0172
      >>> print(f"{metrics.wasserstein_uniformity(jax.numpy.ones((32, 16))):.4f}")  # collapsed
      1.0000
    """
    u = normalize(_rows(z, min_rows=2), eps)
    m, dim = u.shape
    if dim < 2:
        raise ValueError(f"z needs D >= 2 features; got shape {jnp.shape(z)}")
    if num_grid < 1:
        raise ValueError(f"num_grid must be >= 1; got {num_grid}")
    num_pairs = m * (m - 1) // 2
    grid, cdf = _sphere_cosine_cdf(dim, num_grid)
    grid = jnp.asarray(grid, u.dtype)
    cdf = jnp.asarray(cdf, u.dtype)

    upper = _upper_mask(m)
    cosines = jnp.where(upper, jnp.clip(_gram(u), -1.0, 1.0), jnp.inf)  # non-pairs sort last
    keys = jnp.concatenate([cosines.ravel(), grid])
    flags = jnp.concatenate([upper.ravel(), jnp.zeros(grid.shape, bool)]).astype(jnp.int32)
    points, is_pair = jax.lax.sort((keys, flags), num_keys=1)
    num_points = num_pairs + num_grid + 1
    points, is_pair = points[:num_points], is_pair[:num_points]

    # F_emp on (points[j], points[j+1]): the fraction of cosines at or before position j
    emp = (jnp.cumsum(is_pair)[:-1] / num_pairs).astype(u.dtype)
    # F_h at every point, on the uniform grid where node k sits at coordinate k
    scaled = (points + 1) * (num_grid / 2)
    cell = jnp.clip(jnp.floor(scaled), 0, num_grid - 1)
    index = cell.astype(jnp.int32)
    interp = cdf[index] + (scaled - cell) * (cdf[index + 1] - cdf[index])

    # ∫ |linear from a to b| over a width w: w(|a| + |b|)/2, or w(a² + b²)/(2(|a| + |b|)) across 0
    width = points[1:] - points[:-1]
    left, right = interp[:-1] - emp, interp[1:] - emp
    mag = jnp.abs(left) + jnp.abs(right)
    same_sign = left * right >= 0
    area = jnp.where(
        same_sign,
        mag / 2,
        (left * left + right * right) / (2 * jnp.where(same_sign, 1.0, mag)),
    )
    return jnp.sum(width * area)


def all_metrics(z: ArrayLike, *, t: float = 2.0, tol: float = 1e-5) -> dict[str, jax.Array]:
    """All geometry metrics of ``(N, V, D)`` embeddings, as a dict of scalar arrays.

    Keys: ``alignment``, ``uniformity`` (kernel scale ``t``), ``effective_rank``,
    ``covariance_rank`` (relative tolerance ``tol``, int32), ``wasserstein_uniformity``. Row
    metrics see the M = N·V flattened rows. Jit-able; use ``{k: float(v) ...}`` for logging.

    Examples:
      >>> import jax
      >>> from mvcl import metrics
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))
      >>> for name, value in metrics.all_metrics(z).items():
      ...     print(f"{name}: {float(value):.4f}")
      alignment: 1.9883
      uniformity: -3.5774
      effective_rank: 14.8421
      covariance_rank: 16.0000
      wasserstein_uniformity: 0.0172
    """
    return {
        "alignment": alignment(z),
        "uniformity": uniformity(z, t),
        "effective_rank": effective_rank(z),
        "covariance_rank": covariance_rank(z, tol),
        "wasserstein_uniformity": wasserstein_uniformity(z),
    }
