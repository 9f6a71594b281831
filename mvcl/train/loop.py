"""Contrastive pretraining: config checks, data, train state, the sharded step and the loop.

One run, ``train_and_evaluate(config, workdir)``:

1. **Config checks.** `validate_config` turns every bad field into a ``ValueError`` naming it
   (``config.loss.name``, ``config.num_views``, ``config.batch_size``, ...) before any work; a
   missing data set fails as ``config.dataset.name`` when the sources are opened, still before the
   first step.
2. **Data.** The host reads each image of its share of the global batch once, as uint8
   (`mvcl.data.BatchIterator`: a pure function of ``(seed, step)``, made by grain workers), and
   the global batch is one ``jax.Array`` sharded over the ``data`` axis of a mesh of every device
   of every process, copied there one step ahead (`mvcl.train.feed`).
3. **State.** `TrainState`: step, params, batch_stats, optimiser state and the augmentation key,
   created replicated on the mesh.
4. **Step.** `make_train_step`: inside ``jax.shard_map`` each device makes the V views of its
   images (`mvcl.data.make_views`), runs the model with BatchNorm statistics over the global batch
   (``axis_name``) and calls the loss with ``axis_name``, which returns the global-batch loss;
   ``jax.grad`` of the shard_map-ed function is the gradient of that loss. The views of instance
   ``i`` of the global batch at step ``s`` come from the key ``fold_in(fold_in(rng, s), i)``: the
   same on one device or many. With multi-crop (``config.augment.multicrop.num_small = K > 0``)
   that key is split in two, for the V large and the K small crops; the model runs once per
   resolution and the loss sees ``(n, V + K, D)``.
5. **Loop.** Progress bar, metrics (TensorBoard + ``metrics.jsonl``, each step once),
   checkpoints every ``config.checkpoint_every_steps``, on SIGTERM or SIGINT (save, then return;
   `mvcl.train.signals`) and at the end. A rerun in the same workdir resumes from the newest
   checkpoint that restores, if its config may continue the run (`mvcl.train.run_identity`:
   nothing is written before that check). Evaluation (`mvcl.train.evaluate`;
   `mvcl.train.multimodal` for per-view models) follows the last step.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict
from tqdm import tqdm

from mvcl import data, kernels, losses, models, parallel
from mvcl.models import per_view
from mvcl.train import (
    cli,
    evaluate,
    feed,
    grad_cache,
    multimodal,
    noise,
    optim,
    run_identity,
    signals,
)
from mvcl.train.checkpoint import Checkpointer
from mvcl.train.errors import ConfigError, NoRunError
from mvcl.train.writers import MetricWriter

AXIS = parallel.DEFAULT_AXIS
LOSS_BACKENDS = ("gather", "ring")  # the backends that run inside shard_map over many devices
DTYPES = ("float32", "bfloat16")
CONFIG_FILE = run_identity.CONFIG_FILE
CHECKPOINT_DIR = "checkpoints"

# --- 1. config checks ---------------------------------------------------------------------------


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}: {message}")


def validate_config(
    config: config_dict.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int | None = None,
) -> None:
    """Raises ``ConfigError("config.<field>: ...")`` (a ``ValueError``) for the first invalid field.

    ``device_count`` and ``process_count`` default to ``jax.device_count()`` and
    ``jax.process_count()``. The data set is checked when it is opened (`open_sources`).
    """
    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    loss, views = config.loss.name, config.num_views
    _require(
        loss in losses.NAMES,
        "loss.name",
        f"unknown loss {loss!r}; known: {', '.join(losses.NAMES)}",
    )
    _require(views >= 2, "num_views", f"contrastive learning needs >= 2 views, got {views}")
    _require(
        loss not in losses.TWO_VIEW or views == 2,
        "num_views",
        f"{loss!r} is a two-view loss and needs num_views = 2, got {views}",
    )
    _validate_multicrop(config)
    _require(
        config.loss.backend in LOSS_BACKENDS,
        "loss.backend",
        f"must be one of {LOSS_BACKENDS} (of {kernels.NAMES}, the ones for many devices), "
        f"got {config.loss.backend!r}",
    )
    _require(
        loss in losses.TEMPERATURE_FREE or config.loss.temperature > 0,
        "loss.temperature",
        f"must be > 0, got {config.loss.temperature}",
    )
    _require(
        config.model.name in models.BACKBONES,
        "model.name",
        f"unknown model {config.model.name!r}; known: {', '.join(models.BACKBONES)}",
    )
    _require(
        config.model.dtype in DTYPES,
        "model.dtype",
        f"must be one of {DTYPES}, got {config.model.dtype!r}",
    )
    _require(
        config.optim.name in optim.OPTIMIZERS,
        "optim.name",
        f"must be one of {optim.OPTIMIZERS}, got {config.optim.name!r}",
    )
    _require(config.optim.lr > 0, "optim.lr", f"must be > 0, got {config.optim.lr}")
    _require(
        0 <= config.optim.warmup_fraction < 1,
        "optim.warmup_fraction",
        f"must be in [0, 1), got {config.optim.warmup_fraction}",
    )
    _require(
        config.num_devices == -1 or 1 <= config.num_devices <= device_count,
        "num_devices",
        f"must be -1 (all) or in [1, {device_count}], got {config.num_devices}",
    )
    _require(
        process_count == 1 or config.num_devices in (-1, device_count),
        "num_devices",
        "a multi-process run uses every device (-1)",
    )
    devices = device_count if config.num_devices == -1 else config.num_devices
    _require(
        config.batch_size >= 2 and config.batch_size % devices == 0,
        "batch_size",
        f"{config.batch_size} images do not divide over {devices} devices",
    )
    grad_cache.check_micro_batch(grad_cache.micro_batch_of(config), config.batch_size // devices)
    _require(
        config.num_steps > 0 or config.num_epochs > 0,
        "num_epochs",
        f"set num_epochs > 0 or num_steps > 0, got {config.num_epochs} and {config.num_steps}",
    )
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        _require(config[field] >= 1, field, f"must be >= 1, got {config[field]}")


def _validate_multicrop(config: config_dict.ConfigDict) -> None:
    """The checks of ``config.augment.multicrop``; its other fields only matter if it is on."""
    multicrop, loss = config.augment.multicrop, config.loss.name
    field = "augment.multicrop."
    _require(
        multicrop.num_small >= 0,
        field + "num_small",
        f"must be >= 0 (0: no multi-crop), got {multicrop.num_small}",
    )
    if not multicrop.num_small:
        return
    _require(
        loss not in losses.TWO_VIEW,
        field + "num_small",
        f"{loss!r} is a two-view loss: multi-crop would give it num_views + num_small = "
        f"{config.num_views + multicrop.num_small} views",
    )
    _require(
        1 <= multicrop.small_size <= config.augment.crop_size,
        field + "small_size",
        f"must be in [1, crop_size = {config.augment.crop_size}], got {multicrop.small_size}",
    )
    _require(
        0 < multicrop.small_min_scale <= 1,
        field + "small_min_scale",
        f"must be in (0, 1], got {multicrop.small_min_scale}",
    )
    _require(
        multicrop.small_min_scale <= multicrop.small_max_scale <= 1,
        field + "small_max_scale",
        f"must be in [small_min_scale, 1] = [{multicrop.small_min_scale}, 1], "
        f"got {multicrop.small_max_scale}",
    )


# --- 2. data ------------------------------------------------------------------------------------


def fake_source(config: config_dict.ConfigDict) -> list[dict[str, Any]]:
    """``config.dataset.fake_num_examples`` random uint8 images of ``fake_shape`` (seeded)."""
    rng = np.random.default_rng(config.seed)
    shape = (config.dataset.fake_num_examples, *config.dataset.fake_shape)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    return [{"image": image, "label": i % 10} for i, image in enumerate(images)]


def _open_split(config: config_dict.ConfigDict, field: str) -> data.input_pipeline.Source:
    """The split ``config.dataset.<field>``; a ConfigError naming the fields if it cannot open."""
    ds = config.dataset
    try:
        data.fashion_mnist.prepare_from_config(ds)  # from config.dataset.source_dir
        return data.load_split(ds.name, ds[field], ds.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(
            f"config.dataset.name: cannot read split {ds[field]!r} (config.dataset.{field}) of "
            f"{ds.name!r} in {ds.data_dir!r}: {e}"
        ) from e


def open_sources(config: config_dict.ConfigDict) -> data.input_pipeline.Source:
    """The training source; also checks that the evaluation split opens if evaluation is on."""
    if config.dataset.fake:
        source = fake_source(config)
    else:
        source = _open_split(config, "train_split")
        if config.eval.enabled:
            _open_split(config, "test_split")
    _require(
        config.batch_size <= len(source),
        "batch_size",
        f"{config.batch_size} exceeds the {len(source)} training examples",
    )
    return source


def num_train_steps(config: config_dict.ConfigDict, steps_per_epoch: int) -> int:
    """``config.num_steps`` if set (> 0), else ``config.num_epochs`` epochs."""
    return config.num_steps if config.num_steps > 0 else config.num_epochs * steps_per_epoch


def global_batch(images: np.ndarray, sharding: NamedSharding, batch_size: int) -> jax.Array:
    """This process's uint8 images as its rows of the global (batch_size, H, W, C) array."""
    return jax.make_array_from_process_local_data(sharding, images, (batch_size, *images.shape[1:]))


# --- 3. model and train state -------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (and is checkpointed) but the input position.

    ``rng`` is a raw uint32 PRNG key; the views at step ``s`` are drawn from
    ``fold_in(fold_in(rng, s), global instance index)``.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array

    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def build_model(config: config_dict.ConfigDict, axis_name: str | None = None) -> nn.Module:
    """The ``ContrastiveModel`` of ``config.model``; ``axis_name`` for global BatchNorm.

    With ``config.model.per_view`` set (a list of per-group encoder specs), the
    `mvcl.models.PerViewModel` of `mvcl.models.per_view.from_config` instead.
    """
    if config.model.get("per_view") is not None:
        return per_view.from_config(config, axis_name=axis_name)
    return models.get_model(
        config.model.name,
        proj_dim=config.model.proj_dim,
        proj_hidden_dim=config.model.proj_hidden_dim,
        dtype=jnp.dtype(config.model.dtype),
        axis_name=axis_name,
        **config.model.kwargs.to_dict(),
    )


def create_train_state(
    config: config_dict.ConfigDict,
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    channels: int,
) -> TrainState:
    """The initial state for ``config.seed``, replicated over ``mesh``.

    Parameters are drawn with an ``"rbg"`` key (XLA's RngBitGenerator): with threefry, the
    hundreds of initialiser calls of a ResNet-50 take several times longer to compile on CPU.
    The values are a function of the seed (and the backend); the augmentation key is threefry.
    """

    def init() -> TrainState:
        size = config.augment.crop_size
        shape = (2, size, size, channels)
        if isinstance(model, models.PerViewModel):  # takes (n, V, S, S, C)
            shape = (2, config.num_views, *shape[1:])
        variables = model.init(
            jax.random.key(config.seed, impl="rbg"), jnp.zeros(shape), train=False
        )
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            opt_state=tx.init(variables["params"]),
            rng=jax.random.key_data(jax.random.key(config.seed)),
        )

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))()


# --- 4. the sharded train step ------------------------------------------------------------------


def make_loss_fn(config: config_dict.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """``z (n, V, D) -> global-batch loss`` of ``config.loss``, to call inside shard_map."""
    kwargs = config.loss.kwargs.to_dict()
    kwargs["precision"] = config.loss.get("precision")  # None: HIGHEST for float32 embeddings
    if config.loss.name not in losses.TEMPERATURE_FREE:
        kwargs["temperature"] = config.loss.temperature
    return functools.partial(
        losses.get(config.loss.name), axis_name=AXIS, backend=config.loss.backend, **kwargs
    )


def _whole(images: feed.DeviceBatch) -> bool:
    return isinstance(images, dict)


def _num_images(images: feed.DeviceBatch) -> int:
    return (images["image"] if _whole(images) else images).shape[0]


def make_train_step(
    config: config_dict.ConfigDict,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: jax.sharding.Mesh,
) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """The jitted step ``(state, images) -> (state, metrics)``; ``state`` is donated.

    ``images`` is the uint8 (B, H, W, C) global batch sharded over ``AXIS`` (whole-image layout:
    ``{"image": ..., "valid": int32 (B, 2)}``, see `mvcl.train.feed`); ``model`` must have
    ``axis_name=AXIS``. Metrics: ``loss`` (before the update), ``learning_rate``, ``grad_norm``.

    Views come in groups of one resolution (`mvcl.data.view_groups`): the V views, or with
    multi-crop the V large and the K small crops, each group from its own part of the instance's
    key (``jax.random.split``; one group uses the key itself). The model runs on each group
    separately, so every BatchNorm normalises a group with that group's global-batch statistics
    (as SwAV); the backbone's global pooling gives every group the same feature width, and the
    projections are concatenated to ``(n, V + K, D)``. The running BatchNorm averages are those
    of the first (large-crop) pass only: evaluation feeds centre crops at ``crop_size``, whose
    statistics the small crops' would bias (SwAV's PyTorch code updates them with both passes).

    With ``config.train.micro_batch = m`` the gradient is gradient-cached
    (`mvcl.train.grad_cache`): each device encodes its images in chunks of ``m`` (with all their
    views and the same keys), once without activations for the loss and ``dL/dz``, once under
    ``jax.vjp`` per chunk; BatchNorm then normalises each chunk with its own statistics.
    """
    groups = data.view_groups(config.num_views, config.augment.to_dict())
    loss_fn = make_loss_fn(config)
    # A shared backbone takes the views flattened to (n * count, S, S, C), instance-major; a
    # PerViewModel takes (n, V, S, S, C) and routes each view to its own encoder.
    flatten = not isinstance(model, models.PerViewModel)

    def views_of(key: jax.Array, image: feed.DeviceBatch) -> list[jax.Array]:
        keys = [key] if len(groups) == 1 else jax.random.split(key, len(groups))
        image, valid = (image["image"], image["valid"][None]) if _whole(image) else (image, None)
        return [
            data.make_views(k, image[None], count, valid=valid, **kwargs)[0]
            for k, (count, kwargs) in zip(keys, groups)
        ]

    def device_keys(rng, step, n):
        index = jax.lax.axis_index(AXIS) * n + jnp.arange(n)  # global instance index
        step_key = jax.random.fold_in(rng, step)
        return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, index)

    def encode(params, batch_stats, images, keys):
        n = _num_images(images)
        outputs = [
            model.apply(
                {"params": params, "batch_stats": batch_stats},
                views.reshape(-1, *views.shape[2:]) if flatten else views,
                train=True,
                mutable=["batch_stats"],
            )
            for views in jax.vmap(views_of)(keys, images)  # (n, count, S, S, C) per group
        ]
        z = jnp.concatenate([z.reshape(n, -1, z.shape[-1]) for (_, z), _ in outputs], axis=1)
        return z, outputs[0][1]["batch_stats"]

    def device_loss(params, batch_stats, images, rng, step):
        keys = device_keys(rng, step, _num_images(images))
        z, batch_stats = encode(params, batch_stats, images, keys)
        return loss_fn(z), batch_stats

    global_loss = jax.shard_map(
        device_loss,
        mesh=mesh,
        in_specs=(P(), P(), P(AXIS), P(), P()),
        out_specs=(P(), P()),
    )

    micro_batch = grad_cache.micro_batch_of(config)
    if micro_batch is None:
        value_and_grad = jax.value_and_grad(global_loss, has_aux=True)
    else:  # two encoder passes in chunks around the loss (mvcl.train.grad_cache)
        value_and_grad = grad_cache.cached_value_and_grad(
            encode, device_keys, loss_fn, mesh, AXIS, micro_batch
        )

    def train_step(state: TrainState, images: jax.Array):
        (loss, batch_stats), grads = value_and_grad(
            state.params, state.batch_stats, images, state.rng, state.step
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        metrics = {
            "loss": loss,
            "learning_rate": schedule(state.step),
            "grad_norm": optax.tree.norm(grads),
        }
        return new_state, metrics

    # The state is donated: XLA writes the new state into the old one's buffers, so the step
    # holds one copy of parameters and optimiser state, not two. The caller must not touch the
    # state it passed in after the call (use the returned one).
    return jax.jit(train_step, out_shardings=NamedSharding(mesh, P()), donate_argnums=0)


# --- 5. the loop --------------------------------------------------------------------------------


def _agree(flag: bool) -> bool:
    """Whether ``flag`` holds on any process (a blocking collective with several)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.int32(flag)).any())


def _should_stop(step: int, every: int) -> bool:
    """Whether to stop after ``step`` because of SIGTERM/SIGINT: every process gets the same answer.

    One process stops as soon as it has the signal. Several agree on it with a blocking
    collective, so only at every ``every``-th step (where the loop syncs for logging anyway).
    """
    if jax.process_count() > 1 and step % every:
        return False
    return _agree(signals.received() is not None)


def _stop_reason() -> str:
    name = signals.received()
    return name if name is not None else "A signal to another process"


def _mean_metrics(history: Sequence[Mapping[str, jax.Array]]) -> dict[str, float]:
    values = jax.device_get(list(history))
    return {f"train/{k}": float(np.mean([m[k] for m in values])) for k in values[0]}


def _announce(message: str) -> None:
    """Prints on the first process only (tqdm-safe)."""
    if jax.process_index() == 0:
        tqdm.write(message)


def _latest_step_on_disk(workdir: str) -> int | None:
    """The newest complete checkpoint's step, from the directory names (orbax renames a step's
    temporary directory to its number when the save is complete)."""
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return None
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
    return max(steps, default=None)


def train_and_evaluate(
    config: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    *,
    allow_config_change: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Pretrains as ``config`` says, in ``workdir``, resuming the run there if any; evaluates.

    A new run writes ``config.json``; every session appends to ``config_history.jsonl`` and
    writes ``metrics.jsonl``, TensorBoard events and ``checkpoints/`` (`mvcl.train.writers`,
    `mvcl.train.checkpoint`). A rerun in the same workdir resumes from the newest checkpoint
    that restores, if ``config`` may continue the run there (`mvcl.train.run_identity`).
    SIGTERM or SIGINT saves a checkpoint and returns (`mvcl.train.signals`).

    Args:
      config: the run's config (``configs/*.py``).
      workdir: the run's directory.
      allow_config_change: fields of the consent class that may differ from the run's config
        (`mvcl.train.run_identity`). None: the ``--allow_config_change`` flag of the command-line
        program running, if any (`mvcl.train.cli.allowed_config_changes`).

    Returns:
      ``{"step": last step, "preempted": bool, "state": TrainState, "eval": {...}}``: "eval"
      holds the results of `mvcl.train.evaluate.evaluate` (empty when evaluation is off or was
      stopped by a signal). "preempted" is True when a signal stopped training or evaluation
      ("state" and "step" are None if it came before the run started).

    Raises:
      ConfigError: an invalid field, or a config that may not continue the run in ``workdir``
        (`RunIdentityError`, `CheckpointMismatchError`).
      WorkdirError: ``workdir`` cannot hold the run.
    """
    noise.install()
    validate_config(config)
    workdir = os.fspath(run_identity.check_workdir(workdir))
    if allow_config_change is None:
        allow_config_change = cli.allowed_config_changes()
    with signals.handling():
        if _agree(signals.received() is not None):  # e.g. a sweep between two cells
            _announce(f"{_stop_reason()}: not starting the run in {workdir}.")
            return {"step": None, "preempted": True, "state": None, "eval": {}}
        return _train_and_evaluate(config, workdir, list(allow_config_change))


def _train_and_evaluate(
    config: config_dict.ConfigDict, workdir: str, allow_config_change: list[str]
) -> dict[str, Any]:
    with noise.quiet_data_preparation():
        source = open_sources(config)
    mesh = parallel.make_mesh(None if config.num_devices == -1 else config.num_devices)
    # Puts batches on the devices; its input workers start with the first batch, after the checks.
    iterator = feed.train_batches(config, source, mesh, AXIS)
    num_steps = num_train_steps(config, iterator.steps_per_epoch)
    latest = _latest_step_on_disk(workdir)
    if latest is not None:
        run_identity.check_target(workdir, latest, num_steps)
    resume = run_identity.check_resume(
        config, workdir, steps_per_epoch=iterator.steps_per_epoch, allow=allow_config_change
    )

    schedule = optim.learning_rate_schedule(config, num_steps)
    tx = optim.make_optimizer(config, num_steps)
    model = build_model(config, axis_name=AXIS)
    channels = np.asarray(source[0]["image"]).shape[-1]
    state = create_train_state(config, model, tx, mesh, channels)

    # The first writes: nothing above touched the workdir.
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        if resume.new_run:
            run_identity.start_run(workdir, config)
    checkpointer = Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=config.keep_checkpoints
    )
    writer = None
    try:  # a forced exit (second signal) or an error still ends pending saves and the logs
        restored = checkpointer.restore_latest(state)
        if restored is not None:
            _, state, data_state = restored
            iterator.set_state(data_state)
        start = int(state.step)
        run_identity.check_target(workdir, start, num_steps)
        _record_session(config, workdir, resume, start, num_steps, mesh.size)
        if restored is not None:
            _announce(f"Resumed from the checkpoint at step {start} in {workdir}.")

        writer = MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=start)
        train_step = make_train_step(config, model, tx, schedule, mesh)
        small = config.augment.multicrop.num_small
        views = f"V={config.num_views}" + (f"+{small} small crops" if small else "")
        _announce(
            f"{config.name}: {config.loss.name}, {views}, batch {config.batch_size} on "
            f"{mesh.size} device(s) in {jax.process_count()} process(es), "
            f"steps {start}->{num_steps}"
        )

        step, preempted, history = start, False, []
        progress = tqdm(
            total=num_steps,
            initial=start,
            desc=config.name,
            unit="step",
            disable=not config.progress_bar or jax.process_index() != 0,
        )
        last_log = time.perf_counter()
        for step in range(start + 1, num_steps + 1):
            images = next(iterator)  # the next step's batch is already on its way
            state, metrics = train_step(state, images)
            history.append(metrics)
            progress.update()
            if step % config.log_every_steps == 0 or step == num_steps:
                scalars = _mean_metrics(history)
                now = time.perf_counter()
                scalars["train/steps_per_second"] = len(history) / (now - last_log)
                scalars["train/epoch"] = step / iterator.steps_per_epoch
                writer.write_scalars(step, scalars)
                progress.set_postfix(loss=f"{scalars['train/loss']:.4f}")
                history, last_log = [], now
            if _should_stop(step, every=config.log_every_steps):
                preempted = True
                break
            if step % config.checkpoint_every_steps == 0:
                checkpointer.save(step, state, iterator.get_state())
        progress.close()
        iterator.close()  # stops the input workers
        checkpoints = checkpointer.directory
        if preempted:
            second = (
                " (a second Ctrl-C exits without saving)" if signals.received() == "SIGINT" else ""
            )
            _announce(f"{_stop_reason()}: saving the checkpoint of step {step}{second}...")
        checkpointer.save(step, state, iterator.get_state())
        checkpointer.close()
        writer.flush()
        if preempted or signals.received() is not None:
            writer.close()
            _announce(
                f"{_stop_reason()}: saved the checkpoint at step {step} in {checkpoints}; exiting"
                f"{'' if preempted else ' before evaluation'}. Rerun the same command to resume."
            )
            return {"step": step, "preempted": True, "state": state, "eval": {}}

        results = {}
        if config.eval.enabled:
            try:
                with signals.immediate():
                    results = evaluate_variables(
                        config, jax.device_get(state.variables()), writer, step
                    )
            except signals.Interrupted as e:
                writer.close()
                _announce(
                    f"{e.signame} during evaluation: stopped it; the checkpoint of step {step} is "
                    f"saved in {checkpoints}. Rerun the same command (or experiments/evaluate.py "
                    f"--workdir={workdir}) to evaluate."
                )
                return {"step": step, "preempted": True, "state": state, "eval": {}}
        writer.close()
        _announce(
            f"Checkpoints: {checkpoints}\nMetrics: {writer.jsonl_path} and TensorBoard events "
            f"(tensorboard --logdir {workdir})"
        )
        return {"step": step, "preempted": False, "state": state, "eval": results}
    finally:
        checkpointer.close()
        if writer is not None:
            writer.close()


def _record_session(
    config: config_dict.ConfigDict,
    workdir: str,
    resume: run_identity.Resume,
    step: int,
    num_steps: int,
    devices: int,
) -> None:
    """Announces the accepted config changes and appends the session to the run's history."""
    notes = []
    if not resume.new_run:
        note = run_identity.schedule_note(
            resume.old_config, config, resume.old_total_steps, num_steps, step
        )
        if note is not None:
            notes.append(note)
    if resume.changes:
        changes = ", ".join(f"{change} ({how})" for change, how in resume.changes)
        _announce(f"Config changes accepted for the run in {workdir}: {changes}.")
    for note in notes:
        _announce(f"Note: {note}.")
    if jax.process_index() == 0:
        run_identity.record_session(
            workdir,
            new_run=resume.new_run,
            step=step,
            changes=resume.changes,
            devices=devices,
            processes=jax.process_count(),
            notes=notes,
        )


# --- evaluation of a state or of a workdir ------------------------------------------------------


def evaluate_variables(
    config: config_dict.ConfigDict,
    variables: Mapping[str, Any],
    writer: MetricWriter,
    step: int,
) -> dict[str, float]:
    """Evaluates the encoder ``variables`` (``{"params", "batch_stats"}``), logs ``eval/*`` at
    ``step`` and prints the report."""
    model = build_model(config)
    if isinstance(model, models.PerViewModel):  # per-modality probes and retrieval
        results = multimodal.evaluate(config, model, variables)
        report = multimodal.format_report(results)
    else:
        results = evaluate.evaluate(config, model, variables)
        report = evaluate.format_report(results, knn_k=config.eval.knn_k)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
    writer.flush()
    _announce(f"Evaluation at step {step}:\n{report}")
    return results


def load_config(workdir: str | os.PathLike) -> config_dict.ConfigDict:
    """The current config of the run in ``workdir``: its ``config.json`` with the changes later
    sessions made (``config_history.jsonl``) applied (`mvcl.train.run_identity`).

    Raises:
      NoRunError: ``workdir`` holds no run.
    """
    return config_dict.ConfigDict(run_identity.effective_config(workdir))


def restore_variables(
    workdir: str | os.PathLike, config: config_dict.ConfigDict | None = None
) -> tuple[int, dict[str, Any]]:
    """The step and encoder variables of the newest good checkpoint of the run in ``workdir``.

    ``config`` (default: the run's, `load_config`) gives the structure of the train state; the
    image channels come from ``config.dataset.fake_shape`` or the first test image. Nothing in
    ``workdir`` is written, moved or deleted.

    Returns:
      ``(step, {"params": ..., "batch_stats": ...})`` with numpy arrays on the host.

    Raises:
      NoRunError: ``workdir`` has no checkpoint that restores.
      CheckpointMismatchError: ``config`` builds another model or optimiser than the run's.
    """
    noise.install()
    workdir = os.path.abspath(workdir)
    config = load_config(workdir) if config is None else config
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        raise NoRunError(f"no run in {workdir}: no checkpoint in {directory}")
    if config.dataset.fake:
        channels = config.dataset.fake_shape[-1]
    else:
        with noise.quiet_data_preparation():
            channels = np.asarray(_open_split(config, "test_split")[0]["image"]).shape[-1]
    tx = optim.make_optimizer(config, total_steps=1)  # gives the state's structure only
    target = create_train_state(config, build_model(config), tx, parallel.make_mesh(), channels)
    checkpointer = Checkpointer(directory, max_to_keep=config.keep_checkpoints, read_only=True)
    try:
        restored = checkpointer.restore_latest(target)
    finally:
        checkpointer.close()
    if restored is None:
        raise NoRunError(f"no run in {workdir}: no checkpoint to restore in {directory}")
    step, state, _ = restored
    return step, jax.device_get(state.variables())


def evaluate_workdir(
    workdir: str | os.PathLike,
    config: config_dict.ConfigDict | None = None,
    *,
    allow_config_change: Iterable[str] | None = None,
) -> dict[str, float]:
    """Evaluates the newest good checkpoint in ``workdir`` (with the run's config by default).

    A ``config`` that differs from the run's in more than the free fields
    (`mvcl.train.run_identity`: evaluation settings, data directory, ...) would log results under
    other settings: it is refused unless the fields are in ``allow_config_change`` (None: the
    ``--allow_config_change`` flag of the command-line program running). A signal stops the
    evaluation at once (`mvcl.train.signals.Interrupted`); nothing is written then.

    Raises:
      NoRunError: ``workdir`` holds no run, or no checkpoint that restores.
      RunIdentityError: ``config`` differs from the run's (see above).
    """
    noise.install()
    workdir = os.path.abspath(workdir)
    run_config = load_config(workdir)
    if config is None:
        config = run_config
    else:
        if allow_config_change is None:
            allow_config_change = cli.allowed_config_changes()
        run_identity.check_evaluation(run_config, config, workdir, allow=allow_config_change)
    with signals.handling(), signals.immediate():
        step, variables = restore_variables(workdir, config)
        writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
        try:
            return evaluate_variables(config, variables, writer, step)
        finally:
            writer.close()
