"""Shared fixtures and settings of the test suite.

* Float32 stays the default: only tests that ask for ``x64`` get float64.
* A persistent JAX compilation cache in ``.pytest_cache/jax/`` (set through the environment,
  so the programs the tests start in fresh interpreters share it): many tests compile the same
  tiny train and evaluation programs, in this process and in subprocesses. A repeated tiny
  training run measured 8.2 s of CPU time without it and 1.3 s with it (2.4 s in a new process
  reading the cache). Entries are keyed by the program, the JAX version and the device setup, so
  a stale cache is never used wrongly. ``MVCL_TEST_COMPILATION_CACHE=0`` turns it off.
* ``test_multidevice.py`` and ``test_notebooks.py`` (programs on several simulated devices,
  notebooks executed) are marked ``slow``: ``pytest -m "not slow"`` is the quick tier.
* The modules of long tests run first (`LONG_FIRST`), so the suite's tail is short tests.
"""

import os
from pathlib import Path

import pytest

if os.environ.get("MVCL_TEST_COMPILATION_CACHE", "1") != "0":
    _CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # after the cache settings, which JAX reads when imported

SLOW_MODULES = ("test_multidevice.py", "test_notebooks.py")
# Modules of long tests (programs on several simulated devices or in several processes, whole
# runs), roughly longest first. They run first, so that pytest-xdist's last tests are short ones
# and no worker waits minutes for the other at the end (the longest test-first order).
LONG_FIRST = (
    "test_grad_cache.py",
    "test_multidevice.py",
    "test_paper_datasets.py",
    "test_guards.py",
    "test_run_safety.py",
    "test_train.py",
    "test_clusters.py",
    "test_per_view.py",
    "test_memory_plan.py",
    "test_object_storage.py",
    "test_online_eval.py",
    "test_bench_accelerator.py",
    "test_sweep.py",
    "test_notebooks.py",
)


def pytest_collection_modifyitems(config, items):
    del config
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # (stable)


@pytest.fixture
def x64():
    """Enables float64 in JAX for one test and restores the previous setting afterwards."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
