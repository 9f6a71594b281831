"""Row-reduction backends: how the energy of every query row over the global key set is computed.

A backend is a function ``backend(q, k, *, mask, reduction, axis_name, precision) -> out`` (the
`Backend` protocol; any function of that signature is one) with

* ``q``: (G, n, A, D) query rows, already scaled, in G independent groups;
* ``k``: (G, n, B, D) this device's keys (the global key set is every device's ``k``);
* ``mask``: which keys a row sees (see :func:`mvcl.backends.reductions.keep`);
* ``reduction``: :data:`LSE` or :func:`sum_of` ``(fn)``;
* ``precision``: the ``jax.lax.Precision`` of every matmul, forward and backward
  (:mod:`mvcl.backends.precision`; ``None`` leaves the platform default);
* ``out``: (G, n, A), the reduction of each local query row over the global keys of its group;
  (G, n, A, B) for a reduction built with :func:`per_key_view`, once over each key view's keys
  (the built-in backends do; :func:`self_rows` asks a backend function of your own for one key
  view at a time instead).

The losses in :mod:`mvcl.losses` are written against this signature only; adding a backend here
gives it to every loss. The exact maths of every reduction and backend is in docs/losses.md.

| name | keys | memory per device | backward |
|---|---|---|---|
| ``dense`` | local (single device only) | O((nA)·(nB)) | ``custom_jvp`` (symmetric) / autodiff |
| ``gather`` | ``all_gather`` | O((nA)·(NB)) | ``custom_vjp`` (symmetric) / autodiff |
| ``blockwise``, ``ring`` | streamed tiles, ring-passed blocks | O(n(A+B)D + tile²) | recomputed |

The losses call :func:`self_rows` (the keys are the query rows themselves, ``v = u / sqrt(τ)``),
which takes a backend's symmetric path when it has one (:class:`BuiltinBackend`); a plain backend
function is called with ``q = k = v``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, Protocol

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mvcl._deprecation import warn_moved
from mvcl.backends import dense as _dense
from mvcl.backends import precision
from mvcl.backends import streaming as _streaming
from mvcl.backends.precision import PrecisionLike
from mvcl.backends.reductions import (
    LSE,
    MASKS,
    AxisName,
    Mask,
    Reduction,
    check_key_views,
    keep,
    per_key_view,
    sum_of,
)


class Backend(Protocol):
    """A backend: the one signature every backend has (the module docstring says what each
    argument and the output are). The built-in ones (`BuiltinBackend`), `dense.dense`,
    `dense.gather`, `streaming.streaming` and any function of one's own with this signature are
    backends."""

    def __call__(
        self,
        q: ArrayLike,
        k: ArrayLike,
        *,
        mask: Mask,
        reduction: Reduction,
        axis_name: AxisName | None = None,
        precision: PrecisionLike = None,
    ) -> jax.Array: ...


class SelfRows(Protocol):
    """A backend's symmetric path (`BuiltinBackend.self_rows`): `Backend` with ``q = k = v``."""

    def __call__(
        self,
        v: ArrayLike,
        *,
        mask: Mask,
        reduction: Reduction,
        axis_name: AxisName | None = None,
        precision: PrecisionLike = None,
    ) -> jax.Array: ...


BackendName = Literal["dense", "gather", "blockwise", "ring"]
BackendLike = BackendName | Backend
"""What a ``backend`` argument takes: a built-in backend's name or a backend function."""


@dataclasses.dataclass(frozen=True)
class BuiltinBackend:
    """A built-in backend: called as ``backend(q, k, ...)`` it is a backend like any other.

    ``self_rows(v, ...)`` is the same reduction when the keys are the query rows themselves
    (``q = k = v``), which every loss here needs (it passes ``u / sqrt(τ)``, so that
    ``v_a · v_b = s(u_a, u_b)``). The similarity matrix is then symmetric and the backward pass is
    ``dv = (W + Wᵀ) v``: one matmul per tile instead of ``dq = W k`` and ``dk = Wᵀ q``.

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> dense = backends.get("dense")
      >>> isinstance(dense, backends.BuiltinBackend)
      True
      >>> out = dense(v, v, mask="self", reduction=backends.LSE)  # general keys: q = k = v here
      >>> bool(jax.numpy.allclose(out, dense.self_rows(v, mask="self", reduction=backends.LSE)))
      True
    """

    rows: Backend
    self_rows: SelfRows | None = None

    def __call__(self, q: ArrayLike, k: ArrayLike, **options: Any) -> jax.Array:
        """``rows(q, k, **options)``: the `Backend` signature (``mask``, ``reduction``,
        ``axis_name``, ``precision``)."""
        return self.rows(q, k, **options)


def _streaming_backend(**options: Any) -> BuiltinBackend:
    return BuiltinBackend(
        functools.partial(_streaming.streaming, **options),
        functools.partial(_streaming.streaming_self, **options),
    )


_BACKENDS: dict[BackendName, Callable[..., BuiltinBackend]] = {
    "dense": lambda: BuiltinBackend(_dense.dense, _dense.dense_self),
    "gather": lambda: BuiltinBackend(_dense.gather, _dense.gather_self),
    "blockwise": _streaming_backend,
    "ring": _streaming_backend,
}
NAMES: tuple[BackendName, ...] = tuple(_BACKENDS)


def get(backend: BackendLike, **options: Any) -> Backend:
    """The backend function for a name (``options`` such as ``tile=`` go to its constructor).

    A callable is returned unchanged, so losses accept either a name or a backend function.

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> from mvcl import backends
      >>> blockwise = backends.get("blockwise", tile=8)  # 8 rows per tile
      >>> print(f"{losses.mv_dhel(z, temperature=0.5, backend=blockwise):.4f}")
      6.0199
      >>> print(f"{losses.mv_dhel(z, temperature=0.5, backend='dense'):.4f}")
      6.0199
    """
    if callable(backend):
        return backend
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {NAMES} or a backend function, got {backend!r}")
    return _BACKENDS[backend](**options)


def self_rows(
    backend: BackendLike,
    v: ArrayLike,
    *,
    mask: Mask,
    reduction: Reduction,
    axis_name: AxisName | None = None,
    precision: PrecisionLike = None,
) -> jax.Array:
    """The reduction of every row of ``v`` (G, n, A, D) over the global rows of ``v``: (G, n, A),
    or (G, n, A, A) per key view.

    Uses the backend's symmetric path when it has one, else calls it with ``q = k = v``. For a
    backend function of your own (not a :class:`BuiltinBackend`, whose ``rows`` reduce per key
    view), a per-key-view reduction (`per_key_view`) becomes one call per key view m, against
    the keys of view m alone (``k = v[:, :, m:m+1]``, B = 1): the same work as one call over all
    keys, but only for a mask that does not look at the key's view (``none``, ``instance``).

    Examples:
      >>> import jax
      >>> from mvcl import backends
      >>> v = jax.random.normal(jax.random.key(0), (1, 8, 4, 16)) / 2  # G = 1, n = 8, A = 4
      >>> backends.self_rows("dense", v, mask="self", reduction=backends.LSE).shape
      (1, 8, 4)
      >>> per_view = backends.per_key_view(backends.LSE, 4)  # one output per key view
      >>> backends.self_rows("gather", v, mask="instance", reduction=per_view).shape
      (1, 8, 4, 4)
    """
    fn = get(backend)
    symmetric = getattr(fn, "self_rows", None)
    if symmetric is not None:
        return symmetric(
            v, mask=mask, reduction=reduction, axis_name=axis_name, precision=precision
        )
    if reduction.key_views is None or isinstance(fn, BuiltinBackend):  # its rows reduce per view
        return fn(v, v, mask=mask, reduction=reduction, axis_name=axis_name, precision=precision)
    return _one_key_view_at_a_time(fn, v, mask, reduction, axis_name, precision)


VIEW_BLIND_MASKS: tuple[Mask, ...] = ("none", "instance")
"""Masks whose keep does not depend on the key's view: a key view's keys alone can stand for it."""


def _one_key_view_at_a_time(fn, v, mask, reduction, axis_name, precision):
    v = jnp.asarray(v)
    check_key_views(reduction, v.shape[2])
    if mask not in VIEW_BLIND_MASKS:
        raise ValueError(
            f"a backend function of your own reduces per key view one key view at a time, which "
            f"mask {mask!r} does not allow (only {VIEW_BLIND_MASKS}): use a built-in backend, "
            "or give your backend a self_rows that reduces per key view (BuiltinBackend)"
        )
    plain = dataclasses.replace(reduction, key_views=None)
    outs = [
        fn(
            v,
            v[:, :, m : m + 1],
            mask=mask,
            reduction=plain,
            axis_name=axis_name,
            precision=precision,
        )
        for m in range(v.shape[2])
    ]
    return jnp.stack(outs, axis=-1)


__all__ = [
    "LSE",
    "MASKS",
    "NAMES",
    "AxisName",
    "Backend",
    "BackendLike",
    "BackendName",
    "BuiltinBackend",
    "SelfRows",
    "Mask",
    "PrecisionLike",
    "Reduction",
    "VIEW_BLIND_MASKS",
    "get",
    "keep",
    "per_key_view",
    "precision",
    "self_rows",
    "sum_of",
]


def __getattr__(name: str) -> Any:
    if name == "Kernel":  # the former name of BuiltinBackend
        warn_moved("mvcl.backends.Kernel", "mvcl.backends.BuiltinBackend")
        return BuiltinBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
