"""Optimisers of the pretraining runs: SGD with momentum or LARS, warmup then cosine decay.

Learning rate at step t of T (``config.optim``), with W = round(warmup_fraction · T):

    lr(t) = lr · t / W                                   for t < W   (linear warmup from 0)
    lr(t) = lr · ½ (1 + cos(π (t − W) / (T − W)))        for t ≥ W   (cosine to 0 at t = T)

Weight decay (both optimisers) and LARS's trust ratio apply to convolution and dense kernels
only: biases and BatchNorm scales/shifts are left alone, as in SimCLR and the authors' code.
SGD adds the decay to the gradient before momentum (PyTorch's ``SGD(weight_decay=...)``).
"""

from __future__ import annotations

import jax
import optax
from ml_collections import config_dict

from mvcl._deprecation import renamed

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


kernel_mask = renamed(weight_matrix_mask, "mvcl.train.optim.kernel_mask")
