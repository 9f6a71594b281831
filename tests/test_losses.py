"""Single-device tests of mvcl.losses against the float64 NumPy oracle (tests/oracle.py).

Groups: the spec's golden table; oracle agreement (loss and gradient, float64 and float32);
every backend against dense; identities and invariances; finiteness at N = 4096 under extreme
temperatures, norms and bfloat16; dtypes; jit, check_grads and vmap.

Compilation dominates the run time, so every loss is jitted once per (loss, backend, shape) and
the temperature is a traced argument: one compilation serves every temperature.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from jax.test_util import check_grads

from mvcl import backends, losses, parallel

# ------------------------------------------------------------------------------------------------
# The losses under test: every test case of every loss's record (mvcl.losses.LossSpec.cases), each
# checked against the oracle function of the same name with the same options.


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    spec: losses.LossSpec
    options: tuple  # keyword options, as (key, value) pairs

    @property
    def name(self) -> str:  # registry name
        return self.spec.name

    @property
    def two_view(self) -> bool:
        return self.spec.two_view

    @property
    def has_temperature(self) -> bool:
        return self.spec.temperature

    @property
    def view_symmetric(self) -> bool:
        return dict(self.options).get("anchor_only") is not True

    def __call__(self, z, temperature, backend="dense", axis_name=None):
        options = dict(self.options, backend=backend, axis_name=axis_name)
        return self.spec.call(z, temperature=temperature, **options)

    def reference(self, z, temperature):
        """The float64 NumPy oracle of the same loss and options."""
        fn = getattr(oracle, self.name)
        if self.has_temperature:
            return fn(z, temperature, **dict(self.options))
        return fn(z, **dict(self.options))

    def views(self, v):
        return 2 if self.two_view else v


CASES = [Case(case.id, spec, case.options) for spec, case in losses.registry.CASES]
CASE_IDS = [c.id for c in CASES]
BY_ID = {c.id: c for c in CASES}
MULTI_VIEW = [c for c in CASES if not c.two_view]
DEFAULTS = [c for c in CASES if not c.options]  # one case per registry name

TEMPERATURES = (0.05, 0.5, 2.0)


def test_every_registry_loss_is_covered():
    assert {c.name for c in CASES} == set(losses.NAMES)
    assert {c.name for c in DEFAULTS} == set(losses.NAMES)
    assert len(CASE_IDS) == len(set(CASE_IDS))
    assert set(losses.TWO_VIEW) == {"infonce", "dcl", "dhel", "kcl"}
    assert losses.TEMPERATURE_FREE == ("kcl",)


def _backend(spec):
    """A hashable backend spec -> what ``backend=`` takes: a name, or (name, tile) for a tiling."""
    if isinstance(spec, str):
        return spec
    name, tile = spec
    return backends.get(name, tile=tile)


@functools.lru_cache(maxsize=None)
def jitted(case_id, backend="dense", grad=False, sharded=False):
    """jit of the loss (or its value and gradient) as a function of (z, temperature);
    ``sharded``: inside a ``shard_map`` over one device, so that gather and ring take their
    multi-device code paths (collectives over an axis of size 1)."""
    case, fn_backend = BY_ID[case_id], _backend(backend)

    def loss(z, temperature):
        if not sharded:
            return case(z, temperature, backend=fn_backend)
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("d",))
        per_device = functools.partial(case, temperature=temperature, backend=fn_backend)
        return jax.shard_map(
            lambda z: per_device(z, axis_name="d"),
            mesh=mesh,
            in_specs=jax.sharding.PartitionSpec("d"),
            out_specs=jax.sharding.PartitionSpec(),
        )(z)

    return jax.jit(jax.value_and_grad(loss) if grad else loss)


def _z(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _close(actual, expected, tol, err_msg=""):
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=tol, atol=tol, err_msg=err_msg
    )


# ------------------------------------------------------------------------------------------------
# 1. Golden values (docs/losses.md): z = default_rng(0).standard_normal((6, V, 8)), τ = 0.5.

GOLDEN = {
    "mv_infonce": (2.731915, 2.322870, 2.023857, 2.017126),
    "mv_dhel": (3.618255, 5.088160, 5.142580, 6.411695),
    "pwe-infonce": (2.713738, 2.893001, 2.571359, 2.596342),
    "avg-infonce": (2.713738, 2.754523, 2.453797, 2.462393),
    "pwe-dhel": (3.618255, 4.354570, 3.557853, 3.553189),
    "avg-dhel": (3.618255, 4.361941, 3.466865, 3.582315),
    "pvc": (2.713738, 3.220308, 3.229068, 3.481879),
    "multipos_infonce": (2.713738, 3.273356, 3.324528, 3.589119),
    "infonce": (2.713738, None, None, None),  # None: V != 2 is an error
    "dhel": (3.618255, None, None, None),
}
GOLDEN_CELLS = [
    (case_id, v, value) for case_id, row in GOLDEN.items() for v, value in zip(range(2, 6), row)
]
GOLDEN_IDS = [f"{case_id}-V{v}" for case_id, v, _ in GOLDEN_CELLS]


def _golden_z(v):
    return np.random.default_rng(0).standard_normal((6, v, 8))


@pytest.mark.parametrize("case_id, v, value", GOLDEN_CELLS, ids=GOLDEN_IDS)
def test_golden_value(x64, case_id, v, value):
    case = BY_ID[case_id]
    z = jnp.asarray(_golden_z(v))
    if value is None:
        with pytest.raises(ValueError, match="two-view"):
            case(z, 0.5)
        return
    loss = jitted(case_id)(z, 0.5)
    assert loss.dtype == jnp.float64
    assert abs(float(loss) - value) < 1e-6


@pytest.mark.parametrize(
    "case_id, v, value",
    [c for c in GOLDEN_CELLS if c[2] is not None],
    ids=[i for i, c in zip(GOLDEN_IDS, GOLDEN_CELLS) if c[2] is not None],
)
def test_oracle_reproduces_golden_value(case_id, v, value):
    assert abs(BY_ID[case_id].reference(_golden_z(v), 0.5) - value) < 1e-6


@pytest.mark.parametrize("case", [c for c in CASES if c.two_view], ids=lambda c: c.id)
@pytest.mark.parametrize("v", [1, 3, 5])
def test_two_view_losses_reject_other_view_counts(case, v):
    with pytest.raises(ValueError, match="two-view"):
        case(jnp.asarray(_z((6, v, 8), dtype=np.float32)), 0.5)


# ------------------------------------------------------------------------------------------------
# 2. Agreement with the oracle. float64: loss and gradient to 1e-9, the gradient against the
# oracle's complex-step derivative (exact to rounding, see tests/oracle.py). float32: loss and
# gradient to 1e-4 relative. Shapes cover N in {2, 5, 16}, V in {2, 3, 5} and D in {3, 16}; each
# compiled function is evaluated at every temperature.

MV_SHAPES = [(2, 5, 3), (5, 3, 16), (16, 2, 3), (16, 5, 16)]
TWO_VIEW_SHAPES = [(2, 2, 16), (5, 2, 3), (16, 2, 16)]
ORACLE_GRID = [(c, s) for c in CASES for s in (TWO_VIEW_SHAPES if c.two_view else MV_SHAPES)]
ORACLE_IDS = [f"{c.id}-{'x'.join(map(str, s))}" for c, s in ORACLE_GRID]
FULL_GRADIENT_MAX_SIZE = 100  # every partial derivative up to this many entries, else directions
DIRECTIONS = 6


def _temperatures(case):
    return TEMPERATURES if case.has_temperature else (1.0,)


def _check_gradient(f, z, grad, tol, seed):
    """``grad`` against the complex-step gradient of the float64 oracle ``f`` at ``z``.

    Small inputs: every partial derivative. Larger ones: the derivative along random directions,
    which a wrong gradient misses only with probability zero.
    """
    scale = np.max(np.abs(grad))
    if z.size <= FULL_GRADIENT_MAX_SIZE:
        expected = oracle.complex_step_grad(f, z)
        np.testing.assert_allclose(grad, expected, rtol=tol, atol=tol * scale)
        return
    rng = np.random.default_rng(seed)
    for _ in range(DIRECTIONS):
        direction = rng.standard_normal(z.shape)
        direction /= np.linalg.norm(direction)
        expected = oracle.complex_step_directional(f, z, direction)
        assert abs(np.vdot(grad, direction) - expected) <= tol * scale, (
            np.vdot(grad, direction),
            expected,
        )


@pytest.mark.parametrize("case, shape", ORACLE_GRID, ids=ORACLE_IDS)
def test_matches_oracle_float64(x64, case, shape):
    z = _z(shape, seed=sum(shape))
    f = jitted(case.id, grad=True)
    for tau in _temperatures(case):
        loss, grad = f(jnp.asarray(z), tau)
        assert loss.dtype == jnp.float64 and grad.dtype == jnp.float64
        reference = functools.partial(case.reference, temperature=tau)
        _close(loss, reference(z), 1e-9, f"τ={tau}")
        _check_gradient(reference, z, np.asarray(grad), 1e-9, seed=len(shape))


@pytest.mark.parametrize("case, shape", ORACLE_GRID, ids=ORACLE_IDS)
def test_matches_oracle_float32(case, shape):
    z = _z(shape, seed=sum(shape), dtype=np.float32)
    f = jitted(case.id, grad=True)
    for tau in _temperatures(case):
        loss, grad = f(jnp.asarray(z), np.float32(tau))
        assert loss.dtype == jnp.float32 and grad.dtype == jnp.float32
        reference = functools.partial(case.reference, temperature=tau)
        z64 = z.astype(np.float64)
        np.testing.assert_allclose(float(loss), reference(z64), rtol=1e-4, err_msg=f"τ={tau}")
        _check_gradient(reference, z64, np.asarray(grad, np.float64), 1e-4, seed=len(shape))


def test_logsumexp_last_has_the_value_and_derivatives_of_jax_logsumexp(x64):
    # mv_infonce pools its anchors' energies with it (a custom_jvp, for speed): value, gradient
    # and Hessian must be jax.nn.logsumexp's, also where an entry is -inf.
    from mvcl.losses._common import logsumexp_last

    x = jnp.asarray(_z((3, 5), seed=4) * 3).at[1, 2].set(-jnp.inf)
    reference = lambda x: jnp.sum(jnp.sin(jnp.arange(1, 4)) * jax.nn.logsumexp(x, axis=-1))
    ours = lambda x: jnp.sum(jnp.sin(jnp.arange(1, 4)) * logsumexp_last(x))
    for transform in (lambda f: f, jax.grad, jax.hessian):
        np.testing.assert_allclose(transform(ours)(x), transform(reference)(x), rtol=1e-12)


def test_complex_step_oracle_agrees_with_finite_differences():
    # The oracle's gradient tool itself, against central differences (to their 1e-6 accuracy).
    z = _z((3, 3, 2), seed=1)
    f = functools.partial(oracle.mv_infonce, temperature=0.5)
    exact = oracle.complex_step_grad(f, z)
    fd = np.zeros(z.size)
    for k in range(z.size):
        e = np.zeros(z.size)
        e[k] = 1e-6
        fd[k] = (f(z + e.reshape(z.shape)) - f(z - e.reshape(z.shape))) / 2e-6
    np.testing.assert_allclose(exact, fd.reshape(z.shape), atol=1e-6)
    assert np.max(np.abs(exact)) > 1e-2  # a non-trivial gradient


# ------------------------------------------------------------------------------------------------
# 3. Every backend on one device gives the dense loss and gradient to 1e-9 (float64). Tiles of 4
# and 5 rows leave a partial, padded last tile for every row count used here (7, 14 or 21 rows).
# "ring" is the same streaming kernel as "blockwise" until an axis_name is bound: with one, it and
# gather run here inside a shard_map over one device (their collectives over an axis of size 1),
# and over 3 and 8 devices in test_multidevice.py.

BACKENDS = ["gather", "blockwise", ("blockwise", 4), ("blockwise", 5)]
BACKEND_IDS = ["gather", "blockwise", "blockwise-tile4", "blockwise-tile5"]
# gather and ring inside a shard_map over one device: their own forward and backward passes
SHARDED = {
    "gather": "gather (1-device shard_map)",
    "ring": "ring (1-device shard_map)",
    ("ring", 4): "ring-tile4 (1-device shard_map)",
}


def test_ring_without_axis_name_is_the_blockwise_kernel():
    ring, blockwise = backends.get("ring", tile=4), backends.get("blockwise", tile=4)
    assert ring.rows.func is blockwise.rows.func and ring.rows.keywords == blockwise.rows.keywords
    assert ring.self_rows.func is blockwise.self_rows.func


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backends_agree_with_dense(x64, case):
    z = jnp.asarray(_z((7, case.views(3), 4), seed=7))
    # τ = 0.002: 2/τ is beyond float64's fixed shift (Reduction.fixed_shift), so the streams'
    # running maximum and gather's backward from S (not P) are compared too.
    taus = (0.002, 0.05, 0.5) if case.has_temperature else (1.0,)
    dense = jitted(case.id, grad=True)
    runs = [(jitted(case.id, b, grad=True), name) for b, name in zip(BACKENDS, BACKEND_IDS)]
    runs += [(jitted(case.id, b, grad=True, sharded=True), name) for b, name in SHARDED.items()]
    for f, name in runs:
        for tau in taus:
            (loss, grad), (ref_loss, ref_grad) = f(z, tau), dense(z, tau)
            msg = f"{name}, τ={tau}"
            np.testing.assert_allclose(loss, ref_loss, rtol=1e-9, atol=1e-12, err_msg=msg)
            np.testing.assert_allclose(
                grad,
                ref_grad,
                rtol=1e-9,
                atol=1e-9 * float(jnp.max(jnp.abs(ref_grad))),
                err_msg=msg,
            )


# ------------------------------------------------------------------------------------------------
# 4. Identities and invariances (float64, dense).

STD_V = 3  # views of the multi-view losses in the invariance / jit / dtype tests
STD_SHAPE = (6, STD_V, 5)


def _std_z(case, seed=3):
    n, v, d = STD_SHAPE
    return _z((n, case.views(v), d), seed=seed)


@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_infonce_family_coincides_at_two_views(x64, tau):
    z = jnp.asarray(_z((9, 2, 6), seed=11))
    expected = float(losses.infonce(z, temperature=tau))
    for case_id in ["pwe-infonce", "avg-infonce", "pvc", "multipos_infonce"]:
        _close(jitted(case_id)(z, tau), expected, 1e-10, case_id)


@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_dhel_family_coincides_at_two_views(x64, tau):
    z = jnp.asarray(_z((9, 2, 6), seed=12))
    expected = float(losses.dhel(z, temperature=tau))
    for case_id in ["mv_dhel", "pwe-dhel", "avg-dhel"]:
        _close(jitted(case_id)(z, tau), expected, 1e-10, case_id)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_invariant_to_permuting_instances(x64, case):
    z = _std_z(case)
    f = jitted(case.id)
    expected = float(f(jnp.asarray(z), 0.3))
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(z.shape[0])
        _close(f(jnp.asarray(z[perm]), 0.3), expected, 1e-10, f"permutation {perm}")


@pytest.mark.parametrize("case", [c for c in CASES if c.view_symmetric], ids=lambda c: c.id)
def test_invariant_to_permuting_views(x64, case):
    # The multi-view losses under any permutation; the symmetric two-view ones under the swap.
    z = _std_z(case)
    f = jitted(case.id)
    expected = float(f(jnp.asarray(z), 0.3))
    perms = itertools.permutations(range(z.shape[1]))
    for perm in itertools.islice((p for p in perms if p != tuple(range(z.shape[1]))), 4):
        _close(f(jnp.asarray(z[:, list(perm)]), 0.3), expected, 1e-10, f"views {perm}")


def test_anchor_only_dhel_is_not_view_symmetric(x64):
    # It keeps only the first view's energy: swapping the views changes it (the option matters).
    z = _z((6, 2, 5), seed=4)
    f = jitted("dhel-anchor_only")
    assert abs(float(f(jnp.asarray(z), 0.3)) - float(f(jnp.asarray(z[:, ::-1]), 0.3))) > 1e-3


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_invariant_to_scaling_one_embedding(x64, case):
    z = _std_z(case)
    f = jitted(case.id)
    expected = float(f(jnp.asarray(z), 0.3))
    rng = np.random.default_rng(5)
    for c in (1e-3, 0.37, 9.0, 1e3):
        i, l = rng.integers(z.shape[0]), rng.integers(z.shape[1])
        scaled = z.copy()
        scaled[i, l] *= c
        _close(f(jnp.asarray(scaled), 0.3), expected, 1e-10, f"z[{i}, {l}] * {c}")


# ------------------------------------------------------------------------------------------------
# 5. Finite loss and gradient at N = 4096, V = 8 (two-view losses: V = 2) under extreme inputs,
# streamed (blockwise) for memory. Two combined conditions keep the time down:
#   "hard": bfloat16 input, per-row norms spread over 1e-3 .. 1e3, τ = 0.01;
#   "flat": float32 input, the same spread of norms, τ = 10.

LARGE_N, LARGE_V, LARGE_D = 4096, 8, 16
LARGE = {"hard": (jnp.bfloat16, 0.01), "flat": (jnp.float32, 10.0)}


@functools.lru_cache(maxsize=None)
def _large_z(v):
    rng = np.random.default_rng(8)
    z = rng.standard_normal((LARGE_N, v, LARGE_D))
    norms = 10.0 ** rng.uniform(-3, 3, size=(LARGE_N, v, 1))
    norms[0], norms[-1] = 1e-3, 1e3  # both ends of the range, whatever the draw
    return z / np.linalg.norm(z, axis=-1, keepdims=True) * norms


@pytest.mark.parametrize("condition", list(LARGE))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_finite_at_scale_under_extreme_inputs(case, condition):
    dtype, tau = LARGE[condition]
    z_np = _large_z(case.views(LARGE_V))
    norms = np.linalg.norm(z_np, axis=-1)
    assert norms.min() < 1.01e-3 and norms.max() > 0.99e3  # the spread really is there
    z = jnp.asarray(z_np, dtype)
    loss, grad = jax.jit(jax.value_and_grad(lambda z: case(z, tau, backend="blockwise")))(z)
    assert loss.dtype == jnp.float32 and grad.dtype == dtype
    assert np.isfinite(float(loss))
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert bool(jnp.any(grad != 0))


# ------------------------------------------------------------------------------------------------
# 6. dtypes: half-precision inputs give a float32 loss equal (to float32 rounding) to the loss of
# the same values upcast to float32; float64 stays float64.


@functools.lru_cache(maxsize=None)
def _dtype_losses(case_id):
    case = BY_ID[case_id]
    return jax.jit(lambda zs: [case(z, 0.3) for z in zs])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_half_precision_inputs_give_float32_loss(case):
    z = _std_z(case)
    z_bf16, z_f16 = jnp.asarray(z, jnp.bfloat16), jnp.asarray(z, jnp.float16)
    bf16, f16, up_bf16, up_f16 = _dtype_losses(case.id)(
        [z_bf16, z_f16, z_bf16.astype(jnp.float32), z_f16.astype(jnp.float32)]
    )
    for low, up, name in [(bf16, up_bf16, "bfloat16"), (f16, up_f16, "float16")]:
        assert low.dtype == jnp.float32, name
        np.testing.assert_allclose(float(low), float(up), rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_stays_float64(x64, case):
    z = jnp.asarray(_std_z(case))
    loss, grad = jitted(case.id, grad=True)(z, 0.3)
    assert loss.dtype == jnp.float64 and grad.dtype == jnp.float64
    # float32 input under x64 is computed in float32 (a Python-float temperature does not promote).
    assert jitted(case.id)(z.astype(jnp.float32), 0.3).dtype == jnp.float32


# ------------------------------------------------------------------------------------------------
# 7. jit and gradients checked numerically (float64).


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jit_matches_eager(x64, case):
    z = jnp.asarray(_std_z(case))
    eager = case(z, 0.3)
    jit_static = jax.jit(lambda z: case(z, 0.3))(z)  # temperature a Python float under jit
    jit_traced = jitted(case.id)(z, 0.3)  # temperature a traced argument
    for value in (jit_static, jit_traced):
        np.testing.assert_allclose(value, eager, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_check_grads_dense(x64, case):
    z = jnp.asarray(_z((4, case.views(3), 3), seed=9))
    # Jitted: check_grads evaluates the function and its derivatives many times, and eager
    # dispatch of every op would cost more than compiling once.
    check_grads(jax.jit(lambda z: case(z, 0.4)), (z,), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize(
    "case_id",
    [
        "mv_infonce",
        "mv_infonce-other_views",
        "mv_dhel",
        "pwe-dhel",
        "pvc",
        "dcl",
        "kcl-riesz-t-1-g3",
    ],
)
def test_check_grads_blockwise(x64, case_id):
    # custom_vjp: reverse mode only. One case per mask and reduction of the streaming kernel.
    case = BY_ID[case_id]
    z = jnp.asarray(_z((4, case.views(3), 3), seed=10))
    backend = backends.get("blockwise", tile=5)
    check_grads(jax.jit(lambda z: case(z, 0.4, backend=backend)), (z,), order=1, modes=["rev"])


@pytest.mark.parametrize("name", ["mv_infonce", "mv_dhel", "pwe"])
def test_blockwise_unrolls_a_few_tiles_and_loops_over_many(x64, name):
    """Up to UNROLL_TILES tiles per group the single-device loops are straight-line code (no
    while loop is left after compilation), beyond it they are loops; both give dense's loss and
    gradient."""
    z = jnp.asarray(_z((12, 2, 5), seed=21))
    loss = getattr(losses, name)
    expected = jax.value_and_grad(lambda z: loss(z, temperature=0.3))(z)
    rows = 24 if name != "mv_dhel" else 12  # mv_dhel: one group of N rows per view
    few, many = -(-rows // 3), -(-rows // (backends.streaming.UNROLL_TILES + 2))
    for tile, unrolled in ((few, True), (many, False)):
        backend = backends.get("blockwise", tile=tile)
        f = jax.jit(jax.value_and_grad(lambda z, b=backend: loss(z, temperature=0.3, backend=b)))
        assert (" while(" not in f.lower(z).compile().as_text()) == unrolled, tile
        value, grad = f(z)
        np.testing.assert_allclose(value, expected[0], rtol=1e-12)
        np.testing.assert_allclose(grad, expected[1], rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# 8. vmap over a leading axis equals the per-item losses.


@pytest.mark.parametrize("backend", ["dense", ("blockwise", 4)], ids=["dense", "blockwise-tile4"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vmap_matches_per_item_losses(x64, case, backend):
    zs = jnp.asarray(_z((3, 5, case.views(3), 4), seed=13))
    f = jitted(case.id, backend)
    batched = jax.vmap(f, in_axes=(0, None))(zs, 0.3)
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched, [f(z, 0.3) for z in zs], rtol=1e-12, atol=1e-12)


def test_kcl_log_kernel_alignment_has_no_half(x64):
    # The authors' code (DHEL-KCL): alignment −log(t δ² + 1), energy −½ log(t δ² + 1). With γ = 0
    # only the alignment is left: L = 2 · mean_i log(t ||x_i − y_i||² + 1).
    z = _z((6, 2, 8), seed=3)
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)
    expected = 2.0 * np.mean(np.log(0.5 * np.sum((u[:, 0] - u[:, 1]) ** 2, axis=-1) + 1.0))
    _close(losses.kcl(jnp.asarray(z), kernel="log", t=0.5, gamma=0.0), expected, 1e-12)


# ------------------------------------------------------------------------------------------------
# Degenerate rows: a zero embedding row (a dead feature vector) gives a finite loss and finite
# gradients in every loss; riesz with t <= -1 stays finite when a positive pair is identical.


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_zero_row_gives_finite_gradients(x64, case, dtype):
    z = _z((5, case.views(3), 4), seed=4)
    z[1, 0] = 0.0
    loss, grad = jitted(case.id, grad=True)(jnp.asarray(z, dtype), 0.5)
    assert grad.dtype == dtype
    assert np.isfinite(float(loss)) and bool(jnp.all(jnp.isfinite(grad)))
    # The zero row counts as u = 0 (the oracle agrees), except in KCL's energy terms, whose
    # δ² = 2 − 2 a·b assumes unit rows (u = 0 is at δ² = 2 from every row, as if orthogonal).
    if dtype == "float64" and case.name != "kcl":
        _close(loss, case.reference(z, temperature=0.5), 1e-9)


@pytest.mark.parametrize("t", [-1.0, -2.0, -3.0])
def test_riesz_identical_positive_pair_is_finite(x64, t):
    z = _z((5, 2, 4), seed=6)
    z[2, 1] = 2.0 * z[2, 0]  # x_2 = y_2 after normalisation: δ = 0
    f = jax.value_and_grad(lambda z: losses.kcl(z, kernel="riesz", t=t, gamma=3.0))
    loss, grad = f(jnp.asarray(z))
    assert np.isfinite(float(loss)) and bool(jnp.all(jnp.isfinite(grad)))
    _close(loss, oracle.kcl(z, kernel="riesz", t=t, gamma=3.0), 1e-9)


# ------------------------------------------------------------------------------------------------
# float32 against float64 of the same input over τ ∈ [0.01, 10]: within 1e-6 relative (1e-6
# absolute below 1), and a loss that cannot be negative is never below −1e-6. The first input has
# nearly aligned views (every loss near its minimum at low τ: the hard case for cancellation).

NON_NEGATIVE = {"mv_infonce", "pwe", "avg", "pvc", "multipos_infonce", "infonce"}


def _near_aligned(v):
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (16, 4, 32)), np.float32)
    return (z[:, :1] + 0.3 * z)[:, :v]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_matches_float64_at_every_temperature(x64, case):
    f = jitted(case.id)
    v = case.views(4)
    for z in (_near_aligned(v), _z((16, v, 32), seed=1, dtype=np.float32)):
        for tau in (0.01, 0.1, 1.0, 10.0) if case.has_temperature else (1.0,):
            low = float(f(jnp.asarray(z), np.float32(tau)))
            exact = float(f(jnp.asarray(z, jnp.float64), tau))
            assert abs(low - exact) <= 1e-6 * max(abs(exact), 1.0), (tau, low, exact)
            non_negative = (
                case.name in NON_NEGATIVE and dict(case.options).get("pair_loss") != "dhel"
            )
            if non_negative:
                assert low >= -1e-6, (tau, low)


def test_mv_infonce_at_low_temperature_is_not_negative():
    # Nearly aligned views at τ = 0.01: the loss is ~1e-15 in exact arithmetic.
    z = jnp.asarray(_near_aligned(4))
    loss = float(losses.mv_infonce(z, temperature=0.01))
    assert 0.0 <= loss <= 1e-6


# ------------------------------------------------------------------------------------------------
# Precision: every dot_general of the forward and the backward pass (inside custom_jvp/custom_vjp,
# shard_map, scan, while and map bodies too) carries the precision the loss was asked for.


def _dot_precisions(jaxpr):
    """The ``precision`` of every dot_general in ``jaxpr`` and all of its sub-jaxprs."""
    found = []

    def visit(value):
        if isinstance(value, jax.extend.core.ClosedJaxpr):
            value = value.jaxpr
        if isinstance(value, jax.extend.core.Jaxpr):
            for eqn in value.eqns:
                if eqn.primitive.name == "dot_general":
                    found.append(eqn.params["precision"])
                for param in eqn.params.values():
                    visit(param)
        elif isinstance(value, (tuple, list)):
            for item in value:
                visit(item)

    visit(jaxpr.jaxpr)
    return found


def _traced_loss(case, backend, precision, dtype):
    """jaxprs of the loss and its gradient, the loss inside a 1-device shard_map for gather and
    ring (so that their collectives are traced)."""
    z = jnp.asarray(_z((6, case.views(3), 4), seed=2), dtype)
    fn = _backend(backend) if backend != "ring" else backends.get("ring", tile=4)
    axis = None if backend in ("dense", "blockwise") else "d"

    def loss(z):
        options = dict(case.options, backend=fn, axis_name=axis, precision=precision)
        return case.spec.call(z, temperature=0.5, **options)

    if axis is not None:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("d",))
        spec = jax.sharding.PartitionSpec("d")
        loss = jax.shard_map(loss, mesh=mesh, in_specs=spec, out_specs=jax.sharding.PartitionSpec())
    return jax.make_jaxpr(loss)(z), jax.make_jaxpr(jax.grad(loss))(z)


PRECISION_BACKENDS = ["dense", "gather", ("blockwise", 4), "ring"]


def _assert_precision(case, backend, precision, dtype, expected):
    for jaxpr, what in zip(_traced_loss(case, backend, precision, dtype), ("loss", "grad")):
        found = _dot_precisions(jaxpr)
        assert found, (backend, what)  # the walk really reaches the matmuls
        assert set(found) == {(expected, expected)}, (backend, what, precision, found)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_matmul_is_highest_by_default(case):
    for backend in PRECISION_BACKENDS:
        _assert_precision(case, backend, None, jnp.float32, jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("backend", PRECISION_BACKENDS, ids=str)
def test_every_matmul_carries_the_precision_asked_for(backend):
    P = jax.lax.Precision
    for case in (BY_ID["mv_infonce"], BY_ID["kcl"]):
        _assert_precision(case, backend, "high", jnp.float32, P.HIGH)
        _assert_precision(case, backend, P.DEFAULT, jnp.float32, P.DEFAULT)
        # bfloat16 input keeps the platform's native passes.
        _assert_precision(case, backend, None, jnp.bfloat16, P.DEFAULT)


@pytest.mark.parametrize("name", ["dense", "gather", "blockwise"])
def test_general_kernel_matmuls_carry_the_precision(name):
    # The q != k path of every backend (the losses only use keys = queries).
    q, k = jnp.ones((1, 5, 2, 3)), jnp.ones((1, 5, 2, 3))
    fn = backends.get(name, tile=4) if name == "blockwise" else backends.get(name)
    P = jax.lax.Precision.HIGH

    def out(q, k):
        return jnp.sum(fn(q, k, mask="self", reduction=backends.LSE, precision=P))

    for jaxpr in (jax.make_jaxpr(out)(q, k), jax.make_jaxpr(jax.grad(out, (0, 1)))(q, k)):
        assert set(_dot_precisions(jaxpr)) == {(P, P)}


@pytest.mark.parametrize("precision", ["fast", 3, "HIGHEST "])
def test_unknown_precision_is_a_clear_error(precision):
    with pytest.raises(ValueError, match="precision must be"):
        losses.mv_dhel(jnp.ones((4, 2, 3)), temperature=0.5, precision=precision)


# --- fixed-shift log-sum-exp (a static bound on the similarities) ------------------------------


def test_fixed_shift_applies_only_where_its_exponentials_stay_normal_numbers():
    bounded = backends.reductions.lse_bounded
    assert bounded(2.0).fixed_shift(jnp.float32) and bounded(39.0).fixed_shift(jnp.float32)
    assert not bounded(100.0).fixed_shift(jnp.float32)  # τ = 0.01 in float32: the running max
    assert bounded(100.0).fixed_shift(jnp.float64) and not bounded(400.0).fixed_shift(jnp.float64)
    assert not backends.LSE.fixed_shift(jnp.float32)
    with pytest.raises(ValueError, match="bound must be > 0"):
        bounded(0.0)


@pytest.mark.parametrize("backend", ["dense", "blockwise", "ring", "gather"])
@pytest.mark.parametrize("mask", ["instance", "self", "instance_and_view"])
def test_fixed_shift_equals_the_running_maximum(x64, backend, mask):
    """The fixed-shift form (the symmetric tiles' shared exponential, dense's kept P) gives the
    running-maximum form's rows and gradients to float64 rounding, on one device (the whole
    matrix and the half-matrix tiles), a ring of one device and the gathered matrix; dense's
    forward-mode derivative too (its custom_jvp)."""
    rng = np.random.default_rng(7)
    u = rng.standard_normal((2, 9, 3, 6))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    tau = 0.05
    v = jnp.asarray(u / np.sqrt(tau))  # |s| <= 1/τ = 20
    bounded = backends.reductions.lse_bounded(1 / tau)
    assert bounded.fixed_shift(v.dtype)
    weights = jnp.asarray(rng.standard_normal((2, 9, 3)))

    def rows(reduction, v):
        if backend == "dense":
            return backends.self_rows("dense", v, mask=mask, reduction=reduction, axis_name=None)
        if backend == "blockwise":
            return backends.streaming.streaming_self(v, mask=mask, reduction=reduction, tile=5)
        mesh = parallel.make_mesh(1)
        kernel = backends.get(backend, tile=5) if backend == "ring" else backend
        return jax.shard_map(
            lambda v: backends.self_rows(
                kernel, v, mask=mask, reduction=reduction, axis_name="data", precision=None
            ),
            mesh=mesh,
            in_specs=jax.sharding.PartitionSpec(None, "data"),
            out_specs=jax.sharding.PartitionSpec(None, "data"),
        )(v)

    want, want_grad = jax.value_and_grad(lambda v: jnp.sum(weights * rows(backends.LSE, v)))(v)
    got, got_grad = jax.value_and_grad(lambda v: jnp.sum(weights * rows(bounded, v)))(v)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-11, atol=1e-12)
    if backend == "dense":
        tangent = jnp.asarray(rng.standard_normal(v.shape))
        _, want_dot = jax.jvp(lambda v: rows(backends.LSE, v), (v,), (tangent,))
        _, got_dot = jax.jvp(lambda v: rows(bounded, v), (v,), (tangent,))
        np.testing.assert_allclose(got_dot, want_dot, rtol=1e-11, atol=1e-12)


# --- per-key-view reductions (PWE's energies) ---------------------------------------------------


def _per_key_view_numpy(v, mask, reduction):
    """Float64 NumPy oracle: each row of v (G, n, A, D) reduced over the kept keys of each view
    separately, (G, n, A, A); -inf (LSE) or 0 (sum) where a view has no kept key."""
    g, n, a, d = v.shape
    x = np.asarray(v, np.float64).reshape(g, n * a, d)
    s = np.einsum("gqd,gkd->gqk", x, x)
    instance, view = np.divmod(np.arange(n * a), a)
    same_instance, same_view = instance[:, None] == instance, view[:, None] == view
    keep = {
        "none": np.ones_like(same_view),
        "self": ~(same_instance & same_view),
        "instance": ~same_instance,
        "view": ~same_view,
        "instance_and_view": ~same_instance & ~same_view,
    }[mask]
    out = np.empty((g, n * a, a))
    for m in range(a):
        kept = keep & (view == m)[None, :]
        if reduction == "lse":
            with np.errstate(divide="ignore"):
                out[..., m] = np.log(np.sum(np.where(kept, np.exp(s), 0.0), axis=-1))
        else:
            out[..., m] = np.sum(np.where(kept, np.cos(s), 0.0), axis=-1)
    return out.reshape(g, n, a, a)


def _per_key_view_jnp(v, mask, reduction):
    """The same oracle in plain jnp (a loop over key views), to differentiate."""
    g, n, a, d = v.shape
    x = v.reshape(g, n * a, d)
    s = jnp.einsum("gqd,gkd->gqk", x, x, precision=jax.lax.Precision.HIGHEST)
    instance, view = np.divmod(np.arange(n * a), a)
    keep = backends.keep(mask, instance[:, None] == instance, view[:, None] == view)
    outs = []
    for m in range(a):
        kept = keep & (view == m)[None, :]
        if reduction == "lse":
            outs.append(jax.nn.logsumexp(jnp.where(kept, s, -jnp.inf), axis=-1))
        else:
            outs.append(jnp.sum(jnp.where(kept, jnp.cos(s), 0.0), axis=-1))
    return jnp.stack(outs, axis=-1).reshape(g, n, a, a)


def _per_key_view_rows(backend, v, mask, reduction):
    if backend == "ring":
        kernel = backends.get("ring", tile=4)
        return jax.shard_map(
            lambda v: backends.self_rows(
                kernel, v, mask=mask, reduction=reduction, axis_name="data"
            ),
            mesh=parallel.make_mesh(1),
            in_specs=jax.sharding.PartitionSpec(None, "data"),
            out_specs=jax.sharding.PartitionSpec(None, "data"),
        )(v)
    if backend.startswith("general-"):  # the q != k path
        name = backend.removeprefix("general-")
        kernel = backends.get(name, tile=5) if name == "blockwise" else backends.get(name)
        return kernel(v, v, mask=mask, reduction=reduction)
    name, _, tile = backend.partition("-")
    kernel = backends.get(name, tile=int(tile)) if tile else backends.get(name)
    return backends.self_rows(kernel, v, mask=mask, reduction=reduction)


PER_KEY_VIEW_BACKENDS = [
    "dense",
    "gather",
    "blockwise-2",  # tiles of one instance (3 rows)
    "blockwise-7",  # tiles of two instances, the last one padded
    "ring",
    "general-blockwise",  # the q != k path (the losses use keys = queries)
]


@pytest.mark.parametrize("backend", PER_KEY_VIEW_BACKENDS)
@pytest.mark.parametrize("mask", ["instance", "self", "instance_and_view"])
def test_per_key_view_reduction_matches_numpy(x64, backend, mask):
    """Each row's reduction over each key view's keys separately equals the float64 NumPy
    oracle on every backend (running maximum, fixed shift, and a sum of a kernel), and its
    gradient equals autodiff of a plain jnp loop over the views."""
    rng = np.random.default_rng(11)
    u = rng.standard_normal((2, 7, 3, 5))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    tau = 0.1
    v = jnp.asarray(u / np.sqrt(tau))  # |s| <= 10
    weights = jnp.asarray(rng.standard_normal((2, 7, 3, 3)))
    per_view = backends.reductions.per_key_view
    for kind, reduction in [
        ("lse", per_view(backends.LSE, 3)),
        ("lse", per_view(backends.reductions.lse_bounded(1 / tau), 3)),
        ("sum", per_view(backends.sum_of(jnp.cos), 3)),
    ]:
        got = _per_key_view_rows(backend, v, mask, reduction)
        assert got.shape == (2, 7, 3, 3)
        want = _per_key_view_numpy(v, mask, kind)
        msg = f"{backend}, {mask}, {reduction}"
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=msg)
        if mask == "instance_and_view" and kind == "lse":
            continue  # a row's own view has no key (-inf): no gradient to compare

        def total(rows_fn, *args):
            return lambda v: jnp.sum(weights * rows_fn(v, *args))

        grad = jax.grad(total(lambda v: _per_key_view_rows(backend, v, mask, reduction)))
        ref = jax.grad(total(_per_key_view_jnp, mask, kind))
        np.testing.assert_allclose(grad(v), ref(v), rtol=1e-10, atol=1e-11, err_msg=msg)


@pytest.mark.parametrize("backend", ["dense", "gather", "blockwise"])
def test_per_key_view_needs_its_number_of_views(backend):
    reduction = backends.reductions.per_key_view(backends.LSE, 2)
    with pytest.raises(ValueError, match="per key view over 2 views, but the keys have 3 rows"):
        backends.self_rows(backend, jnp.ones((1, 4, 3, 5)), mask="self", reduction=reduction)
    with pytest.raises(ValueError, match="views must be a positive int"):
        backends.reductions.per_key_view(backends.LSE, 0)


def test_pwe_of_a_backend_function_equals_the_builtin_backends(x64):
    """A backend function of the plain signature is asked for PWE's energies one key view at a
    time (`self_rows`); the built-in backends reduce per key view at once. Same loss and
    gradient, and the function never sees a per-key-view reduction."""
    z = jnp.asarray(_z((6, 4, 5), seed=5))
    calls = []

    def plain_dense(q, k, *, reduction, **kwargs):  # not a BuiltinBackend
        assert reduction.key_views is None
        calls.append(k.shape)
        return backends.get("dense")(q, k, reduction=reduction, **kwargs)

    for tau in (0.05, 0.5):
        want, want_grad = jax.value_and_grad(lambda z: losses.pwe(z, temperature=tau))(z)
        got, got_grad = jax.value_and_grad(
            lambda z: losses.pwe(z, temperature=tau, backend=plain_dense)
        )(z)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(want, oracle.pwe(np.asarray(z), tau), rtol=1e-12)
    assert calls and set(calls) == {(1, 6, 1, 5)}  # one key view of 6 instances per call


@pytest.mark.parametrize("mask", ["self", "view", "instance_and_view"])
def test_a_backend_function_per_key_view_refuses_a_mask_that_sees_the_key_view(mask):
    reduction = backends.reductions.per_key_view(backends.LSE, 3)
    with pytest.raises(ValueError, match=f"mask '{mask}' does not allow.*use a built-in backend"):
        backends.self_rows(
            backends.get("dense").rows, jnp.ones((1, 4, 3, 5)), mask=mask, reduction=reduction
        )
