"""Tests of mvcl.metrics against float64 NumPy/SciPy oracles written from the definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, spatial, special

from mvcl import metrics


@pytest.fixture
def x64():
    """float64 for the duration of one test; the context manager restores the previous state."""
    with jax.enable_x64(True):
        yield


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _alignment_oracle(z):
    u = _unit(z)
    v = z.shape[1]
    pairs = [(l, m) for l in range(v) for m in range(l + 1, v)]
    return np.mean([np.sum((u[:, l] - u[:, m]) ** 2, axis=-1) for l, m in pairs])


def _uniformity_oracle(x, t):
    d2 = spatial.distance.pdist(_unit(x.reshape(-1, x.shape[-1])), "sqeuclidean")
    return special.logsumexp(-t * d2) - np.log(d2.size)


def _effective_rank_oracle(x):
    s = np.linalg.svd(x.reshape(-1, x.shape[-1]), compute_uv=False)
    p = s / s.sum() + 1e-7
    return np.exp(-np.sum(p * np.log(p)))


def _covariance_rank_oracle(x, tol):
    eig = np.linalg.eigvalsh(np.cov(x.reshape(-1, x.shape[-1]), rowvar=False))
    return int(np.sum(eig > tol * eig.max()))


def _cosines(x):
    u = _unit(x.reshape(-1, x.shape[-1]))
    return np.sort(np.clip((u @ u.T)[np.triu_indices(u.shape[0], 1)], -1.0, 1.0))


def _sphere_cdf(dim):
    """CDF of a·b, a, b uniform on S^{dim-1}: (1 + x)/2 ~ Beta((dim-1)/2, (dim-1)/2)."""
    a = (dim - 1) / 2
    return lambda x: special.betainc(a, a, (1 + x) / 2)


def _wasserstein_oracle(x):
    """∫|F_emp − F| in closed form, interval by interval between sorted cosines.

    On [lo, hi] F_emp = q; with x* = clip(F⁻¹(q), lo, hi) and G(x) = ∫_{-1}^x F,
    ∫|F − q| = 2q x* − 2G(x*) + G(lo) + G(hi) − q(lo + hi). Integrating by parts,
    G(x) = x F(x) + C (1 − x²)^{α+1} / (2(α+1)), f = C (1 − x²)^α, α = (D−3)/2,
    C = 1/B(1/2, (D−1)/2).
    """
    dim = x.shape[-1]
    c = _cosines(x)
    n = c.size
    a, alpha = (dim - 1) / 2, (dim - 3) / 2
    cdf = _sphere_cdf(dim)
    norm = 1 / special.beta(0.5, a)

    def antiderivative(y):
        return y * cdf(y) + norm * (1 - y * y) ** (alpha + 1) / (2 * (alpha + 1))

    lo, hi = np.concatenate([[-1.0], c]), np.concatenate([c, [1.0]])
    q = np.arange(n + 1) / n
    cross = np.clip(2 * special.betaincinv(a, a, q) - 1, lo, hi)
    return np.sum(
        2 * q * cross
        - 2 * antiderivative(cross)
        + antiderivative(lo)
        + antiderivative(hi)
        - q * (lo + hi)
    )


# --- alignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("views", [2, 3, 5])
def test_alignment_matches_oracle(x64, views):
    z = np.random.default_rng(views).standard_normal((7, views, 6))
    np.testing.assert_allclose(metrics.alignment(z), _alignment_oracle(z), rtol=1e-12)


def test_alignment_identities():
    x = np.random.default_rng(0).standard_normal((9, 1, 5)).astype(np.float32)
    equal = np.concatenate([x, 3.0 * x, 0.5 * x], axis=1)  # same direction, any scale
    np.testing.assert_allclose(metrics.alignment(equal), 0.0, atol=1e-6)
    antipodal = np.concatenate([x, -2.0 * x], axis=1)
    np.testing.assert_allclose(metrics.alignment(antipodal), 4.0, rtol=1e-6)


# --- uniformity --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,t", [((12, 5), 2.0), ((6, 3, 4), 0.5), ((10, 2, 8), 50.0)])
def test_uniformity_matches_oracle(x64, shape, t):
    z = np.random.default_rng(1).standard_normal(shape)
    np.testing.assert_allclose(metrics.uniformity(z, t), _uniformity_oracle(z, t), rtol=1e-10)


def test_uniformity_row_scale_invariant_and_collapsed():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((16, 2, 8)).astype(np.float32)
    scale = rng.uniform(0.01, 100.0, (16, 2, 1)).astype(np.float32)
    base = float(metrics.uniformity(z))
    assert base < -1.0
    np.testing.assert_allclose(metrics.uniformity(z * scale), base, rtol=1e-5)
    collapsed = np.tile(z[:1, :1], (16, 2, 1)) * scale
    np.testing.assert_allclose(metrics.uniformity(collapsed), 0.0, atol=1e-5)
    # a large t stays finite (log space): antipodal pairs give exp(-4t) far below float32 range
    assert np.isfinite(float(metrics.uniformity(z, t=500.0)))


# --- effective rank ----------------------------------------------------------------------------


def test_effective_rank_matches_oracle(x64):
    z = np.random.default_rng(3).standard_normal((10, 3, 7)) * np.geomspace(1, 1e-3, 7)
    np.testing.assert_allclose(metrics.effective_rank(z), _effective_rank_oracle(z), rtol=1e-10)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_effective_rank_of_equal_singular_values(k):
    rng = np.random.default_rng(k)
    left, _ = np.linalg.qr(rng.standard_normal((40, k)))
    right, _ = np.linalg.qr(rng.standard_normal((16, k)))
    z = (2.5 * left @ right.T).astype(np.float32)
    np.testing.assert_allclose(metrics.effective_rank(z), k, rtol=1e-4)


# --- covariance rank ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 12])
def test_covariance_rank_of_affine_subspace(k):
    rng = np.random.default_rng(10 + k)
    dim = 12
    offset = 5.0 * rng.standard_normal(dim)
    z = rng.standard_normal((50, k)) @ rng.standard_normal((k, dim)) + offset
    assert int(metrics.covariance_rank(z.astype(np.float32))) == k
    assert int(metrics.covariance_rank(z.reshape(25, 2, dim).astype(np.float32))) == k


def test_covariance_rank_of_identical_rows_is_zero():
    z = np.tile(np.float32([0.1, -0.3, 7.0]), (33, 1))
    assert int(metrics.covariance_rank(z)) == 0


def test_covariance_rank_tolerance_matches_oracle(x64):
    rng = np.random.default_rng(4)
    # centred data with singular values 1, 1e-1, ..., 1e-4: covariance eigenvalue ratios 1e-2k
    basis, _ = np.linalg.qr(rng.standard_normal((60, 5)))
    basis -= basis.mean(axis=0)
    left, _ = np.linalg.qr(basis)
    right, _ = np.linalg.qr(rng.standard_normal((9, 5)))
    z = left @ np.diag(np.geomspace(1.0, 1e-4, 5)) @ right.T
    for tol, expected in [(1e-5, 3), (1e-7, 4), (1e-9, 5), (0.5, 1)]:
        assert _covariance_rank_oracle(z, tol) == expected
        assert int(metrics.covariance_rank(z, tol)) == expected


def test_covariance_rank_centres_the_data(x64):
    # one outlier row along a weak direction, at half the threshold of the centred covariance; an
    # uncentred scatter about that row would weigh the direction M times more and count it
    rows = 50
    z = np.zeros((rows, 3))
    z[:, 0] = np.random.default_rng(11).standard_normal(rows)
    z[0, 1] = np.sqrt(0.5e-5 * np.sum((z[:, 0] - z[:, 0].mean()) ** 2) / (1 - 1 / rows))
    assert _covariance_rank_oracle(z, 1e-5) == 1
    assert int(metrics.covariance_rank(z)) == 1
    assert int(metrics.covariance_rank(z, tol=1e-6)) == 2


# --- Wasserstein uniformity --------------------------------------------------------------------


def test_wasserstein_oracle_matches_quadrature():
    """The closed-form oracle agrees with adaptive quadrature of |F_emp − F|."""
    x = np.random.default_rng(5).standard_normal((5, 5))
    c = _cosines(x)
    cdf = _sphere_cdf(5)
    edges = np.concatenate([[-1.0], c, [1.0]])
    quad = sum(
        integrate.quad(lambda y, q=k / c.size: abs(cdf(y) - q), lo, hi, epsabs=1e-13)[0]
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
    )
    np.testing.assert_allclose(_wasserstein_oracle(x), quad, rtol=1e-9)


@pytest.mark.parametrize("dim", [2, 3, 8, 64])
def test_wasserstein_uniformity_matches_oracle(x64, dim):
    z = np.random.default_rng(dim).standard_normal((20, 2, dim))
    ref = _wasserstein_oracle(z)
    got = jax.jit(metrics.wasserstein_uniformity)(z)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, ref, atol=2e-6 if dim == 2 else 1e-7)


def test_wasserstein_uniformity_float32_matches_oracle():
    z = np.random.default_rng(6).standard_normal((30, 16))
    got = metrics.wasserstein_uniformity(z.astype(np.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, _wasserstein_oracle(z), atol=1e-6)


def test_wasserstein_uniformity_uniform_small_collapsed_large():
    rng = np.random.default_rng(7)
    w1 = jax.jit(metrics.wasserstein_uniformity)
    spread = rng.standard_normal((300, 8)).astype(np.float32)
    assert float(w1(spread)) < 0.02
    collapsed = spread[:1] + 1e-3 * rng.standard_normal((300, 8)).astype(np.float32)
    assert float(w1(collapsed)) > 0.5
    # exact collapse: all cosines are 1 and W1 = ∫F = 1 − E[a·b] = 1
    np.testing.assert_allclose(w1(np.ones((300, 8), np.float32)), 1.0, atol=1e-5)


# --- dtypes, jit, errors -----------------------------------------------------------------------


def test_bfloat16_input_computes_in_float32():
    z = jnp.asarray(np.random.default_rng(8).standard_normal((8, 2, 6)), jnp.bfloat16)
    as_f32 = z.astype(jnp.float32)
    for name in ["alignment", "uniformity", "effective_rank", "wasserstein_uniformity"]:
        fn = jax.jit(getattr(metrics, name))
        got = fn(z)
        assert got.dtype == jnp.float32, name
        np.testing.assert_allclose(got, fn(as_f32), rtol=1e-6, err_msg=name)
    assert metrics.covariance_rank(z).dtype == jnp.int32


def test_float64_under_x64(x64):
    z = np.random.default_rng(9).standard_normal((6, 2, 4))
    values = jax.jit(metrics.all_metrics)(z)
    for key, value in values.items():
        assert value.dtype == (jnp.int32 if key == "covariance_rank" else jnp.float64), key


def test_jit_all_metrics_matches_oracles():
    assert not jax.config.read("jax_enable_x64")  # the x64 fixture does not leak
    z = np.random.default_rng(10).standard_normal((12, 3, 5))
    got = jax.jit(metrics.all_metrics)(z.astype(np.float32))
    expected = {
        "alignment": _alignment_oracle(z),
        "uniformity": _uniformity_oracle(z, 2.0),
        "effective_rank": _effective_rank_oracle(z),
        "covariance_rank": _covariance_rank_oracle(z, 1e-5),
        "wasserstein_uniformity": _wasserstein_oracle(z),
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=1e-6, err_msg=key)
    assert int(got["covariance_rank"]) == 5


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: metrics.alignment(np.ones((4, 5))), "z must have shape"),
        (lambda: metrics.alignment(np.ones((4, 1, 5))), "two views"),
        (lambda: metrics.uniformity(np.ones((1, 5))), "at least 2 rows"),
        (lambda: metrics.uniformity(np.ones((4, 5)), t=0.0), "t must be"),
        (lambda: metrics.effective_rank(np.ones(5)), "z must have shape"),
        (lambda: metrics.covariance_rank(np.ones((4, 5)), tol=1.5), "tol must be"),
        (lambda: metrics.wasserstein_uniformity(np.ones((4, 1))), "D >= 2"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
