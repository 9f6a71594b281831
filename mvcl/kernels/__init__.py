"""Row-reduction backends: how the energy of every query row over the global key set is computed.

A backend is a function ``backend(q, k, *, mask, reduction, axis_name) -> out`` with

* ``q``: (G, n, A, D) query rows, already scaled (by 1/τ), in G independent groups;
* ``k``: (G, n, B, D) this device's keys (the global key set is every device's ``k``);
* ``mask``: which keys a row sees (see :func:`mvcl.kernels.reductions.keep`);
* ``reduction``: :data:`LSE` or :func:`sum_of` ``(fn)``;
* ``out``: (G, n, A), the reduction of each local query row over the global keys of its group.

The losses in :mod:`mvcl.losses` are written against this signature only; adding a backend here
gives it to every loss.

| name | keys | memory per device | backward |
|---|---|---|---|
| ``dense`` | local (single device only) | O((nA)·(nB)) | autodiff |
| ``gather`` | ``all_gather`` | O((nA)·(NB)) | autodiff |
| ``blockwise``, ``ring`` | streamed tiles, ring-passed blocks | O(n(A+B)D + tile²) | recomputed |
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from mvcl.kernels import dense as _dense
from mvcl.kernels import streaming as _streaming
from mvcl.kernels.reductions import LSE, MASKS, Reduction, keep, sum_of

Backend = Callable[..., jax.Array]

_BACKENDS: dict[str, Callable[..., Backend]] = {
    "dense": lambda: _dense.dense,
    "gather": lambda: _dense.gather,
    "blockwise": lambda **options: functools.partial(_streaming.streaming, **options),
    "ring": lambda **options: functools.partial(_streaming.streaming, **options),
}
NAMES = tuple(_BACKENDS)


def get(backend: str | Backend, **options) -> Backend:
    """The backend function for a name (``options`` such as ``tile=`` go to its constructor).

    A callable is returned unchanged, so losses accept either a name or a backend function.
    """
    if callable(backend):
        return backend
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {NAMES} or a backend function, got {backend!r}")
    return _BACKENDS[backend](**options)


__all__ = ["LSE", "MASKS", "NAMES", "Reduction", "get", "keep", "sum_of"]
