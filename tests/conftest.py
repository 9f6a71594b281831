"""Shared fixtures. Float32 stays the default: only tests that ask for ``x64`` get float64."""

import jax
import pytest


@pytest.fixture
def x64():
    """Enables float64 in JAX for one test and restores the previous setting afterwards."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
