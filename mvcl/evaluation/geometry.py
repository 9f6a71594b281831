"""Embedding geometry (``mvcl.metrics.all_metrics``) of random views through a frozen encoder.

Backbone features and projections of V random views (the training augmentation; with
multi-crop, the V large crops) of a bounded subset of images (the pairwise metrics hold (M, M)
matrices): alignment, uniformity, effective rank, covariance rank, Wasserstein uniformity. The
views are made from the whole subset at once, from a fixed key, and the encoder runs on them
sharded over the mesh (`view_embeddings`), so they are the same on any number of devices.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvcl import data, metrics, parallel
from mvcl.evaluation._sharding import AXIS, _global_array, _host, _round_up

_GEOMETRY_SEED = 1234  # views for the geometry metrics: fixed, so evaluations are comparable


@functools.lru_cache(maxsize=8)
def _view_forward(model: nn.Module, mesh: jax.sharding.Mesh, num_views: int, augment_items: tuple):
    """The jitted ``(variables, images) -> (h, z)`` of `view_embeddings`, replicated on ``mesh``."""
    augment = dict(augment_items)

    def forward(variables, images):
        # The views are made from the whole (replicated) batch, so they do not depend on the mesh.
        views = data.make_views(jax.random.key(_GEOMETRY_SEED), images, num_views, **augment)
        n = views.shape[0]
        rows = views.reshape(n * num_views, *views.shape[2:])
        pad = _round_up(len(rows), mesh.size) - len(rows)
        rows = jnp.concatenate([rows, jnp.zeros((pad, *rows.shape[1:]), rows.dtype)])
        rows = jax.lax.with_sharding_constraint(rows, NamedSharding(mesh, P(AXIS)))
        h, z = model.apply(variables, rows, train=False)
        return (
            h[: n * num_views].reshape(n, num_views, -1),
            z[: n * num_views].reshape(n, num_views, -1),
        )

    return jax.jit(forward, out_shardings=NamedSharding(mesh, P()))


def view_embeddings(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    num_views: int,
    augment: Mapping[str, Any],
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features (N, V, F) and projections (N, V, D) of ``num_views`` random views of
    each uint8 image, as float32 on the host of every process.

    The views are made with the training augmentation ``augment`` (the keyword arguments of
    `mvcl.data.make_views`) from a fixed key, from the whole batch ``images`` (the same on every
    process), so they are the same on any mesh; the encoder then runs on the N·V views sharded
    over ``mesh`` (default: every device). ``variables`` may already be replicated on ``mesh``
    (a train state's): they are not copied then.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    replicated = NamedSharding(mesh, P())
    variables = jax.device_put(variables, replicated)
    forward = _view_forward(model, mesh, num_views, tuple(sorted(augment.items())))
    h, z = forward(variables, _global_array(mesh, np.asarray(images), P()))
    return _host(h).astype(np.float32), _host(z).astype(np.float32)


@jax.jit
def _all_metrics(h, z):
    return {"backbone": metrics.all_metrics(h), "projector": metrics.all_metrics(z)}


def view_geometry(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    num_views: int,
    augment: Mapping[str, Any],
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, float]:
    """``mvcl.metrics.all_metrics`` of backbone features and projections of random views.

    Every image gets ``num_views`` views made with the training augmentation ``augment`` (the
    keyword arguments of `mvcl.data.make_views`) from a fixed key; the encoder runs sharded over
    ``mesh`` (`view_embeddings`), the metrics on each process's default device. Keys are
    ``"backbone/<metric>"`` and ``"projector/<metric>"``.
    """
    h, z = view_embeddings(
        model, variables, images, num_views=num_views, augment=augment, mesh=mesh
    )
    results = jax.device_get(_all_metrics(h, z))
    return {
        f"{part}/{name}": float(v) for part, values in results.items() for name, v in values.items()
    }
