"""What a run trains: the model, its optimiser and the train state.

`build_model` makes the model of ``config.model``; `make_optimizer` the optimiser of
``config.optim``, SGD with momentum or LARS, with the learning rate of `learning_rate_schedule`,
warmup then cosine decay; `TrainState` holds the step, params, batch_stats, optimiser state and
the augmentation key, and `create_train_state` creates it replicated on the mesh.

Learning rate at step t of T (``config.optim``), with W = round(warmup_fraction · T):

    lr(t) = lr · t / W                                   for t < W   (linear warmup from 0)
    lr(t) = lr · ½ (1 + cos(π (t − W) / (T − W)))        for t ≥ W   (cosine to 0 at t = T)

Weight decay (both optimisers) and LARS's trust ratio apply to convolution and dense kernels
only: biases and BatchNorm scales/shifts are left alone, as in SimCLR and the authors' code.
SGD adds the decay to the gradient before momentum (PyTorch's ``SGD(weight_decay=...)``).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict

from mvcl import data, models
from mvcl._deprecation import renamed
from mvcl.models import per_view

# --- the optimiser ------------------------------------------------------------------------------

OPTIMIZERS = ("sgd", "lars")


def learning_rate_schedule(config: config_dict.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup over ``config.optim.warmup_fraction`` of the steps, then cosine to zero."""
    warmup_steps = round(config.optim.warmup_fraction * total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.optim.lr,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=0.0,
    )


def weight_matrix_mask(params: optax.Params) -> optax.Params:
    """True for the weight matrices of convolutions and dense layers (flax's ``kernel``
    parameters), False for biases and BatchNorm parameters: the parameters that weight decay and
    LARS's trust ratio apply to."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


def make_optimizer(
    config: config_dict.ConfigDict, total_steps: int
) -> optax.GradientTransformation:
    """``config.optim.name`` ("sgd" or "lars") with the schedule of `learning_rate_schedule`."""
    optim = config.optim
    schedule = learning_rate_schedule(config, total_steps)
    if optim.name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(optim.weight_decay, mask=weight_matrix_mask),
            optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov),
        )
    if optim.name == "lars":
        return optax.lars(
            schedule,
            weight_decay=optim.weight_decay,
            weight_decay_mask=weight_matrix_mask,
            trust_coefficient=optim.trust_coefficient,
            trust_ratio_mask=weight_matrix_mask,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
        )
    raise ValueError(f"config.optim.name must be one of {OPTIMIZERS}, got {optim.name!r}")


# --- the model and the train state --------------------------------------------------------------


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
        return per_view.from_config(config, axis_name=axis_name, inputs=data.modalities.MODALITIES)
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


# The name of earlier releases, reached as mvcl.train.optim.kernel_mask (optim is now state).
kernel_mask = renamed(weight_matrix_mask, "mvcl.train.optim.kernel_mask")
