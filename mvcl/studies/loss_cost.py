"""A loss's cost against N·V: from the loss benchmark's JSON, or timed here on a few sizes.

A cost row is ``{"loss", "n", "v", "time_s", "temp_bytes"}``: the median wall time of one jitted
forward+backward pass (``jax.value_and_grad``) on float32 ``(N, V, D)`` inputs, and the compiled
temporary bytes (``memory_analysis().temp_size_in_bytes``) of that pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from mvcl import losses
from mvcl.timing import time_value_and_grad


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
    """Times ``jax.value_and_grad`` of ``loss`` on a random float32 (n, v, d) input: the median
    of ``repeats`` calls after a warm-up (:func:`mvcl.timing.time_value_and_grad`)."""
    fn = losses.spec(loss).bind(temperature=temperature, backend=backend)
    z = jnp.asarray(np.random.default_rng(0).standard_normal((n, v, d)), jnp.float32)
    timing = time_value_and_grad(fn, z, repeats=repeats)
    return {
        "loss": loss,
        "n": n,
        "v": v,
        "time_s": timing.median_s,
        "temp_bytes": timing.temp_bytes,
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
        if losses.spec(name).accepts_views(v)
    ]
