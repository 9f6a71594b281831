"""The whole evaluation of an encoder from its config, and the report it prints.

`evaluate` extracts the features of the train split (all of it, or the fixed random subset of
``config.eval.train_examples`` images, `train_subset`) and of the test split
(`mvcl.evaluation.features`), fits the linear probe and the kNN classifier on each feature set
(`mvcl.evaluation.probes`, `mvcl.evaluation.knn`) and measures the geometry of the first
``config.eval.geometry_examples`` test images (`mvcl.evaluation.geometry`). `format_report`
prints the results as two tables.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import numpy as np
from ml_collections import config_dict

from mvcl import data, parallel
from mvcl.data import input_pipeline
from mvcl.evaluation.features import Source, extract_features
from mvcl.evaluation.geometry import view_geometry
from mvcl.evaluation.knn import knn_accuracy
from mvcl.evaluation.probes import minibatch_probe_accuracy

FEATURE_SETS = ("backbone", "projector", "pixels")
_SUBSET_SEED = 0  # the fixed subset of config.eval.train_examples train images


# Defaults of the streaming evaluation's fields, for configs saved before they existed.
EVAL_DEFAULTS = {
    "train_examples": None,
    "feature_dtype": "float16",
    "knn_chunk_size": 8192,
    "probe_epochs": 100,
    "probe_batch_size": 256,
    "probe_lr": 0.01,
    # the online evaluation (mvcl.train.online_eval)
    "every_steps": 0,
    "online_train_examples": 1000,
    "online_test_examples": 500,
    "collapse_check": True,
    "collapse_rank_fraction": 0.02,
    "collapse_std": 0.01,
}


def eval_settings(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """``config.eval`` with `EVAL_DEFAULTS` for the fields it lacks (older saved configs)."""
    settings = config_dict.ConfigDict(EVAL_DEFAULTS)
    settings.update(config.eval.to_dict())
    return settings


def train_subset(size: int, train_examples: int | None, *, seed: int = _SUBSET_SEED) -> np.ndarray:
    """Record ids of the train split the evaluation uses: all, or a fixed random subset.

    ``train_examples`` images drawn without replacement by ``default_rng(seed)`` (default 0: the
    same subset for every evaluation of the split), in increasing order.
    """
    if train_examples is None:
        return np.arange(size)
    if not 1 <= train_examples <= size:
        raise ValueError(
            f"config.eval.train_examples must be None (all) or in [1, {size}] (the size of the "
            f"train split), got {train_examples}"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, train_examples, replace=False))


def evaluate(
    config: config_dict.ConfigDict,
    model: nn.Module,
    variables: Mapping[str, Any],
    *,
    sources: Mapping[str, Source] | None = None,
) -> dict[str, float]:
    """Linear probe, kNN (encoder and raw pixels) and geometry on ``config.dataset``, streamed.

    Args:
      config: a pretraining config (``configs/common.py``): the data set and its splits, the
        augmentation, ``num_views``, ``num_devices`` and ``config.eval``.
      model: the ``ContrastiveModel`` (any ``axis_name``: it runs with ``train=False``).
      variables: ``{"params", "batch_stats"}`` of the model.
      sources: ``{"train": ..., "test": ...}`` random-access records to use instead of opening
        ``config.dataset``'s splits (tests, custom data).

    Returns:
      Flat ``{"<features>/<measure>": value}`` with features in ``backbone``, ``projector``,
      ``pixels`` (if ``config.eval.pixel_baseline``) and measures ``linear_probe`` and ``knn``
      (accuracies in [0, 1]), plus the geometry metrics of `view_geometry`.
    """
    ds, ev = config.dataset, eval_settings(config)
    if sources is None:
        sources = {
            "train": data.load_split(ds.name, ds.train_split, ds.data_dir),
            "test": data.load_split(ds.name, ds.test_split, ds.data_dir),
        }
    mesh = parallel.make_mesh(None if config.num_devices == -1 else config.num_devices)
    extract = functools.partial(
        extract_features,
        model,
        variables,
        mesh=mesh,
        crop_size=config.augment.crop_size,
        batch_size=ev.batch_size,
        image_size=ds.image_size,
        with_pixels=ev.pixel_baseline,
        dtype=ev.feature_dtype,
    )
    train_ids = train_subset(len(sources["train"]), ev.train_examples)
    train_bank, train_y = extract(sources["train"], train_ids)
    test_bank, test_y = extract(sources["test"], np.arange(len(sources["test"])))
    num_classes = int(max(train_y.max(), test_y.max())) + 1

    results = {}
    for name in FEATURE_SETS:
        if name not in train_bank:
            continue
        train_x, test_x = train_bank[name], test_bank[name]
        results[f"{name}/linear_probe"] = minibatch_probe_accuracy(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=num_classes,
            weight_decay=ev.probe_weight_decay,
            epochs=ev.probe_epochs,
            batch_size=ev.probe_batch_size,
            learning_rate=ev.probe_lr,
            mesh=mesh,
        )
        results[f"{name}/knn"] = knn_accuracy(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=num_classes,
            k=ev.knn_k,
            temperature=ev.knn_temperature,
            chunk_size=ev.knn_chunk_size,
            mesh=mesh,
        )
    num_views, augment = data.view_groups(config.num_views, config.augment.to_dict())[0]  # large
    geometry_ids = np.arange(min(ev.geometry_examples, len(sources["test"])))
    geometry_images = input_pipeline.read_records(sources["test"], geometry_ids, ds.image_size)[
        "image"
    ]
    results.update(
        view_geometry(
            model, variables, geometry_images, num_views=num_views, augment=augment, mesh=mesh
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
