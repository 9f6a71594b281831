"""Evaluation of a per-view (multimodal) encoder: per-modality probes and cross-modal retrieval.

For a `mvcl.models.PerViewModel` built from ``config.model.per_view``, every group of views is a
modality with its own encoder. Its evaluation view of an image is the centre crop
(`mvcl.data.center_view`) through the group's input transform (`mvcl.data.modalities`):

* **per modality** ``<group>/linear_probe`` and ``<group>/knn``: the linear probe and weighted kNN
  of `mvcl.evaluation` on the group's encoder features (train split fits, test split scores);
  ``<group>/raw_linear_probe`` the same probe on the flattened modality input itself (no encoder);
* **cross-modal retrieval** ``retrieval/<a>-><b>`` for every ordered pair of groups: over the test
  set, the fraction of instances whose modality-``a`` projection has, among the modality-``b``
  projections of all test instances, its own instance's as the most cosine-similar (top-1; chance
  is 1 / test size); ``retrieval/mean`` averages the ordered pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from mvcl import data
from mvcl.data import modalities
from mvcl.evaluation.knn import knn_accuracy
from mvcl.evaluation.probes import linear_probe_accuracy
from mvcl.models.per_view import PerViewModel, group_inputs


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_accuracy(queries: np.ndarray, keys: np.ndarray, *, chunk_size: int = 1024) -> float:
    """Top-1 retrieval accuracy of row-aligned ``queries`` (M, D) against ``keys`` (M, D).

    Query ``i`` is right when key ``i`` is its most cosine-similar key (ties go to the lower
    index). Chance level is ``1 / M``.
    """
    queries, keys = np.asarray(queries), np.asarray(keys)
    if queries.ndim != 2 or queries.shape != keys.shape:
        raise ValueError(
            f"queries and keys must be row-aligned (M, D) arrays of one shape, got {queries.shape} "
            f"and {keys.shape}"
        )
    keys_t = jnp.asarray(_unit(keys)).T
    unit_queries = _unit(queries)
    best = [
        np.asarray(jnp.argmax(jnp.asarray(unit_queries[s : s + chunk_size]) @ keys_t, axis=1))
        for s in range(0, len(queries), chunk_size)
    ]
    return float(np.mean(np.concatenate(best) == np.arange(len(queries))))


def cross_modal_retrieval(projections: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``retrieval/<a>-><b>`` for every ordered pair of modalities, and ``retrieval/mean``."""
    results = {
        f"retrieval/{a}->{b}": retrieval_accuracy(projections[a], projections[b])
        for a, b in itertools.permutations(projections, 2)
    }
    if results:
        results["retrieval/mean"] = float(np.mean(list(results.values())))
    return results


def embed_groups(
    model: PerViewModel,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    inputs: tuple[str, ...],
    crop_size: int,
    batch_size: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Per group: ``features`` (M, F), ``projections`` (M, D), ``raw`` (M, ·) of uint8 images.

    ``inputs`` names each group's modality; the encoders see the centre views in evaluation mode.
    The last chunk is padded to ``batch_size`` so one compilation serves every chunk.
    """

    @jax.jit
    def forward(variables, chunk):
        views = data.center_view(chunk, crop_size=crop_size)
        out = []
        for g, name in enumerate(inputs):
            h, z = model.apply(variables, views, g, train=False, method=PerViewModel.encode)
            out.append((h, z, modalities.get(name)(views).reshape(len(chunk), -1)))
        return out

    parts: list[list[tuple[np.ndarray, ...]]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.concatenate([chunk, np.zeros_like(images[: batch_size - len(chunk)])])
        outputs = jax.device_get(forward(variables, padded))
        parts.append([tuple(a[: len(chunk)] for a in group) for group in outputs])
    return {
        name: {
            key: np.concatenate([p[g][i] for p in parts])
            for i, key in enumerate(("features", "projections", "raw"))
        }
        for g, name in enumerate(model.group_names)
    }


def evaluate(
    config: config_dict.ConfigDict, model: PerViewModel, variables: Mapping[str, Any]
) -> dict[str, float]:
    """Per-modality probes and kNN, raw-input probes, and cross-modal retrieval (module doc).

    Args:
      config: a pretraining config with ``config.model.per_view`` (the data set, its splits,
        ``config.augment.crop_size`` and ``config.eval``).
      model: its `PerViewModel` (any ``axis_name``: it runs with ``train=False``).
      variables: ``{"params", "batch_stats"}`` of the model.
    """
    ds, ev = config.dataset, config.eval
    (train_images, train_y), (test_images, test_y) = (
        data.load_numpy(ds.name, split, ds.data_dir, image_size=ds.image_size)
        for split in (ds.train_split, ds.test_split)
    )
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    embed = {
        split: embed_groups(
            model,
            variables,
            images,
            inputs=group_inputs(config),
            crop_size=config.augment.crop_size,
            batch_size=ev.batch_size,
        )
        for split, images in (("train", train_images), ("test", test_images))
    }
    # Small data sets only (the splits are held in memory, as images): the full-batch L-BFGS
    # probe at its default 300 steps, the reference the streaming minibatch probe is checked
    # against (`mvcl.evaluation.probes`).
    probe = {"weight_decay": ev.probe_weight_decay}
    results = {}
    for name in model.group_names:
        train_g, test_g = embed["train"][name], embed["test"][name]
        args = (train_g["features"], train_y, test_g["features"], test_y)
        results[f"{name}/linear_probe"] = linear_probe_accuracy(
            *args, num_classes=num_classes, **probe
        )
        results[f"{name}/knn"] = knn_accuracy(
            *args, num_classes=num_classes, k=ev.knn_k, temperature=ev.knn_temperature
        )
        results[f"{name}/raw_linear_probe"] = linear_probe_accuracy(
            train_g["raw"], train_y, test_g["raw"], test_y, num_classes=num_classes, **probe
        )
    results.update(
        cross_modal_retrieval({n: embed["test"][n]["projections"] for n in model.group_names})
    )
    return results


def format_report(results: Mapping[str, float]) -> str:
    """A table of the per-modality accuracies, then the retrieval accuracies."""
    names = dict.fromkeys(k.split("/")[0] for k in results if not k.startswith("retrieval/"))
    lines = [f"{'test accuracy':<16}{'linear probe':>14}{'kNN':>10}{'raw-input probe':>18}"]
    for name in names:
        lines.append(
            f"{name:<16}{results[f'{name}/linear_probe']:>14.2%}{results[f'{name}/knn']:>10.2%}"
            f"{results[f'{name}/raw_linear_probe']:>18.2%}"
        )
    retrieval = [k for k in results if k.startswith("retrieval/")]
    if retrieval:
        lines += ["", f"{'top-1 cross-modal retrieval (test set)':<40}"]
        lines += [f"{k.removeprefix('retrieval/'):<28}{results[k]:>12.2%}" for k in retrieval]
    return "\n".join(lines)
