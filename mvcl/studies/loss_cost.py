"""Loss-kernel cost against N·V: from the loss benchmark's JSON, or timed here on a few sizes.

A cost row is ``{"loss", "n", "v", "time_s", "temp_bytes"}``: the median wall time of one jitted
forward+backward pass (``jax.value_and_grad``) on float32 ``(N, V, D)`` inputs, and the compiled
temporary bytes (``memory_analysis().temp_size_in_bytes``) of that pass.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mvcl import losses


def from_bench(path: str | os.PathLike, backend: str) -> list[dict[str, Any]] | None:
    """The single-device ``backend`` rows of ``experiments/bench_losses.py``'s JSON, or None if
    the file does not exist (rows that were skipped or failed are left out)."""
    path = Path(path)
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    return [
        {k: r[k] for k in ("loss", "n", "v", "time_s", "temp_bytes")}
        for r in report["rows"]
        if r.get("backend") == backend and r.get("devices", 1) == 1 and "time_s" in r
    ]


def time_loss(
    loss: str,
    n: int,
    v: int,
    *,
    d: int = 128,
    temperature: float = 0.5,
    backend: str = "dense",
    repeats: int = 3,
) -> dict[str, Any]:
    """Times ``jax.value_and_grad`` of ``loss`` on a random float32 (n, v, d) input."""
    kwargs = {"backend": backend}
    if loss not in losses.TEMPERATURE_FREE:
        kwargs["temperature"] = temperature
    fn = losses.get(loss)
    z = jnp.asarray(np.random.default_rng(0).standard_normal((n, v, d)), jnp.float32)
    compiled = jax.jit(jax.value_and_grad(lambda x: fn(x, **kwargs))).lower(z).compile()
    stats = compiled.memory_analysis()
    jax.block_until_ready(compiled(z))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(z))
        times.append(time.perf_counter() - start)
    return {
        "loss": loss,
        "n": n,
        "v": v,
        "time_s": float(np.median(times)),
        "temp_bytes": None if stats is None else int(stats.temp_size_in_bytes),
    }


def time_losses(
    names: Sequence[str],
    views: Sequence[int],
    ns: Sequence[int],
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """`time_loss` for every loss x V x N (two-view losses at V = 2 only)."""
    return [
        time_loss(name, n, v, **kwargs)
        for name in names
        for v in views
        for n in ns
        if name not in losses.TWO_VIEW or v == 2
    ]
