"""The loss records (mvcl.losses.LossSpec): FLOP floors, energy shapes, views, temperature.

The FLOP floors are checked three ways: against formulas written out by hand for a few (N, V, D);
against the shape of what each loss really hands its backend (traced with a recording backend);
and against XLA's own count of the compiled dense loss where that count is whole (one group of
at most 512 rows: the dense backend then runs no loop, whose body XLA would count once).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvcl import backends, losses
from mvcl.configs.sweeps import common as sweeps
from mvcl.studies import report

# 6·G·R²·D with (G, R) read off each loss's definition: one energy over all N·V rows (PWE's too,
# reduced per key view), one per view over N rows, one per view against the rest over 2N rows.
HAND_FLOPS = {
    "mv_infonce": lambda n, v, d: 6 * (n * v) ** 2 * d,
    "mv_dhel": lambda n, v, d: 6 * v * n**2 * d,
    "pwe": lambda n, v, d: 6 * (n * v) ** 2 * d,
    "avg": lambda n, v, d: 6 * v * (2 * n) ** 2 * d,
    "pvc": lambda n, v, d: 6 * (n * v) ** 2 * d,
    "multipos_infonce": lambda n, v, d: 6 * (n * v) ** 2 * d,
    "infonce": lambda n, v, d: 6 * (2 * n) ** 2 * d,
    "dcl": lambda n, v, d: 6 * (2 * n) ** 2 * d,
    "dhel": lambda n, v, d: 2 * 6 * n**2 * d,
    "kcl": lambda n, v, d: 2 * 6 * n**2 * d,
}
SIZES = [(4, 2, 5), (256, 3, 128), (1024, 4, 128), (4096, 8, 64)]


@pytest.mark.parametrize("name", list(HAND_FLOPS))
def test_flops_match_the_hand_formulas(name):
    spec = losses.spec(name)
    for n, v, d in SIZES:
        if spec.accepts_views(v):
            assert spec.flops(n, v, d) == HAND_FLOPS[name](n, v, d), (n, v, d)
            assert spec.similarity_entries(n, v) * 6 * d == spec.flops(n, v, d)
    # Two numbers worked through: mv_infonce at N = 4, V = 3, D = 5 is 6 · 12² · 5; avg there
    # has 3 problems of 8 rows: 3 · 6 · 8² · 5.
    assert losses.spec("mv_infonce").flops(4, 3, 5) == 4320
    assert losses.spec("avg").flops(4, 3, 5) == 5760


def _recorded_energy(spec, n, v, d=3):
    """The (G, R) of every backend call the loss makes, traced with a recording backend."""
    calls = []

    def recording(q, k, **kwargs):
        calls.append((q.shape[0], q.shape[1] * q.shape[2]))
        return backends.get("dense")(q, k, **kwargs)

    # A built-in backend (what the loss takes with backend="dense" and the others), so that PWE
    # reduces per key view as it does there.
    backend = backends.BuiltinBackend(recording)
    jax.make_jaxpr(lambda z: spec.call(z, temperature=0.5, backend=backend))(jnp.ones((n, v, d)))
    return calls


@pytest.mark.parametrize("name", losses.NAMES)
def test_energy_shape_is_what_the_loss_hands_its_backend(name):
    spec = losses.spec(name)
    for n, v in [(5, 2), (3, 4), (7, 5)]:
        if spec.accepts_views(v):
            assert _recorded_energy(spec, n, v) == [spec.energy(n, v)], (n, v)


def _xla_flops(fn, z):
    cost = jax.jit(fn).lower(z).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"]


@pytest.mark.parametrize("name", [n for n in losses.NAMES if losses.spec(n).energy(64, 4)[0] == 1])
def test_flops_against_xla_count(name):
    # Forward: the similarity matmul, 2·R²·D = flops / 3, plus elementwise work (a few %). The
    # dense backward on q = k = v folds dQ and dK into one product, (W + Wᵀ)·v: 4·R²·D in all,
    # 2/3 of the floor, which counts the general pass of two.
    spec = losses.spec(name)
    n, v, d = 64, 2 if spec.two_view else 4, 256
    z = jax.ShapeDtypeStruct((n, v, d), jnp.float32)
    fn = spec.bind(temperature=0.5, backend="dense")
    forward = _xla_flops(fn, z) / (spec.flops(n, v, d) / 3)
    both = _xla_flops(jax.value_and_grad(fn), z) / spec.flops(n, v, d)
    assert 1.0 <= forward <= 1.1, forward
    assert 2 / 3 <= both <= 2 / 3 * 1.1, both


def test_views_and_temperature_of_the_records():
    assert losses.TWO_VIEW == ("infonce", "dcl", "dhel", "kcl")
    assert losses.TEMPERATURE_FREE == ("kcl",)
    assert set(losses.MULTI_VIEW) | set(losses.TWO_VIEW) == set(losses.NAMES)
    for name in losses.NAMES:
        spec = losses.spec(name)
        assert not spec.accepts_views(1)
        assert spec.accepts_views(2)
        assert spec.accepts_views(5) == (name in losses.MULTI_VIEW)
        assert losses.get(name) is spec.fn


@pytest.mark.parametrize("name", [n for n in losses.NAMES if losses.spec(n).max_views])
def test_max_views_is_what_the_function_enforces(name):
    spec = losses.spec(name)
    z = jnp.ones((4, spec.max_views + 1, 3))
    with pytest.raises(ValueError, match="two-view"):
        spec.call(z, temperature=0.5)


def test_temperature_passed_only_where_it_applies():
    z = jnp.asarray(np.random.default_rng(0).standard_normal((6, 2, 4)), jnp.float32)
    kcl, dhel = losses.spec("kcl"), losses.spec("dhel")
    assert kcl.kwargs(temperature=0.5, gamma=2.0) == {"gamma": 2.0}
    assert dhel.kwargs(temperature=0.5) == {"temperature": 0.5}
    assert float(kcl.call(z, temperature=0.5)) == float(losses.kcl(z))
    assert float(dhel.bind(temperature=0.3)(z)) == float(losses.dhel(z, temperature=0.3))
    with pytest.raises(ValueError, match="dhel takes a temperature"):
        dhel.call(z)
    with pytest.raises(ValueError, match="unknown loss 'dhell'"):
        losses.spec("dhell")


@pytest.mark.parametrize("name", [n for n in losses.NAMES if losses.spec(n).same_at_two_views])
def test_same_at_two_views(x64, name):
    z = jnp.asarray(np.random.default_rng(1).standard_normal((7, 2, 5)))
    other = losses.spec(losses.spec(name).same_at_two_views)
    expected = float(other.call(z, temperature=0.4))
    assert abs(float(losses.spec(name).call(z, temperature=0.4)) - expected) < 1e-10


def test_derived_lists():
    # The sweep configs' loss lists and the report's baselines, as the studies define them.
    assert sweeps.MULTI_VIEW_LOSSES == (
        "mv_dhel",
        "mv_infonce",
        "pwe",
        "avg",
        "pvc",
        "multipos_infonce",
    )
    assert sweeps.TWO_VIEW_LOSSES == ("mv_dhel", "mv_infonce", "infonce", "dcl", "kcl")
    assert report.PAIRWISE_BASELINES == ("pwe", "avg", "pvc")
    ids = [case.id for _, case in losses.registry.CASES]
    assert len(ids) == len(set(ids))
    assert all(not spec.cases[0].options for spec in losses.SPECS.values())  # defaults first
    assert [case.id for spec in losses.SPECS.values() for case in spec.cases[:1]] == [
        "mv_infonce", "mv_dhel", "pwe-infonce", "avg-infonce", "pvc", "multipos_infonce",
        "infonce", "dcl", "dhel", "kcl",
    ]  # fmt: skip
