"""Timing a loss: one compiled forward+backward pass, its wall time and its temporary memory;
and the matmul rate its FLOP floor is measured against.

Used by the loss benchmarks (``experiments/bench_losses.py``, ``experiments/bench_accelerator.py``)
and the studies' loss costs (:mod:`mvcl.studies.loss_cost`). Needs only JAX and NumPy.

On an accelerator a call returns before the device is done, and a short kernel takes less time
than one Python dispatch and wait: :func:`time_calls` times ``calls`` calls dispatched back to
back and waits once (``calls=1`` on the CPU, where each call runs to its end anyway).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def timed_call(fn: Callable[..., Any], *args: Any) -> float:
    """Seconds of one call of ``fn(*args)``, until its outputs are ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class Timing:
    """The measurements of :func:`time_value_and_grad`.

    Attributes:
      compiled: the compiled ``jax.value_and_grad`` of the function.
      compile_s: seconds to lower and compile it.
      temp_bytes: its compiled temporary bytes per device (``None`` if XLA does not say).
      first_call_s: the first call (the warm-up).
      times_s: the timed calls (the first call alone when there is no warm-up).
    """

    compiled: Any
    compile_s: float
    temp_bytes: int | None
    first_call_s: float
    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        """The median of :attr:`times_s`."""
        return float(np.median(self.times_s))


def time_value_and_grad(
    fn: Callable[[jax.Array], jax.Array],
    z: jax.Array,
    *,
    repeats: int = 3,
    budget_s: float | None = None,
    warmup: bool = True,
    calls: int = 1,
) -> Timing:
    """Compiles ``jax.jit(jax.value_and_grad(fn))`` for ``z`` and times calls of it.

    The first call is the warm-up; then ``repeats`` calls are timed, or with ``budget_s`` as many
    as fit in that many seconds at the speed of the first timed one (at least one, at most
    ``repeats``). ``warmup=False`` times the first call only (for calls of minutes). With
    ``calls > 1`` each timed value is the time per call of ``calls`` calls dispatched back to back
    (:func:`time_calls`, for kernels shorter than a dispatch on an accelerator).
    """
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(fn)).lower(z).compile()
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    first = timed_call(compiled, z)
    if warmup:
        times = [time_calls(compiled, z, calls=calls)]
        count = repeats
        if budget_s is not None:
            count = int(min(repeats, max(1, budget_s // max(times[0] * calls, 1e-3))))
        times += [time_calls(compiled, z, calls=calls) for _ in range(count - 1)]
    else:
        times = [first]
    return Timing(
        compiled=compiled,
        compile_s=compile_s,
        temp_bytes=None if stats is None else int(stats.temp_size_in_bytes),
        first_call_s=first,
        times_s=tuple(times),
    )


def time_calls(fn: Callable[..., Any], *args: Any, calls: int = 1) -> float:
    """Seconds per call of ``fn(*args)`` over ``calls`` calls dispatched back to back, waiting
    for the outputs of the last one only (all of them with ``calls=1``)."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    start = time.perf_counter()
    for _ in range(calls - 1):
        fn(*args)
    jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / calls


MATMUL_SHAPES = {
    "square_1024": (1024, 1024, 1024),
    "square_2048": (2048, 2048, 2048),
    "rows_8192_d128": (8192, 128, 8192),
    "square_8192": (8192, 8192, 8192),
}
"""(M, K, N) of the matmuls :func:`matmul_rate` times: a square one and one of a loss's shape
(8,192 rows of D = 128 against 8,192 keys); ``square_8192`` fills an accelerator."""


def matmul_rate(
    repeats: int = 9,
    shapes: tuple[str, ...] = ("square_2048", "rows_8192_d128"),
    *,
    precision: Any = None,
    dtype: Any = np.float32,
    calls: int = 1,
) -> dict[str, float]:
    """Matmul GFLOP/s (median of ``repeats``) of each of ``shapes`` (names of `MATMUL_SHAPES`)
    in ``dtype`` at ``precision`` (a ``jax.lax.Precision`` or ``None``: the platform's default);
    ``gflops`` is the fastest shape's rate (the strictest floor). Each repeat times ``calls``
    calls (:func:`time_calls`)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    rates: dict[str, float] = {}
    for name in shapes:
        m, k, n = MATMUL_SHAPES[name]
        a = jnp.asarray(rng.standard_normal((m, k)), dtype)
        b = jnp.asarray(rng.standard_normal((k, n)), dtype)
        f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=precision))
        time_calls(f, a, b, calls=calls)
        seconds = float(np.median([time_calls(f, a, b, calls=calls) for _ in range(repeats)]))
        rates[name] = 2 * m * k * n / seconds / 1e9
    rates["gflops"] = max(rates.values())
    return rates
