"""Gradient-cached train steps against one-pass references on 1, 3 and 8 simulated CPU devices.

Started by tests/test_grad_cache.py in a fresh interpreter (the device count is fixed when JAX
starts): ``python tests/grad_cache_worker.py {quick,grid}``. Prints one JSON line per case with
the relative errors of the cached step's loss, parameter gradients and BatchNorm running
averages against

* ``one_pass``: the trainer's one-pass step (``micro_batch = None``), for a model without batch
  statistics, where chunking must not change anything;
* ``chunked_bn``: a direct single-device computation with no ``shard_map``, no chunk loop and one
  ``jax.grad``: per-instance keys and views as the step makes them, the model applied to each
  chunk's images (the ``i``-th ``micro_batch`` images of every device, so BatchNorm sees those),
  the dense loss on the global batch, and the mean of the chunks' running-average updates.

The gradients come out of the real step: its optimiser is replaced by one that stores the
gradient in its state and makes no update.
"""

import json
import os
import sys

# Without LLVM's optimisations: these tiny programs are mostly compile time (the HLO programs,
# what mvcl builds, are the same; compared with each other, not with a fixed value).
os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    " --xla_backend_optimization_level=0"
)

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mvcl import data, losses, parallel
from mvcl.configs import digits
from mvcl.models import loop_conv as loop_friendly
from mvcl.train.state import build_model, create_train_state
from mvcl.train.step import AXIS, make_train_step

MODE = sys.argv[1]
BATCH = 24  # divides over 1, 3 and 8 devices
MICRO = {1: 6, 3: 2, 8: 1}  # images per device per chunk: 4, 4 and 3 chunks


class TinyEncoder(nn.Module):
    """conv -> [BN] -> ReLU -> mean pool -> dense -> [BN]: ``(x, train) -> (h, z)``.

    ``dtype`` is both the compute and the parameter dtype (float64 for the 1e-10 checks). Without
    BatchNorm it still owns a constant ``batch_stats`` variable, so the train state has one.
    """

    norm: bool
    dtype: jnp.dtype
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        kwargs = {"dtype": self.dtype, "param_dtype": self.dtype}

        def bn(y):
            if not self.norm:
                return y
            return nn.BatchNorm(
                use_running_average=not train, momentum=0.9, axis_name=self.axis_name, **kwargs
            )(y)

        if not self.norm:
            self.variable("batch_stats", "constant", jnp.zeros, (), self.dtype)
        # As mvcl's encoders do (`mvcl.models.layers.conv`): inside gradient caching's chunk
        # loop, the loop-friendly convolution, so the checks below cover its gradients too.
        conv = nn.Conv(6, (3, 3), conv_general_dilated=loop_friendly.current(), **kwargs)
        h = conv(jnp.asarray(x, self.dtype))
        h = jnp.mean(nn.relu(bn(h)), axis=(1, 2))
        z = bn(nn.Dense(5, **kwargs)(jnp.tanh(h)))
        return h, z


def store_gradient() -> optax.GradientTransformation:
    """An 'optimiser' whose state is the last gradient and whose updates are zero."""
    return optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params),
        lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads),
    )


def make_config(loss, backend, views, small, dtype):
    config = digits.get_config(f"fake=True,loss={loss},views={views},multicrop={small}")
    config.loss.backend = backend
    config.batch_size = config.dataset.fake_num_examples = BATCH
    config.model.dtype = dtype
    config.model.proj_dim = 5
    config.model.kwargs.width = 0.125
    if jax.config.read("jax_enable_x64"):
        # The random order of the colour-jitter ops is a lax.switch whose branches disagree on
        # the dtype under x64; a fixed order keeps the float64 cases on the same code path.
        config.augment.random_order = False
    return config


def build(config, encoder, axis_name):
    if encoder == "small_cnn":
        return build_model(config, axis_name=axis_name)
    dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    return TinyEncoder(norm=encoder == "tiny_bn", dtype=dtype, axis_name=axis_name)


def run_step(config, model, mesh, images):
    tx = store_gradient()
    state = create_train_state(config, model, tx, mesh, channels=1)
    step = make_train_step(config, model, tx, optax.constant_schedule(0.0), mesh)
    before = jax.device_get(state)  # the step donates (deletes) the state it is given
    new_state, metrics = step(state, images)
    return (
        before,
        jax.device_get(new_state.opt_state),
        jax.device_get(new_state.batch_stats),
        metrics,
    )


def chunked_bn_reference(config, model, state, images, devices, micro):
    """Loss, gradients and running averages of a one-pass step whose BatchNorm batches are the
    gradient cache's chunks, computed on one device without shard_map."""
    n = BATCH // devices
    groups = data.view_groups(config.num_views, config.augment.to_dict())
    step_key = jax.random.fold_in(state.rng, state.step)

    def instance_views(i, image):  # the views of global instance i, one array per group
        key = jax.random.fold_in(step_key, i)
        keys = [key] if len(groups) == 1 else jax.random.split(key, len(groups))
        return [
            data.make_views(k, image[None], count, **kwargs)[0]
            for k, (count, kwargs) in zip(keys, groups)
        ]

    chunks = [
        np.concatenate([d * n + c * micro + np.arange(micro) for d in range(devices)])
        for c in range(n // micro)
    ]
    loss_fn = losses.get(config.loss.name)
    kwargs = dict(config.loss.kwargs.to_dict())
    if config.loss.name not in losses.TEMPERATURE_FREE:
        kwargs["temperature"] = config.loss.temperature

    def loss_and_stats(params):
        per_group = jax.vmap(instance_views)(jnp.arange(BATCH), images)  # (B, count, S, S, C)
        z = [None] * BATCH
        stats = []
        for rows in chunks:
            parts = []
            for g, views in enumerate(per_group):
                x = views[rows]
                (_, zc), new = model.apply(
                    {"params": params, "batch_stats": state.batch_stats},
                    x.reshape(-1, *x.shape[2:]),
                    train=True,
                    mutable=["batch_stats"],
                )
                parts.append(zc.reshape(len(rows), -1, zc.shape[-1]))
                if g == 0:
                    stats.append(new["batch_stats"])
            for r, row in enumerate(rows):
                z[row] = jnp.concatenate([p[r] for p in parts])
        mean_stats = jax.tree.map(lambda *s: sum(s) / len(s), *stats)
        return loss_fn(jnp.stack(z), **kwargs), mean_stats

    value_and_grad = jax.jit(jax.value_and_grad(loss_and_stats, has_aux=True))
    (loss, stats), grads = value_and_grad(state.params)
    return jax.device_get((loss, grads, stats))


def rel(a, b) -> float:
    a = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def run_case(loss, backend, views, small, encoder, precision, devices):
    jax.config.update("jax_enable_x64", precision == "float64")
    dtype = "bfloat16" if precision == "bfloat16" else "float32"
    config = make_config(loss, backend, views, small, dtype)
    mesh = parallel.make_mesh(devices)
    model = build(config, encoder, AXIS)
    rng = np.random.default_rng(0)
    host_images = rng.integers(0, 256, (BATCH, 8, 8, 1), dtype=np.uint8)
    images = jax.device_put(host_images, parallel.batch_sharding(mesh, AXIS))
    config.train.micro_batch = MICRO[devices]
    state, grads, stats, metrics = run_step(config, model, mesh, images)
    if encoder == "tiny":
        config.train.micro_batch = None
        _, ref_grads, ref_stats, ref_metrics = run_step(config, model, mesh, images)
        ref_loss, reference = ref_metrics["loss"], "one_pass"
    else:
        ref_loss, ref_grads, ref_stats = chunked_bn_reference(
            config, build(config, encoder, None), state, host_images, devices, MICRO[devices]
        )
        reference = "chunked_bn"
    return {
        "loss": loss,
        "backend": backend,
        "views": views,
        "small": small,
        "encoder": encoder,
        "precision": precision,
        "devices": devices,
        "micro_batch": MICRO[devices],
        "reference": reference,
        "loss_err": rel(metrics["loss"], ref_loss),
        "grad_err": rel(grads, ref_grads),
        "stats_err": rel(stats, ref_stats) if jax.tree.leaves(ref_stats) else 0.0,
        "grad_norm": float(metrics["grad_norm"]),
    }


def cases():
    if MODE == "quick":
        for devices in (1, 3, 8):
            yield ("mv_infonce", "gather", 3, 0, "tiny", "float64", devices)
            yield ("mv_dhel", "ring", 2, 2, "tiny_bn", "float64", devices)
        yield ("mv_infonce", "ring", 3, 0, "tiny", "float32", 8)
        yield ("mv_dhel", "gather", 3, 0, "small_cnn", "float32", 3)
        yield ("mv_dhel", "gather", 2, 2, "small_cnn", "bfloat16", 3)
    elif MODE == "grid":
        # Every loss on 3 devices (the device counts 1, 3 and 8 are the quick mode's), the
        # backends taken in turn: gather against the one-pass step, ring against the
        # chunked-BatchNorm reference. The cache's chunk loop does not depend on the loss: what
        # does is the loss's gradient in the embeddings, which test_multidevice.py checks for
        # every loss and backend against one device.
        for i, loss in enumerate(losses.NAMES):
            views = 2 if loss in losses.TWO_VIEW else 3
            if i % 2 == 0:
                yield (loss, "gather", views, 0, "tiny", "float64", 3)
            else:
                yield (loss, "ring", views, 0, "tiny_bn", "float64", 3)
    else:
        raise SystemExit(f"unknown mode {MODE!r}")


for case in cases():
    print(json.dumps(run_case(*case)), flush=True)
