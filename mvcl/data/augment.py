"""On-device SimCLR-style view generation.

The host sends every image once, as uint8 (B, H, W, C); `make_views` turns it into V independent
random views (B, V, S, S, C) inside one jitted function. Host work and host-to-device bytes are
therefore independent of V; only device compute grows with it.

One view of an image in [0, 1] is, in order (SimCLR, Chen et al. 2020, appendix A):

1. random resized crop (torchvision's RandomResizedCrop): area fraction
   ``a ~ U[min_scale, max_scale]``, aspect ratio ``r ~ logU[3/4, 4/3]``, box
   ``h = sqrt(a H W / r)``, ``w = sqrt(a H W r)`` placed uniformly inside the image (first of 10
   draws that fits; if none does, the centred box of the image's aspect ratio clamped to
   [3/4, 4/3], which is the whole image unless it is more elongated), resampled to ``S x S``
   with antialiased bilinear `jax.image.scale_and_translate` (sub-pixel boxes, static output
   shape, fully jittable). ``H x W`` is the array's, or, with ``valid``, the extent of an image
   padded into the array (`mvcl.data.input_pipeline.fit_whole`): then the boxes cover the whole
   image, whatever its aspect ratio, as torchvision's do on the original. ``max_scale < 1`` gives
   the small crops of multi-crop (SwAV, Caron et al. 2020: two large crops of scale (0.14, 1)
   plus small ones of scale (0.05, 0.14) at a lower resolution);
2. horizontal flip with probability 1/2 (if `flip`);
3. with probability `p_jitter`, colour jitter of strength ``s``: brightness factor
   ``U[1 - 0.8s, 1 + 0.8s]`` (multiplicative, as SimCLR v2), contrast and saturation factors
   ``U[1 - 0.8s, 1 + 0.8s]``, hue shift ``U[-0.2s, 0.2s]`` turns, in random order (if
   `random_order`), clipped to [0, 1] after each;
4. grayscale with probability `p_gray`;
5. with probability `p_blur`, Gaussian blur with ``sigma ~ U[0.1, 2.0]`` pixels and a kernel of
   10% of S (at least 3), reflect-padded at the border (SimCLR uses p_blur=0.5 on ImageNet, 0 on
   CIFAR);
6. `scale_pixels`: ``2x - 1``, i.e. [0, 1] -> [-1, 1] (formerly ``normalize``, which in mvcl
   now means only the rows' L2 normalisation of `mvcl.numerics.normalize`).

Single-channel images (C = 1) skip saturation, hue and grayscale, which do not apply to them.

Randomness: one call ``jax.random.uniform(rng, (B, V, K))`` draws all K random numbers of every
(image, view) (float64 under ``jax_enable_x64``, and the views are then computed in float64),
so views are independent and the result is a pure function of (rng, images) (a
single RNG call also keeps XLA compile time low). Called on a global batch under `jax.jit`, every
example gets its own numbers. Called per shard (`shard_map`/`pmap`), fold the shard index into `rng`
first (``jax.random.fold_in(rng, jax.lax.axis_index("data"))``) or shards repeat augmentations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import dm_pix as pix
import jax
import jax.numpy as jnp

from mvcl._deprecation import renamed

_CROP_ATTEMPTS = 10
_RATIO = (3 / 4, 4 / 3)
_LOG_RATIO = (math.log(_RATIO[0]), math.log(_RATIO[1]))
_BLUR_SIGMA = (0.1, 2.0)
_BLUR_KERNEL_FRACTION = 0.1


def scale_pixels(images01: jax.Array) -> jax.Array:
    """Maps images in [0, 1] to [-1, 1] (roughly zero mean, unit range)."""
    return images01 * 2.0 - 1.0


normalize = renamed(scale_pixels, "mvcl.data.augment.normalize")


def _check_images(images: jax.Array) -> None:
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must have shape (B, H, W, C) with C in (1, 3), got {images.shape}"
        )
    if images.dtype != jnp.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")


def _crop_resize(
    image: jax.Array, y0: jax.Array, x0: jax.Array, h: jax.Array, w: jax.Array, size: int
) -> jax.Array:
    """Resamples the box ``[y0, y0 + h) x [x0, x0 + w)`` (pixel edges) of (H, W, C) to (S, S, C)."""
    scale = jnp.stack([size / h, size / w])
    translation = -jnp.stack([y0, x0]) * scale
    return jax.image.scale_and_translate(
        image, (size, size, image.shape[-1]), (0, 1), scale, translation, "linear", antialias=True
    )


def _layout(**sizes: int) -> tuple[dict[str, int | slice], int]:
    """Named positions (an index if size 1, else a slice) in a flat vector, and its length."""
    positions, start = {}, 0
    for name, size in sizes.items():
        positions[name] = start if size == 1 else slice(start, start + size)
        start += size
    return positions, start


# Every random number of a view is one entry of a U[0, 1) vector: one threefry call per batch
# keeps compilation fast (many small RNG calls dominate XLA compile time on CPU).
_U, _NUM_UNIFORMS = _layout(
    area=_CROP_ATTEMPTS,
    ratio=_CROP_ATTEMPTS,
    y=1,
    x=1,
    flip=1,
    do_jitter=1,
    brightness=1,
    contrast=1,
    saturation=1,
    hue=1,
    order=4,
    do_gray=1,
    do_blur=1,
    sigma=1,
)


def _between(u: jax.Array, lo: float, hi: float) -> jax.Array:
    return lo + (hi - lo) * u


def _random_box(
    u: jax.Array, height: Any, width: Any, min_scale: float, max_scale: float
) -> tuple[jax.Array, ...]:
    """Inception-style crop box (y0, x0, h, w) of area fraction in [min_scale, max_scale].

    ``height`` and ``width`` are ints or traced scalars (the valid extent of a padded image).
    When no draw fits, torchvision's fallback: the centred box of the image's aspect ratio
    clamped to [3/4, 4/3], as large as fits (the whole image unless the image is more elongated).
    """
    area = height * width * _between(u[_U["area"]], min_scale, max_scale)
    ratio = jnp.exp(_between(u[_U["ratio"]], *_LOG_RATIO))
    ws, hs = jnp.sqrt(area * ratio), jnp.sqrt(area / ratio)
    fits = (ws <= width) & (hs <= height)
    first = jnp.argmax(fits)
    in_ratio = width / height
    fallback_h = jnp.where(in_ratio < _RATIO[0], width / _RATIO[0], height)
    fallback_w = jnp.where(in_ratio > _RATIO[1], height * _RATIO[1], width)
    h = jnp.where(fits.any(), hs[first], fallback_h)
    w = jnp.where(fits.any(), ws[first], fallback_w)
    y_u = jnp.where(fits.any(), u[_U["y"]], 0.5)
    x_u = jnp.where(fits.any(), u[_U["x"]], 0.5)
    return y_u * (height - h), x_u * (width - w), h, w


def _extent(valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    valid = valid.astype(jnp.float32)
    return valid[0], valid[1]


def crop_boxes(
    rng: jax.Array,
    sizes: jax.Array,
    num_views: int,
    *,
    min_scale: float = 0.08,
    max_scale: float = 1.0,
) -> jax.Array:
    """The crop boxes `make_views` draws for the same `rng`: float32 (B, V, 4) ``(y0, x0, h, w)``.

    Args:
      rng: the key given to `make_views`.
      sizes: (B, 2) image extents ``(h, w)``: the ``valid`` argument of `make_views`, or the
        array's (H, W) repeated when it has none.
      num_views, min_scale, max_scale: as for `make_views`.
    """
    uniforms = jax.random.uniform(rng, (sizes.shape[0], num_views, _NUM_UNIFORMS))

    def box(u: jax.Array, size: jax.Array) -> jax.Array:
        return jnp.stack(_random_box(u, *_extent(size), min_scale, max_scale))

    return jax.vmap(jax.vmap(box, in_axes=(0, None)))(uniforms, sizes)


def _color_jitter(u: jax.Array, x: jax.Array, strength: float, random_order: bool) -> jax.Array:
    """SimCLR colour jitter of an (H, W, C) image in [0, 1]; saturation/hue only if C = 3."""
    lo, hi = max(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
    brightness, contrast, saturation = (
        _between(u[_U[k]], lo, hi) for k in ("brightness", "contrast", "saturation")
    )
    hue = _between(u[_U["hue"]], -0.2 * strength, 0.2 * strength)
    ops = [
        lambda y: jnp.clip(y * brightness, 0.0, 1.0),
        lambda y: jnp.clip(pix.adjust_contrast(y, contrast), 0.0, 1.0),
    ]
    if x.shape[-1] == 3:
        ops += [
            lambda y: jnp.clip(pix.adjust_saturation(y, saturation), 0.0, 1.0),
            lambda y: jnp.clip(pix.adjust_hue(y, hue), 0.0, 1.0),
        ]
    if not random_order:
        for op in ops:
            x = op(x)
        return x
    order = jnp.argsort(u[_U["order"]][: len(ops)])
    for i in range(len(ops)):
        x = jax.lax.switch(order[i], ops, x)
    return x


def _one_view(
    u: jax.Array,
    image: jax.Array,
    valid: jax.Array | None,
    *,
    crop_size: int,
    min_scale: float,
    max_scale: float,
    jitter_strength: float,
    p_jitter: float,
    p_gray: float,
    p_blur: float,
    flip: bool,
    random_order: bool,
) -> jax.Array:
    """One random view (crop_size, crop_size, C) in [0, 1] of an (H, W, C) image in [0, 1].

    `u` holds this view's `_NUM_UNIFORMS` uniforms in [0, 1), laid out by `_U`; `valid`, if not
    None, the (h, w) extent of the image at the top left of the array (the rest is padding).
    """
    height, width = image.shape[:2] if valid is None else _extent(valid)
    x = jnp.clip(
        _crop_resize(image, *_random_box(u, height, width, min_scale, max_scale), crop_size),
        0.0,
        1.0,
    )
    if flip:
        x = jnp.where(u[_U["flip"]] < 0.5, x[:, ::-1], x)
    if p_jitter > 0:
        jittered = _color_jitter(u, x, jitter_strength, random_order)
        x = jnp.where(u[_U["do_jitter"]] < p_jitter, jittered, x)
    if p_gray > 0 and x.shape[-1] == 3:
        gray = pix.rgb_to_grayscale(x, keep_dims=True)
        x = jnp.where(u[_U["do_gray"]] < p_gray, gray, x)
    if p_blur > 0:
        sigma = _between(u[_U["sigma"]], *_BLUR_SIGMA)
        radius = max(1, int(_BLUR_KERNEL_FRACTION * crop_size / 2))
        # Reflect-pad and convolve VALID: dm-pix's "SAME" zero-pads and would darken the border.
        padded = jnp.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
        blurred = pix.gaussian_blur(padded, sigma, kernel_size=2 * radius + 1, padding="VALID")
        x = jnp.where(u[_U["do_blur"]] < p_blur, blurred, x)
    return x


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_views",
        "crop_size",
        "min_scale",
        "max_scale",
        "jitter_strength",
        "p_jitter",
        "p_gray",
        "p_blur",
        "flip",
        "random_order",
    ),
)
def make_views(
    rng: jax.Array,
    images: jax.Array,
    num_views: int,
    *,
    crop_size: int,
    valid: jax.Array | None = None,
    min_scale: float = 0.08,
    max_scale: float = 1.0,
    jitter_strength: float = 0.5,
    p_jitter: float = 0.8,
    p_gray: float = 0.2,
    p_blur: float = 0.0,
    flip: bool = True,
    random_order: bool = True,
) -> jax.Array:
    """`num_views` independent random views of every image (see the module docstring).

    Args:
      rng: a PRNG key (typed or raw).
      images: uint8 (B, H, W, C), C in (1, 3), values 0..255.
      num_views: V >= 1.
      crop_size: S, side of the square output views.
      valid: None, or int (B, 2): the extent (h, w) of each image, which fills the top-left
        h x w of its array (the rest is padding, see
        `mvcl.data.input_pipeline.fit_whole`); crop boxes are then drawn inside it, so over the
        whole image whatever its aspect ratio.
      min_scale: smallest crop area as a fraction of the image (0.08 as in SimCLR).
      max_scale: largest crop area as a fraction of the image (1 as in SimCLR; 0.14 for the
        small crops of SwAV's multi-crop).
      jitter_strength: colour jitter strength s (SimCLR: 0.5 on CIFAR, 1.0 on ImageNet).
      p_jitter, p_gray, p_blur: probabilities of colour jitter, grayscale and blur per view.
      flip: random horizontal flips.
      random_order: apply the jitter operations in a random order per view.

    Returns:
      float32 (B, V, S, S, C), normalised to [-1, 1]. All arguments but `rng` and `images` are
      static: one compilation per (image shape, V, settings).
    """
    _check_images(images)
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if not 0 < min_scale <= 1:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
    if not min_scale <= max_scale <= 1:
        raise ValueError(f"max_scale must be in [min_scale, 1] = [{min_scale}, 1], got {max_scale}")
    view = functools.partial(
        _one_view,
        crop_size=crop_size,
        min_scale=min_scale,
        max_scale=max_scale,
        jitter_strength=jitter_strength,
        p_jitter=p_jitter,
        p_gray=p_gray,
        p_blur=p_blur,
        flip=flip,
        random_order=random_order,
    )
    uniforms = jax.random.uniform(rng, (images.shape[0], num_views, _NUM_UNIFORMS))
    # The views' dtype is the uniforms' (float64 under jax_enable_x64), so every colour op, in
    # any order, computes in one dtype (the gradient-caching checks compare views to 1e-10).
    x = images.astype(uniforms.dtype) / 255.0
    if valid is not None and valid.shape != (images.shape[0], 2):
        raise ValueError(
            f"valid must have shape (B, 2) = ({images.shape[0]}, 2), got {valid.shape}"
        )
    views = jax.vmap(jax.vmap(view, in_axes=(0, None, None)), in_axes=(0, 0, 0))(uniforms, x, valid)
    return scale_pixels(views)


def view_groups(num_views: int, augment: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The views an augmentation config asks for, one group per resolution: ``(count, kwargs)``.

    ``augment`` holds `make_views` keyword arguments and, optionally, a ``multicrop`` mapping
    (``num_small``, ``small_size``, ``small_min_scale``, ``small_max_scale``; see
    `mvcl.configs.common`). The first group is ``num_views`` views made with ``augment`` (the large
    crops). If ``num_small > 0``, a second group follows: ``num_small`` small crops with the same
    colour augmentation, of side ``small_size`` and area fraction in
    ``[small_min_scale, small_max_scale]``. Call ``make_views(rng, images, count, **kwargs)`` for
    each group, with its own key.
    """
    large = {k: v for k, v in augment.items() if k != "multicrop"}
    groups = [(num_views, large)]
    multicrop = augment.get("multicrop", {"num_small": 0})
    if multicrop["num_small"]:
        small = dict(
            large,
            crop_size=multicrop["small_size"],
            min_scale=multicrop["small_min_scale"],
            max_scale=multicrop["small_max_scale"],
        )
        groups.append((multicrop["num_small"], small))
    return groups


@functools.partial(jax.jit, static_argnames=("crop_size", "crop_fraction"))
def center_view(
    images: jax.Array, *, crop_size: int | None = None, crop_fraction: float = 1.0
) -> jax.Array:
    """Deterministic evaluation view: central square crop, resized, normalised.

    Args:
      images: uint8 (B, H, W, C).
      crop_size: output side S; None means ``min(H, W)``.
      crop_fraction: side of the central square as a fraction of ``min(H, W)`` (1.0 on CIFAR;
        0.875 is the usual ImageNet centre crop).

    Returns:
      float32 (B, S, S, C) in [-1, 1]. With the defaults on square images this is exactly
      ``scale_pixels(images / 255)``.
    """
    _check_images(images)
    height, width = images.shape[1:3]
    side = crop_fraction * min(height, width)
    size = crop_size or min(height, width)
    y0, x0 = jnp.float32((height - side) / 2), jnp.float32((width - side) / 2)
    side = jnp.float32(side)
    x = images.astype(jnp.float32) / 255.0
    crops = jax.vmap(lambda im: _crop_resize(im, y0, x0, side, side, size))(x)
    return scale_pixels(jnp.clip(crops, 0.0, 1.0))
