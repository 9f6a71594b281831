"""A config's train step outside a run: its device memory from the compiler, and its time.

`plan` builds the config's real train step (`mvcl.train.make_train_step`: model, loss, optimiser,
views, and whatever else the config switches on), lowers it for abstract inputs
(``jax.ShapeDtypeStruct``: the train state and a uint8 global batch sharded over the mesh),
compiles it for the current backend and device count, and reads XLA's
``compiled.memory_analysis()``. Nothing is allocated or run. Per device:

* **state**: parameters, BatchNorm statistics and optimiser state (replicated on every device);
* **inputs**: the device's share of the uint8 image batch;
* **outputs**: the new state and the metrics, of which the donated state reuses the old state's
  buffers (``alias``);
* **temporaries**: the activations kept for the backward pass, the views, the loss's blocks and
  the gradients: XLA's scratch space at the step's peak;

and their total, ``arguments + outputs - alias + temporaries + generated code``. `largest_batch`
searches the largest batch per device whose total fits a memory budget.

The figures are those of the executable XLA compiles for the backend it runs on. Compiled for
the CPU (simulated devices, ``--xla_force_host_platform_device_count``) they estimate, and do not
equal, what a GPU or TPU needs: the other backends fuse, lay out, pad (TPU tiles of 8 x 128) and
rematerialise differently. Compile on the accelerator for its own figures.

`time_train_step` compiles the same step and runs it on random uint8 images of
``config.dataset.fake_shape`` (no data set is read): compile time, XLA's FLOPs and memory, and
the time of a few steps, each waited for (``experiments/bench_step.py`` and
``experiments/bench_accelerator.py``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict

from mvcl import parallel
from mvcl.train.config_checks import num_train_steps, validate_config
from mvcl.train.inputs import global_batch
from mvcl.train.state import (
    build_model,
    create_train_state,
    learning_rate_schedule,
    make_optimizer,
)
from mvcl.train.step import AXIS, make_train_step

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Per-device bytes of one compiled train step (see the module docstring)."""

    backend: str
    devices: int
    batch_per_device: int
    image_shape: tuple[int, int, int]
    state_bytes: int
    input_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    argument_bytes: int

    @property
    def total_bytes(self) -> int:
        """Peak estimate: arguments + outputs - donated (aliased) + temporaries + code."""
        return (
            self.argument_bytes
            + self.output_bytes
            - self.alias_bytes
            + self.temp_bytes
            + self.code_bytes
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), total_bytes=self.total_bytes)


def image_shape(config: config_dict.ConfigDict) -> tuple[int, int, int]:
    """(H, W, C) of the training images the host sends: ``config.dataset.whole_image_size`` or
    ``config.dataset.image_size`` square if set, else ``config.dataset.fake_shape`` (which every
    config sets to its data set's image shape)."""
    h, w, c = config.dataset.fake_shape
    size = config.dataset.get("whole_image_size") or config.dataset.image_size
    return (size, size, c) if size else (h, w, c)


def _bytes(tree: Any) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def _num_devices(config: config_dict.ConfigDict) -> int | None:
    return None if config.num_devices == -1 else config.num_devices


def plan(
    config: config_dict.ConfigDict,
    batch_per_device: int | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
) -> MemoryPlan:
    """Compiles (without running) the config's train step and reads its memory per device.

    Args:
      config: a pretraining config (``configs/*.py``).
      batch_per_device: images per device; None means ``config.batch_size / devices``. The
        global batch ``batch_per_device * devices`` replaces ``config.batch_size`` in a copy of
        ``config`` (so anything in the step that depends on it sees the planned batch).
      mesh: the mesh to compile for; default: as training (``config.num_devices``).
    """
    if mesh is None:
        mesh = parallel.make_mesh(_num_devices(config))
    devices = mesh.size
    if batch_per_device is None:
        batch_per_device = max(config.batch_size // devices, 1)
    if batch_per_device < 1:
        raise ValueError(f"batch_per_device must be >= 1, got {batch_per_device}")
    config = config.copy_and_resolve_references()
    config.batch_size = batch_per_device * devices
    config.num_devices = devices
    validate_config(config, device_count=jax.device_count())

    shape = image_shape(config)
    total_steps = max(num_train_steps(config, 1), 1)
    model = build_model(config, axis_name=AXIS)
    tx = make_optimizer(config, total_steps)
    schedule = learning_rate_schedule(config, total_steps)
    replicated = NamedSharding(mesh, P())
    state = jax.eval_shape(lambda: create_train_state(config, model, tx, mesh, channels=shape[-1]))
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
    )
    batch_sharding = parallel.batch_sharding(mesh)
    images = jax.ShapeDtypeStruct((config.batch_size, *shape), np.uint8, sharding=batch_sharding)
    input_bytes = batch_per_device * int(np.prod(shape))
    if config.dataset.get("whole_image_size"):  # the whole-image layout of mvcl.train.inputs
        valid = jax.ShapeDtypeStruct((config.batch_size, 2), np.int32, sharding=batch_sharding)
        images = {"image": images, "valid": valid}
        input_bytes += batch_per_device * 2 * 4
    step = make_train_step(config, model, tx, schedule, mesh)
    stats = step.lower(state, images).compile().memory_analysis()
    if stats is None:
        raise RuntimeError(f"the {jax.default_backend()} backend gives no memory analysis")
    return MemoryPlan(
        backend=jax.default_backend(),
        devices=devices,
        batch_per_device=batch_per_device,
        image_shape=tuple(int(s) for s in shape),
        state_bytes=_bytes(state),
        input_bytes=input_bytes,
        output_bytes=int(stats.output_size_in_bytes),
        alias_bytes=int(stats.alias_size_in_bytes),
        temp_bytes=int(stats.temp_size_in_bytes),
        code_bytes=int(stats.generated_code_size_in_bytes),
        argument_bytes=int(stats.argument_size_in_bytes),
    )


def largest_batch(
    config: config_dict.ConfigDict,
    device_memory_bytes: int,
    *,
    mesh: jax.sharding.Mesh | None = None,
    max_batch_per_device: int = 1 << 16,
) -> tuple[int, list[MemoryPlan]]:
    """The largest batch per device whose planned total fits ``device_memory_bytes``.

    Every probe is one compilation (`plan`), so the search is short: from the smallest batch
    b0 (1, or 2 on one device: a global batch holds at least 2 images) and 2·b0, secant steps
    (XLA's totals are close to affine in the batch) guess where the total crosses the budget,
    from the last two sizes that fit; then the search gallops (doubling steps) and bisects
    until a size that fits sits next to one that does not. It assumes the total grows with
    the batch.

    Returns:
      ``(batch per device, or 0 if even the smallest does not fit; the plans compiled, in
      search order)``.
    """
    if device_memory_bytes <= 0:
        raise ValueError(f"device memory must be > 0 bytes, got {device_memory_bytes}")
    plans: dict[int, MemoryPlan] = {}

    def total(batch: int) -> int:
        if batch not in plans:
            plans[batch] = plan(config, batch, mesh=mesh)
        return plans[batch].total_bytes

    def fits(batch: int) -> bool:
        return total(batch) <= device_memory_bytes

    devices = (mesh or parallel.make_mesh(_num_devices(config))).size
    smallest = -(-2 // devices)  # a contrastive batch holds at least 2 images
    if not fits(smallest):
        return 0, list(plans.values())
    good, bad = smallest, None  # fits(good); bad is None or the smallest known not to fit
    previous = None
    candidate = min(2 * smallest, max_batch_per_device)
    for _ in range(4):  # secant steps: the line through the last two sizes that fit
        if candidate <= good:
            break
        if not fits(candidate):
            bad = candidate
            break
        previous, good = good, candidate
        slope = (total(good) - total(previous)) / (good - previous)
        if slope <= 0:
            break
        step = int((device_memory_bytes - total(good)) // slope)
        candidate = min(good + max(step, 1), max_batch_per_device)
    step = 1
    while bad is None and good < max_batch_per_device:  # gallop up
        candidate = min(good + step, max_batch_per_device)
        if fits(candidate):
            good, step = candidate, step * 2
        else:
            bad = candidate
    while bad is not None and bad - good > 1:  # bisect
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, list(plans.values())


def format_plan(plan_: MemoryPlan) -> str:
    """A table of the per-device bytes of one plan, in MiB."""
    mib = 1024**2
    rows = [
        ("parameters + optimiser state", plan_.state_bytes),
        ("inputs (uint8 images)", plan_.input_bytes),
        ("outputs (new state, metrics)", plan_.output_bytes),
        ("  of which donated (aliased)", plan_.alias_bytes),
        ("temporaries", plan_.temp_bytes),
        ("generated code", plan_.code_bytes),
        ("total (peak estimate)", plan_.total_bytes),
    ]
    h, w, c = plan_.image_shape
    lines = [
        f"per device, batch {plan_.batch_per_device} x {h}x{w}x{c} on {plan_.devices} "
        f"{plan_.backend} device(s):"
    ]
    lines += [f"  {name:<32}{value / mib:>12.2f} MiB" for name, value in rows]
    return "\n".join(lines)


# --- the step's time ------------------------------------------------------------------------------


def _first(analysis: Any) -> Any:
    # cost_analysis() is a dict in recent JAX, a list of one dict per program in older ones
    return analysis[0] if isinstance(analysis, (list, tuple)) and analysis else analysis


def step_on_random_images(
    config: config_dict.ConfigDict,
    mesh: jax.sharding.Mesh,
    *,
    steps_per_epoch: int = 1000,
    seed: int = 0,
) -> tuple[Any, Any, Any, Callable[[], jax.Array]]:
    """``(model, state, step, batch)``: the model, train state and jitted train step of ``config``
    on ``mesh`` as a run builds them, and ``batch()``, which gives a global batch of random uint8
    images of the config's shape, sharded as the loop's. ``steps_per_epoch`` sets the optimiser's
    schedule only."""
    num_steps = num_train_steps(config, steps_per_epoch)
    tx = make_optimizer(config, num_steps)
    schedule = learning_rate_schedule(config, num_steps)
    model = build_model(config, axis_name=AXIS)
    shape = tuple(config.dataset.fake_shape)
    state = create_train_state(config, model, tx, mesh, shape[-1])
    step = make_train_step(config, model, tx, schedule, mesh)
    sharding = parallel.batch_sharding(mesh, AXIS)
    rng = np.random.default_rng(seed)

    def batch() -> jax.Array:
        images = rng.integers(0, 256, (config.batch_size, *shape), dtype=np.uint8)
        return global_batch(images, sharding, config.batch_size)

    return model, state, step, batch


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
        mesh = parallel.make_mesh(_num_devices(config))
    _, state, step, batch = step_on_random_images(
        config, mesh, steps_per_epoch=steps_per_epoch, seed=seed
    )
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
