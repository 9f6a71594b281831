"""Gradient caching through the encoder: batches and view counts beyond device memory.

A multi-view step holds the encoder activations of all N·V views of its batch, so the encoder,
not the loss, caps N and V. Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup") splits the step in three:

1. **Pass 1.** Each device encodes its images in chunks of ``micro_batch`` images (with all
   their views) in a ``jax.lax.map`` loop that keeps no activations: ``z (n, V, D)``.
2. **Loss.** The global-batch loss ``L(z)`` and ``dL/dz`` are computed exactly as the one-pass
   step computes them (``jax.value_and_grad`` of the ``shard_map``-ed loss), so every loss and
   backend (gather, ring) works unchanged and only ``z`` is ever whole.
3. **Pass 2.** A ``jax.lax.scan`` re-encodes each chunk under ``jax.vjp`` and pulls its rows of
   ``dL/dz`` back to the parameters; the chunk gradients are summed on each device, then once
   over the devices (``psum``).

Peak memory is one chunk's activations and backward pass plus the ``(n, V, D)`` embeddings and
their cotangents, whatever N and V. The price is one extra forward pass. Pass 2's encoder uses
`mvcl.models.loop_conv.loop_friendly` convolutions: XLA's own convolution gradients run 10-100x
slower inside a loop body on the CPU.

**Same views in both passes.** The views of a chunk are made inside each pass from the chunk's
uint8 images and per-instance keys (``fold_in(fold_in(rng, step), global index)``, as in the
one-pass step), so both passes see bit-identical views and no float views of the whole batch are
ever stored.

**BatchNorm.** A chunk is ``micro_batch`` images with all their views, and every BatchNorm
normalises it with its own statistics, averaged over the devices (the ``i``-th chunk of every
device together: ``micro_batch × devices`` images). Pass 2 uses the same chunks as pass 1, so the
gradients are those of a one-pass step whose BatchNorm batches are these chunks. This changes
BatchNorm's batch from the global batch to the chunk, just as per-device BatchNorm (no
``axis_name``) changes it to the device's share; the loss still sees the whole global batch. The
running averages are updated once per step, with the mean over the chunks of the per-chunk
updates (the running mean so moves towards the global-batch mean; the running variance towards
the mean within-chunk variance, which is what the chunks were normalised with). For a model
without batch statistics the cached gradients equal the one-pass gradients up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict

from mvcl.models.loop_conv import loop_friendly as loop_friendly_conv

# encode(params, batch_stats, images (m, H, W, C), keys (m, 2)) -> (z (m, V, D), batch_stats)
Encode = Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
# keys(rng, step, n) -> (n, 2) per-instance keys of this device's n images (inside shard_map)
Keys = Callable[[jax.Array, jax.Array, int], jax.Array]


def micro_batch_of(config: config_dict.ConfigDict) -> int | None:
    """``config.train.micro_batch`` (None if unset or absent, as in configs saved before it)."""
    train = config.get("train")
    return None if train is None else train.get("micro_batch")


def check_micro_batch(micro_batch: int | None, images_per_device: int) -> None:
    """Raises ``ValueError`` unless ``micro_batch`` is None or a positive divisor of the images
    per device; the message names both numbers."""
    if micro_batch is None:
        return
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch <= 0:
        raise ValueError(
            f"config.train.micro_batch: must be a positive number of images per device per chunk "
            f"(or None: off), got {micro_batch!r} with {images_per_device} images per device"
        )
    if images_per_device % micro_batch:
        raise ValueError(
            f"config.train.micro_batch: {micro_batch} does not divide the {images_per_device} "
            f"images per device (batch_size / devices); pick a divisor of {images_per_device}"
        )


def _chunked(x: Any, micro_batch: int) -> Any:
    """Every leaf (n, ...) -> (n // micro_batch, micro_batch, ...): images may be an array or
    the whole-image dict ``{"image", "valid"}`` of `mvcl.train.inputs`."""
    return jax.tree.map(
        lambda a: a.reshape(a.shape[0] // micro_batch, micro_batch, *a.shape[1:]), x
    )


def cached_value_and_grad(
    encode: Encode,
    keys: Keys,
    loss_fn: Callable[[jax.Array], jax.Array],
    mesh: jax.sharding.Mesh,
    axis_name: str,
    micro_batch: int,
) -> Callable[..., tuple[tuple[jax.Array, Any], Any]]:
    """The gradient-cached counterpart of ``jax.value_and_grad(global_loss, has_aux=True)``.

    Args:
      encode: one device's encoder on a chunk, to call inside ``shard_map`` over ``axis_name``:
        ``(params, batch_stats, images (m, H, W, C) uint8, keys (m, 2)) -> (z (m, V, D),
        updated batch_stats)``; it makes the views of each image from its key.
      keys: ``(rng, step, n) -> (n, 2)`` the per-instance keys of a device's ``n`` images.
      loss_fn: ``z (n, V, D) -> global-batch loss``, called inside ``shard_map`` with
        ``axis_name`` (`mvcl.train.step.make_loss_fn`).
      mesh: the mesh whose ``axis_name`` axis shards the batch.
      axis_name: that axis.
      micro_batch: images per device per chunk; must divide the images per device.

    Returns:
      ``(params, batch_stats, images, rng, step) -> ((loss, batch_stats), grads)`` with
      ``images`` the (B, H, W, C) global batch sharded over ``axis_name``, ``params`` and
      ``batch_stats`` replicated; ``grads`` and the returned ``batch_stats`` are replicated.
    """

    def chunks_of(images: Any, rng: jax.Array, step: jax.Array):
        n = jax.tree.leaves(images)[0].shape[0]
        check_micro_batch(micro_batch, n)
        return _chunked(images, micro_batch), _chunked(keys(rng, step, n), micro_batch)

    def pass1(params, batch_stats, images, rng, step):
        images_c, keys_c = chunks_of(images, rng, step)
        z, stats = jax.lax.map(
            lambda chunk: encode(params, batch_stats, *chunk), (images_c, keys_c)
        )
        # One running-average update per step: the mean of the per-chunk updates.
        stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)
        return z.reshape(-1, *z.shape[2:]), stats

    def pass2(params, batch_stats, images, rng, step, dz):
        images_c, keys_c = chunks_of(images, rng, step)
        # Varying copies: each chunk's vjp then stays local, and the devices' sums are added
        # once at the end instead of once per chunk.
        local = jax.lax.pcast(params, axis_name, to="varying")

        def chunk_grad(total, chunk):
            images_i, keys_i, dz_i = chunk
            with loop_friendly_conv():  # XLA's CPU convolution gradients are slow in loops
                _, vjp = jax.vjp(lambda p: encode(p, batch_stats, images_i, keys_i)[0], local)
                (grad,) = vjp(dz_i)
            return jax.tree.map(jnp.add, total, grad), None

        zeros = jax.tree.map(jnp.zeros_like, local)
        total, _ = jax.lax.scan(chunk_grad, zeros, (images_c, keys_c, _chunked(dz, micro_batch)))
        return jax.lax.psum(total, axis_name)

    encode_all = jax.shard_map(
        pass1, mesh=mesh, in_specs=(P(), P(), P(axis_name), P(), P()), out_specs=(P(axis_name), P())
    )
    global_loss = jax.shard_map(loss_fn, mesh=mesh, in_specs=P(axis_name), out_specs=P())
    backprop = jax.shard_map(
        pass2,
        mesh=mesh,
        in_specs=(P(), P(), P(axis_name), P(), P(), P(axis_name)),
        out_specs=P(),
    )

    def value_and_grad(params, batch_stats, images, rng, step):
        z, new_stats = encode_all(params, batch_stats, images, rng, step)
        loss, dz = jax.value_and_grad(global_loss)(z)
        grads = backprop(params, batch_stats, images, rng, step, dz)
        return (loss, new_stats), grads

    return value_and_grad
