"""Timing a config's train step on random images: compile time, XLA's FLOPs and memory, step time.

`time_train_step` builds the model, optimiser and jitted step of a config exactly as a run does
(`mvcl.train.make_train_step`), feeds random uint8 images of ``config.dataset.fake_shape`` (no
data set is read), compiles once, calls the compiled step once (the warm-up) and times ``steps``
more, each waited for. Used by ``experiments/bench_step.py`` and
``experiments/bench_accelerator.py``.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
from ml_collections import config_dict

from mvcl import parallel
from mvcl.train import optim
from mvcl.train.config_checks import num_train_steps
from mvcl.train.sources import global_batch
from mvcl.train.state import build_model, create_train_state
from mvcl.train.step import AXIS, make_train_step


def _first(analysis: Any) -> Any:
    # cost_analysis() is a dict in recent JAX, a list of one dict per program in older ones
    return analysis[0] if isinstance(analysis, (list, tuple)) and analysis else analysis


def time_train_step(
    config: config_dict.ConfigDict,
    *,
    steps: int = 5,
    steps_per_epoch: int = 1000,
    mesh: jax.sharding.Mesh | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Compiles and times the train step of ``config`` on random images.

    Args:
      config: a pretraining config (its ``batch_size``, ``num_views``, model, loss, optimiser,
        ``train.micro_batch`` ... as a run would use them).
      steps: timed steps after the warm-up step (0: compile and measure only, nothing is run).
      steps_per_epoch: for the optimiser's schedule only (the step's speed does not depend on it).
      mesh: the mesh (default: as training, ``config.num_devices``).

    Returns a dict: ``compile_s`` (lowering and compiling), ``xla_flops`` (XLA's FLOP count of
    one step, NaN where it gives none), ``temp_bytes``, ``argument_bytes``, ``output_bytes``,
    ``alias_bytes`` (``memory_analysis()``, None where it gives none), ``first_step_s`` (the
    warm-up), ``step_s`` (the timed steps), ``median_step_s``, ``min_step_s``, ``loss`` (of the
    last step) and ``devices``.
    """
    if mesh is None:
        mesh = parallel.make_mesh(None if config.num_devices == -1 else config.num_devices)
    num_steps = num_train_steps(config, steps_per_epoch)
    tx = optim.make_optimizer(config, num_steps)
    schedule = optim.learning_rate_schedule(config, num_steps)
    model = build_model(config, axis_name=AXIS)
    shape = tuple(config.dataset.fake_shape)
    state = create_train_state(config, model, tx, mesh, shape[-1])
    step = make_train_step(config, model, tx, schedule, mesh)
    sharding = parallel.batch_sharding(mesh, AXIS)
    rng = np.random.default_rng(seed)

    def batch() -> jax.Array:
        images = rng.integers(0, 256, (config.batch_size, *shape), dtype=np.uint8)
        return global_batch(images, sharding, config.batch_size)

    images = batch()
    start = time.perf_counter()
    compiled = step.lower(state, images).compile()
    compile_s = time.perf_counter() - start
    cost = _first(compiled.cost_analysis())
    memory = compiled.memory_analysis()
    row: dict[str, Any] = {
        "devices": mesh.size,
        "compile_s": compile_s,
        "xla_flops": float(cost.get("flops", float("nan"))) if cost else float("nan"),
    }
    for key in ("temp", "argument", "output", "alias"):
        size = None if memory is None else getattr(memory, f"{key}_size_in_bytes", None)
        row[f"{key}_bytes"] = None if size is None else int(size)
    if steps <= 0:
        return row
    start = time.perf_counter()
    state, metrics = compiled(state, images)
    jax.block_until_ready(metrics)
    row["first_step_s"] = time.perf_counter() - start
    times = []
    for _ in range(steps):
        images = batch()  # on the device before the clock starts, as the loop's prefetch has it
        jax.block_until_ready(images)
        start = time.perf_counter()
        state, metrics = compiled(state, images)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    row.update(
        step_s=times,
        median_step_s=float(np.median(times)),
        min_step_s=float(min(times)),
        loss=float(metrics["loss"]),
    )
    return row
