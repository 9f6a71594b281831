"""Evaluation of a pretrained encoder: linear probe, weighted kNN and embedding geometry.

Everything here reads a frozen encoder (BatchNorm running statistics, ``train=False``) and runs on
the host's devices in plain ``jax.jit`` (no mesh):

* **linear probe**: multinomial logistic regression on the backbone features of the centre view
  of every train image, standardised with the train mean and standard deviation, fitted by
  full-batch L-BFGS (``optax.lbfgs``) with an L2 penalty ``½ λ ||W||²``; test accuracy.
* **weighted kNN** (Wu et al. 2018, InstDisc; the SimCLR kNN monitor): cosine similarity of each
  test feature to every train feature; the k most similar vote for their label with weight
  ``exp(similarity / T)``; the class with the largest total wins.
* **raw-pixel baseline**: the same probe and kNN on the flattened centre views, so a number can
  be read against what the pixels alone give.
* **geometry** (``mvcl.metrics.all_metrics``) of backbone features and projections of V random
  views (the training augmentation; with multi-crop, the V large crops) of test images:
  alignment, uniformity, effective rank, covariance rank, Wasserstein uniformity.

`evaluate` does all of it from a config and the encoder's variables; `format_report` prints it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from mvcl import data, metrics

FEATURE_SETS = ("backbone", "projector", "pixels")
_GEOMETRY_SEED = 1234  # views for the geometry metrics: fixed, so evaluations are comparable


# --- features -----------------------------------------------------------------------------------


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

    The last chunk is padded to ``batch_size`` so one compilation serves every chunk.
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


# --- linear probe -------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_logistic(x, y, *, num_classes: int, weight_decay: float, steps: int):
    """Weights (F, C) and bias (C,) minimising mean cross-entropy + ½ λ ||W||² by L-BFGS."""
    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

    def objective(p):
        logits = x @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * weight_decay * jnp.sum(p["w"] ** 2)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=objective)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), length=steps)
    return params


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    weight_decay: float = 1e-4,
    steps: int = 300,
) -> float:
    """Test accuracy of an L2-regularised logistic regression on standardised features.

    Args:
      train_x, test_x: (M, F) features; standardised with the train mean and std.
      train_y, test_y: (M,) integer labels in [0, num_classes).
      num_classes: number of classes C.
      weight_decay: λ of the penalty ``½ λ ||W||²`` (the bias is not penalised).
      steps: L-BFGS iterations (each with a zoom line search).
    """
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    params = _fit_logistic(
        jnp.asarray((train_x - mean) / std, jnp.float32),
        jnp.asarray(train_y),
        num_classes=num_classes,
        weight_decay=weight_decay,
        steps=steps,
    )
    logits = jnp.asarray((test_x - mean) / std, jnp.float32) @ params["w"] + params["b"]
    return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == test_y))


# --- weighted kNN -------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_classes", "k"))
def _knn_predict(queries, keys, key_labels, *, num_classes: int, k: int, temperature: float):
    """Temperature-weighted votes of the k nearest keys (cosine) for each query row."""
    similarity = queries @ keys.T
    top_sim, top_idx = jax.lax.top_k(similarity, k)
    votes = (
        jax.nn.one_hot(key_labels[top_idx], num_classes) * jnp.exp(top_sim / temperature)[..., None]
    )
    return jnp.argmax(votes.sum(axis=1), axis=-1)


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Test accuracy of the weighted kNN classifier (cosine similarity, weights exp(s / T))."""

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    keys, queries = jnp.asarray(unit(train_x), jnp.float32), unit(test_x).astype(np.float32)
    k = min(k, len(train_x))
    predictions = [
        np.asarray(
            _knn_predict(
                jnp.asarray(queries[start : start + chunk_size]),
                keys,
                jnp.asarray(train_y),
                num_classes=num_classes,
                k=k,
                temperature=temperature,
            )
        )
        for start in range(0, len(queries), chunk_size)
    ]
    return float(np.mean(np.concatenate(predictions) == test_y))


# --- geometry -----------------------------------------------------------------------------------


def view_geometry(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    num_views: int,
    augment: Mapping[str, Any],
) -> dict[str, float]:
    """``mvcl.metrics.all_metrics`` of backbone features and projections of random views.

    Every image gets ``num_views`` views made with the training augmentation ``augment`` (the
    keyword arguments of `mvcl.data.make_views`) from a fixed key. Keys are
    ``"backbone/<metric>"`` and ``"projector/<metric>"``.
    """

    @jax.jit
    def geometry(x):
        views = data.make_views(jax.random.key(_GEOMETRY_SEED), x, num_views, **augment)
        n = views.shape[0]
        h, z = model.apply(variables, views.reshape(n * num_views, *views.shape[2:]), train=False)
        return {
            "backbone": metrics.all_metrics(h.reshape(n, num_views, -1)),
            "projector": metrics.all_metrics(z.reshape(n, num_views, -1)),
        }

    results = jax.device_get(geometry(jnp.asarray(images)))
    return {
        f"{part}/{name}": float(v) for part, values in results.items() for name, v in values.items()
    }


# --- everything ---------------------------------------------------------------------------------


def evaluate(
    config: config_dict.ConfigDict, model: nn.Module, variables: Mapping[str, Any]
) -> dict[str, float]:
    """Linear probe, kNN (encoder and raw pixels) and geometry on ``config.dataset``.

    Args:
      config: a pretraining config (``configs/common.py``): the data set and its splits, the
        augmentation, ``num_views`` and ``config.eval``.
      model: the ``ContrastiveModel`` (any ``axis_name``: it runs with ``train=False``).
      variables: ``{"params", "batch_stats"}`` of the model.

    Returns:
      Flat ``{"<features>/<measure>": value}`` with features in ``backbone``, ``projector``,
      ``pixels`` (if ``config.eval.pixel_baseline``) and measures ``linear_probe`` and ``knn``
      (accuracies in [0, 1]), plus the geometry metrics of `view_geometry`.
    """
    ds, ev = config.dataset, config.eval
    crop = config.augment.crop_size
    splits = {
        split: data.load_numpy(ds.name, split, ds.data_dir, image_size=ds.image_size)
        for split in (ds.train_split, ds.test_split)
    }
    (train_images, train_y), (test_images, test_y) = splits[ds.train_split], splits[ds.test_split]
    num_classes = int(max(train_y.max(), test_y.max())) + 1

    embed_ = functools.partial(embed, model, variables, crop_size=crop, batch_size=ev.batch_size)
    (train_h, train_z), (test_h, test_z) = embed_(train_images), embed_(test_images)
    features = {"backbone": (train_h, test_h), "projector": (train_z, test_z)}
    if ev.pixel_baseline:
        features["pixels"] = (
            pixels(train_images, crop_size=crop),
            pixels(test_images, crop_size=crop),
        )

    results = {}
    for name, (train_x, test_x) in features.items():
        results[f"{name}/linear_probe"] = linear_probe_accuracy(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=num_classes,
            weight_decay=ev.probe_weight_decay,
            steps=ev.probe_steps,
        )
        results[f"{name}/knn"] = knn_accuracy(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=num_classes,
            k=ev.knn_k,
            temperature=ev.knn_temperature,
        )
    num_views, augment = data.view_groups(config.num_views, config.augment.to_dict())[0]  # large
    results.update(
        view_geometry(
            model,
            variables,
            test_images[: ev.geometry_examples],
            num_views=num_views,
            augment=augment,
        )
    )
    return results


def format_report(results: Mapping[str, float], *, knn_k: int | None = None) -> str:
    """A table of the accuracies (features x probe/kNN) and one of the geometry metrics."""
    knn = "kNN" if knn_k is None else f"kNN (k={knn_k})"
    lines = [f"{'test accuracy':<16}{'linear probe':>14}{knn:>14}"]
    for name in FEATURE_SETS:
        if f"{name}/linear_probe" in results:
            label = "raw pixels" if name == "pixels" else name
            probe, neighbours = results[f"{name}/linear_probe"], results[f"{name}/knn"]
            lines.append(f"{label:<16}{probe:>14.2%}{neighbours:>14.2%}")
    geometry = sorted(
        {k.split("/")[1] for k in results if k.split("/")[1] not in ("linear_probe", "knn")}
    )
    lines += ["", f"{'geometry':<24}{'backbone':>12}{'projector':>12}"]
    for name in geometry:
        lines.append(
            f"{name:<24}{results[f'backbone/{name}']:>12.4g}{results[f'projector/{name}']:>12.4g}"
        )
    return "\n".join(lines)
