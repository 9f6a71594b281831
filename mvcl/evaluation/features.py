"""Features of a frozen encoder: the centre views of a split, streamed through it over a mesh.

`extract_features` reads the split batch by batch (``config.eval.batch_size`` images; every
process reads only the rows of its own devices, and the next batch is read while the devices run
the current one); the centre views go through the encoder (BatchNorm running statistics,
``train=False``) with the batch sharded over a mesh of every device of every process, and the
backbone features (M, F) and projections (M, D) are kept on the host as float16
(``config.eval.feature_dtype``): a feature bank of M·(F + D)·2 bytes instead of the images'
M·H·W·C. Every process ends with the whole bank.

The **raw-pixel baseline** (``with_pixels``, `pixels`) keeps the flattened centre views the same
way (float16, S·S·C values per image: twice the bytes of the uint8 images, so only for small
images; the ImageNet configs turn it off). `embed` is the in-memory counterpart for image arrays
on the default device.

The jitted encoder pass takes the variables as an argument and is compiled once per model, mesh
and shape, so repeated evaluations (`mvcl.train.online_eval`, every few training steps) do not
compile again.
"""

from __future__ import annotations

import concurrent.futures
import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvcl import data
from mvcl.data import input_pipeline
from mvcl.evaluation._sharding import AXIS, _host, _local_rows, _round_up

FEATURE_DTYPES = ("float16", "float32")

Source = Sequence[Mapping[str, Any]]
"""Random-access records (``"image"`` uint8 (H, W, C), ``"label"``), as `mvcl.data.load_split`
returns."""


@functools.partial(jax.jit, static_argnames=("model", "crop_size"))
def _forward(model: nn.Module, variables, images, *, crop_size: int):
    return model.apply(variables, data.center_view(images, crop_size=crop_size), train=False)


def embed(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    crop_size: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features (M, F) and projections (M, D) of the centre views of uint8 images.

    For image arrays already in memory, on the default device; `extract_features` streams a
    split over a mesh. The last chunk is padded to ``batch_size`` so one compilation serves all.
    """
    features, projections = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.concatenate([chunk, np.zeros_like(images[: batch_size - len(chunk)])])
        h, z = jax.device_get(_forward(model, variables, padded, crop_size=crop_size))
        features.append(h[: len(chunk)])
        projections.append(z[: len(chunk)])
    return np.concatenate(features), np.concatenate(projections)


def pixels(images: np.ndarray, *, crop_size: int) -> np.ndarray:
    """Flattened centre views in [-1, 1], (M, S·S·C): the raw-pixel baseline's features."""
    views = data.center_view(jnp.asarray(images), crop_size=crop_size)
    return np.asarray(views).reshape(len(images), -1)


@functools.lru_cache(maxsize=8)
def _sharded_forward(model: nn.Module, mesh: jax.sharding.Mesh, crop_size: int, with_pixels: bool):
    """The jitted ``(variables, images) -> {"backbone", "projector"[, "pixels"]}`` of the centre
    views, replicated on ``mesh``: one compilation per (model, mesh, crop, batch shape), shared
    by every call of `extract_features` (repeated evaluations, e.g. `mvcl.train.online_eval`)."""

    def forward(variables, images):
        h, z = model.apply(variables, data.center_view(images, crop_size=crop_size), train=False)
        out = {"backbone": h, "projector": z}
        if with_pixels:
            out["pixels"] = data.center_view(images, crop_size=crop_size).reshape(len(images), -1)
        return out

    return jax.jit(forward, out_shardings=NamedSharding(mesh, P()))


def _to_bank_dtype(x: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``x`` cast for the host bank; a ValueError instead of inf where float16 overflows."""
    with np.errstate(over="ignore"):  # reported below
        out = x.astype(dtype)
    if not np.all(np.isfinite(out)):
        what = "non-finite values" if not np.all(np.isfinite(x)) else f"values beyond {dtype}"
        with warnings.catch_warnings():  # all NaN: the largest magnitude is NaN, say no more
            warnings.simplefilter("ignore", RuntimeWarning)
            largest = np.nanmax(np.abs(x))
        raise ValueError(
            f"the {name} features hold {what} (largest magnitude {largest:.3g}); "
            f"set config.eval.feature_dtype='float32' or check the checkpoint"
        )
    return out


def extract_features(
    model: nn.Module,
    variables: Mapping[str, Any],
    source: Source,
    indices: np.ndarray,
    *,
    mesh: jax.sharding.Mesh,
    crop_size: int,
    batch_size: int,
    image_size: int | None = None,
    with_pixels: bool = False,
    dtype: str = "float16",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of the records ``indices`` of ``source``, streamed batch by batch over ``mesh``.

    Each global batch of ``batch_size`` records (the last one padded; rounded up to a multiple
    of the mesh size) is read by the processes, each only the rows of its own devices, and the
    encoder runs with the batch sharded over the mesh's axis; the next batch is read on a host
    thread while the devices work. Only the features stay on the host.

    Args:
      model: the encoder (it runs with ``train=False``).
      variables: its ``{"params", "batch_stats"}``.
      source: random-access records (``"image"`` uint8 (H, W, C), ``"label"``), as
        `mvcl.data.load_split` returns.
      indices: the records to embed, in output order.
      mesh: a 1-D mesh over ``parallel.DEFAULT_AXIS``.
      crop_size: side of the centre view.
      batch_size: images per global batch.
      image_size: host-side resize + centre crop of records of varying size (as in training).
      with_pixels: also keep the flattened centre views (the raw-pixel baseline).
      dtype: "float16" or "float32", the dtype of the host bank.

    Returns:
      ``({"backbone": (M, F), "projector": (M, D)[, "pixels": (M, S·S·C)]}, labels int32 (M,))``
      on every process.
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(
            f"config.eval.feature_dtype must be one of {FEATURE_DTYPES}, got {dtype!r}"
        )
    if batch_size < 1:
        raise ValueError(f"config.eval.batch_size must be >= 1, got {batch_size}")
    indices = np.asarray(indices, np.int64)
    source = input_pipeline.with_encoded_images(source)
    batch_size = _round_up(min(batch_size, max(len(indices), 1)), mesh.size)
    sharding = NamedSharding(mesh, P(AXIS))
    lo, hi = _local_rows(sharding, batch_size)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))  # no copy if already there
    run = functools.partial(_sharded_forward(model, mesh, crop_size, with_pixels), variables)

    def read(start: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's rows [lo, hi) of the global batch at ``start``, zero-padded."""
        rows = indices[start + lo : min(start + hi, len(indices))]
        if not len(rows):  # the padded tail of the last batch is all this process's
            rows, keep = indices[:1], 0
        else:
            keep = len(rows)
        batch = input_pipeline.read_records(source, rows, image_size)
        images = batch["image"][:keep]
        pad = hi - lo - keep
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)])
        return images, batch["label"][:keep]

    starts = list(range(0, len(indices), batch_size))
    if not starts:
        raise ValueError("no examples to embed (empty split or subset)")
    bank: dict[str, np.ndarray] = {}
    labels = np.zeros(len(indices), np.int32)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read, starts[0])
        for i, start in enumerate(starts):
            images, _ = local = pending.result()
            if i + 1 < len(starts):
                pending = reader.submit(read, starts[i + 1])
            global_images = jax.make_array_from_process_local_data(
                sharding, images, (batch_size, *images.shape[1:])
            )
            out = run(global_images)
            count = min(batch_size, len(indices) - start)
            labels[start + lo : min(start + hi, len(indices))] = local[1]
            for name, value in out.items():
                value = _host(value)[:count]
                if name not in bank:
                    bank[name] = np.zeros((len(indices), value.shape[1]), dtype)
                bank[name][start : start + count] = _to_bank_dtype(value, np.dtype(dtype), name)
    if jax.process_count() > 1:  # every process read only its rows' labels
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

        labels = np.asarray(multihost_utils.process_allgather(labels)).max(axis=0)
    return bank, labels
