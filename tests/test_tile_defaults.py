"""The streaming backends' default tiling by platform (`mvcl.backends.streaming.TILE_DEFAULTS`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvcl import losses
from mvcl.backends import streaming


@pytest.mark.parametrize(
    "platform, groups, ring, rows",
    [
        # the CPU's measured figures, unchanged
        ("cpu", 1, False, 512),
        ("cpu", 2, False, 384),
        ("cpu", 4, False, 384),
        ("cpu", 8, False, 384),
        ("cpu", 1, True, 512),
        ("cpu", 8, True, 512),
        # accelerators (provisional): 8,192 rows for one group, sqrt(64 Mi / G), at least 2,048
        ("gpu", 1, False, 8192),
        ("gpu", 2, False, 5792),
        ("gpu", 4, False, 4096),
        ("gpu", 8, False, 2896),
        ("gpu", 28, False, 2048),
        ("gpu", 4, True, 8192),
        ("tpu", 1, False, 8192),
        ("tpu", 4, True, 8192),
        ("METAL", 1, False, 8192),  # any other platform: the accelerators' rule
    ],
)
def test_default_tile_by_platform(platform, groups, ring, rows):
    assert streaming.default_tile(groups, ring=ring, platform=platform) == rows


def test_tile_defaults_cpu_are_the_module_constants():
    cpu = streaming.tile_defaults("cpu")
    assert cpu.tile_elements == streaming.TILE_ELEMENTS == 512 * 512
    assert (cpu.min_tile, cpu.ring_tile, cpu.unroll_tiles) == (384, 512, 4)
    assert streaming.tile_defaults("gpu") == streaming.tile_defaults("tpu")
    assert streaming.tile_defaults("GPU") == streaming.ACCELERATOR_TILES
    # this machine runs on the CPU: no platform given reads jax.default_backend()
    assert jax.default_backend() == "cpu"
    assert streaming.default_tile(1) == 512


def _has_loop(platform_tiles, monkeypatch, z):
    """Whether blockwise MV-InfoNCE at its default tile compiles to a while loop, with
    ``jax.default_backend()`` reading ``platform_tiles``; and its loss and gradient."""
    monkeypatch.setattr(jax, "default_backend", lambda: platform_tiles)
    f = jax.jit(
        jax.value_and_grad(lambda z: losses.mv_infonce(z, temperature=0.5, backend="blockwise"))
    )
    compiled = f.lower(z).compile()
    return " while(" in compiled.as_text(), compiled(z)


def test_the_platform_rule_reaches_the_kernel(monkeypatch):
    """N·V = 2,600 rows: 6 tiles of the CPU's 512 rows (more than UNROLL_TILES: a rolled loop),
    one tile of an accelerator's 8,192 (no loop). Both give the dense loss and gradient."""
    z = jnp.asarray(np.random.default_rng(0).standard_normal((650, 4, 8)), jnp.float32)
    dense = jax.jit(jax.value_and_grad(lambda z: losses.mv_infonce(z, temperature=0.5)))(z)
    for platform, looped in (("cpu", True), ("gpu", False)):
        has_loop, (value, grad) = _has_loop(platform, monkeypatch, z)
        assert has_loop == looped, platform
        np.testing.assert_allclose(value, dense[0], rtol=2e-6)
        np.testing.assert_allclose(grad, dense[1], rtol=2e-4, atol=2e-8)
