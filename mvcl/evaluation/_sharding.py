"""Helpers of the evaluation's arrays on a mesh: host arrays in, replicated results out."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvcl import parallel

AXIS = parallel.DEFAULT_AXIS
"""The mesh axis the evaluation shards its rows over."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _global_array(mesh: jax.sharding.Mesh, host: np.ndarray, spec: P) -> jax.Array:
    """A global array of ``host`` (the same on every process) laid out as ``spec`` on ``mesh``."""
    return jax.make_array_from_callback(
        host.shape, NamedSharding(mesh, spec), lambda index: host[index]
    )


def _local_rows(sharding: NamedSharding, rows: int) -> tuple[int, int]:
    """The range [lo, hi) of axis-0 rows of a (rows, ...) array this process's devices hold."""
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map((rows,)).values():
        start, stop, _ = index[0].indices(rows)
        starts.append(start)
        stops.append(stop)
    lo, hi = min(starts), max(stops)
    if sum(b - a for a, b in set(zip(starts, stops))) != hi - lo:
        raise ValueError("this process's devices do not hold a contiguous block of the batch")
    return lo, hi


def _host(x: jax.Array) -> np.ndarray:
    """A replicated (fully addressable) array as numpy."""
    return np.asarray(x.addressable_data(0))
