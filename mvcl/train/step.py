"""The sharded train step: `make_train_step` and the loss it differentiates, `make_loss_fn`.

Inside ``jax.shard_map`` each device makes the V views of its images (`mvcl.data.make_views`),
runs the model with BatchNorm statistics over the global batch (``axis_name``) and calls the loss
with ``axis_name``, which returns the global-batch loss; ``jax.grad`` of the shard_map-ed function
is the gradient of that loss. The views of instance ``i`` of the global batch at step ``s`` come
from the key ``fold_in(fold_in(rng, s), i)``: the same on one device or many. With multi-crop
(``config.augment.multicrop.num_small = K > 0``) that key is split in two, for the V large and
the K small crops; the model runs once per resolution and the loss sees ``(n, V + K, D)``.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict

from mvcl import data, losses, models, parallel
from mvcl.train import grad_cache
from mvcl.train.guard import all_finite, keep_if
from mvcl.train.inputs import DeviceBatch
from mvcl.train.state import TrainState

AXIS = parallel.DEFAULT_AXIS


def make_loss_fn(config: config_dict.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """``z (n, V, D) -> global-batch loss`` of ``config.loss``, to call inside shard_map."""
    kwargs = config.loss.kwargs.to_dict()
    kwargs["precision"] = config.loss.get("precision")  # None: HIGHEST for float32 embeddings
    return losses.spec(config.loss.name).bind(
        temperature=config.loss.temperature, axis_name=AXIS, backend=config.loss.backend, **kwargs
    )


def _whole(images: DeviceBatch) -> bool:
    return isinstance(images, dict)


def _num_images(images: DeviceBatch) -> int:
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
    ``{"image": ..., "valid": int32 (B, 2)}``, see `mvcl.train.inputs`); ``model`` must have
    ``axis_name=AXIS``. Metrics: ``loss`` (before the update), ``learning_rate``, ``grad_norm``
    and ``finite`` (bool).

    **Divergence guard.** A step whose loss, gradients or updated state (parameters, BatchNorm
    statistics, optimiser state) holds a NaN or infinity is not applied: the returned state is
    the input state with only ``step`` advanced (the batch is skipped), and ``finite`` is False.
    The values are global (replicated over the mesh), so every device and process takes the same
    decision, with or without gradient caching. The loop stops the run after
    ``config.train.max_bad_steps`` such steps in a row (`mvcl.train.loop`).

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

    def views_of(key: jax.Array, image: DeviceBatch) -> list[jax.Array]:
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
        params = optax.apply_updates(state.params, updates)
        # The divergence guard: a step whose loss, gradients or updated state is not finite is
        # not applied (the step counter still advances: its batch is skipped).
        ok = all_finite((loss, grads, params, batch_stats, opt_state))
        new_state = state.replace(
            step=state.step + 1,
            params=keep_if(ok, params, state.params),
            batch_stats=keep_if(ok, batch_stats, state.batch_stats),
            opt_state=keep_if(ok, opt_state, state.opt_state),
        )
        metrics = {
            "loss": loss,
            "learning_rate": schedule(state.step),
            "grad_norm": optax.tree.norm(grads),
            "finite": ok,
        }
        return new_state, metrics

    # The state is donated: XLA writes the new state into the old one's buffers, so the step
    # holds one copy of parameters and optimiser state, not two. The caller must not touch the
    # state it passed in after the call (use the returned one).
    return jax.jit(train_step, out_shardings=NamedSharding(mesh, P()), donate_argnums=0)
