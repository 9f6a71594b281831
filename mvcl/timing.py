"""Timing a loss: one compiled forward+backward pass, its wall time and its temporary memory.

Used by the loss benchmark (``experiments/bench_losses.py``) and the studies' kernel costs
(:mod:`mvcl.studies.loss_cost`). Needs only JAX and NumPy.
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
) -> Timing:
    """Compiles ``jax.jit(jax.value_and_grad(fn))`` for ``z`` and times calls of it.

    The first call is the warm-up; then ``repeats`` calls are timed, or with ``budget_s`` as many
    as fit in that many seconds at the speed of the first timed one (at least one, at most
    ``repeats``). ``warmup=False`` times the first call only (for calls of minutes).
    """
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(fn)).lower(z).compile()
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    first = timed_call(compiled, z)
    if warmup:
        times = [timed_call(compiled, z)]
        count = repeats
        if budget_s is not None:
            count = int(min(repeats, max(1, budget_s // max(times[0], 1e-3))))
        times += [timed_call(compiled, z) for _ in range(count - 1)]
    else:
        times = [first]
    return Timing(
        compiled=compiled,
        compile_s=compile_s,
        temp_bytes=None if stats is None else int(stats.temp_size_in_bytes),
        first_call_s=first,
        times_s=tuple(times),
    )
