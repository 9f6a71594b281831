"""The model and the train state: `build_model`, `TrainState` and `create_train_state`.

`TrainState` holds the step, params, batch_stats, optimiser state and the augmentation key;
`create_train_state` creates it replicated on the mesh.
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
from mvcl.models import per_view


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
