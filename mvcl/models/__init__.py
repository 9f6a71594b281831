"""Encoders: backbones (ResNet-18/50, small CNNs), the projection head, and their composition.

    model = mvcl.models.get_model("resnet18", width=0.5, stem="cifar", axis_name="data")
    variables = model.init(rng, images, train=False)            # {"params", "batch_stats"}
    (h, z), updates = model.apply(variables, images, train=True, mutable=["batch_stats"])

``images`` is (B, H, W, C); ``h`` (B, F) are the backbone features (what linear evaluation
uses), ``z`` (B, out_dim) the projections (what the loss sees). For V views of N instances the
caller flattens to B = N·V and reshapes ``z`` to (N, V, out_dim) itself.

Views of different modalities take one encoder and projection head per view (or group of views):
`PerViewModel` (``mvcl.models.per_view``) maps V inputs to per-view features and (N, V, D).

With ``axis_name`` set, every BatchNorm averages its statistics over that mapped axis: call the
model inside ``jax.shard_map`` / ``jax.pmap`` over it and the result equals the single-device
forward on the global batch. Parameters are float32; ``dtype`` (float32 or bfloat16) is the
compute dtype; outputs are float32.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from mvcl import _deprecation
from mvcl.models.convnet import ConvNet
from mvcl.models.heads import ProjectionHead
from mvcl.models.mlp import MLP
from mvcl.models.per_view import PerViewModel
from mvcl.models.resnet import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet50
from mvcl.models.small_cnn import SmallCNN

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "small_cnn": SmallCNN,
}


class ContrastiveModel(nn.Module):
    """``backbone`` then ``head``: ``(x, train) -> (features, projections)``.

    Variables live under ``"backbone"`` and ``"head"``, so a linear probe can apply the backbone
    alone to ``{"params": params["backbone"], "batch_stats": batch_stats["backbone"]}``.
    """

    backbone: nn.Module
    head: nn.Module

    def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
        features = self.backbone(x, train=train)
        return features, self.head(features, train=train)


def get_backbone(name: str, **kwargs: Any) -> nn.Module:
    """The backbone registered as ``name``, constructed with ``kwargs`` (e.g. width, stem)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model name {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def get_model(
    name: str,
    *,
    proj_dim: int = 128,
    proj_hidden_dim: int | None = None,
    dtype: Any = jnp.float32,
    axis_name: str | None = None,
    **backbone_kwargs: Any,
) -> ContrastiveModel:
    """Backbone ``name`` + projection head, sharing ``dtype`` and ``axis_name``.

    Args:
      name: "resnet18", "resnet50", "small_cnn" or "convnet".
      proj_dim: output dimension of the projection head.
      proj_hidden_dim: hidden width of the head; None means the backbone feature dimension.
      dtype: compute dtype of both parts (parameters are float32).
      axis_name: mapped axis for global-batch BatchNorm statistics, or None.
      **backbone_kwargs: passed to the backbone, e.g. ``width=0.25, stem="imagenet"``.
    """
    backbone = get_backbone(name, dtype=dtype, axis_name=axis_name, **backbone_kwargs)
    head = ProjectionHead(
        hidden_dim=proj_hidden_dim, out_dim=proj_dim, dtype=dtype, axis_name=axis_name
    )
    return ContrastiveModel(backbone=backbone, head=head)


__all__ = [
    "BACKBONES",
    "BasicBlock",
    "Bottleneck",
    "ContrastiveModel",
    "ConvNet",
    "MLP",
    "PerViewModel",
    "ProjectionHead",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "SmallCNN",
    "get_backbone",
    "get_model",
]


def __getattr__(name: str) -> ModuleType:
    # mvcl.models.conv, the former name of loop_conv (beside convnet, a model): importing it warns.
    if name == "conv":
        return _deprecation.import_moved(f"{__name__}.conv")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
