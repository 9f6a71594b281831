"""Parameter-free "modalities" of an image view, computed on the device from a batch of views.

They turn the one image data set that ships with mvcl (8x8 digits) into aligned views of
different kinds, so that per-view encoders (`mvcl.models.PerViewModel`) can be tried without a
multimodal data set:

* ``"image"``: the view itself, (B, H, W, C).
* ``"gradient"``: its gradient field, (B, H, W, 2·C): the horizontal and vertical central
  differences of every channel (edges replicated at the border), an edge map that keeps the
  direction.
* ``"profile"``: its projection profiles, (B, H + W): the mean of every row and of every column
  over the other spatial axis and the channels, a 1-D signal of length H + W.

Each is a pure function of a (B, H, W, C) float array, applied after the augmentation, so every
view of an instance is a differently augmented crop seen through its modality.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def image(views: jax.Array) -> jax.Array:
    """The views unchanged: (B, H, W, C)."""
    return views


def gradient_field(views: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, 2C): central differences along x (width) then y (height)."""
    _check_rank(views, "gradient")
    padded = jnp.pad(views, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    dx = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / 2
    dy = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / 2
    return jnp.concatenate([dx, dy], axis=-1)


def projection_profile(views: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H + W): row means, then column means (channels averaged)."""
    _check_rank(views, "profile")
    return jnp.concatenate([views.mean(axis=(2, 3)), views.mean(axis=(1, 3))], axis=-1)


def _check_rank(views: jax.Array, name: str) -> None:
    if views.ndim != 4:
        raise ValueError(
            f"modality {name!r} takes a (B, H, W, C) batch of image views, got shape {views.shape}"
        )


MODALITIES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "image": image,
    "gradient": gradient_field,
    "profile": projection_profile,
}


def get(name: str) -> Callable[[jax.Array], jax.Array]:
    """The modality registered as ``name`` (one of `MODALITIES`)."""
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}")
    return MODALITIES[name]
