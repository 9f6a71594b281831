"""Online evaluation: a cheap look at the encoder every ``config.eval.every_steps`` training steps.

`OnlineEvaluator` is built once per run, ``OnlineEvaluator(config, model, mesh)``: it reads a
fixed random subset of ``config.eval.online_train_examples`` train images and one of
``config.eval.online_test_examples`` test images (`mvcl.evaluation.train_subset` with seeds
0 and 1: the same subsets at every call, in every session of a resumed run and on any number of
devices or processes; a split smaller than asked is taken whole). With ``config.dataset.fake``
both subsets come from the run's fake images (`mvcl.train.inputs.fake_source`). The images stay
on the host of every process as uint8 (1,000 Fashion-MNIST images: 0.8 MB).

``evaluator.evaluate(variables)`` (the train state's ``{"params", "batch_stats"}``, left where
they are on the mesh: no copy to the host) returns, with the functions of
`mvcl.evaluation` (so it is sharded over the mesh and correct on several processes):

* ``online/knn_backbone``, ``online/knn_projector``: test accuracy in [0, 1] of the weighted kNN
  (``config.eval.knn_k`` neighbours, cosine similarity, weights exp(s / ``knn_temperature``)) of
  the centre views' features of the test subset against those of the train subset
  (`extract_features`, `knn_accuracy`; a float32 host bank, whatever
  ``config.eval.feature_dtype``: the subsets are small, and float16 could overflow while the
  encoder trains).
* geometry of two random views of every test-subset image (the first view group of the training
  augmentation, from a fixed key: `view_embeddings`), M = 2 x test examples rows:
  ``online/effective_rank_{backbone,projector}`` (RankMe), ``online/alignment_{...}``,
  ``online/uniformity_{...}`` (t = 2) as `mvcl.metrics` defines them, and
  ``online/projector_std_min``, ``online/projector_std_mean``: the smallest and the mean over the
  D dimensions of the standard deviation (over the M rows) of the L2-normalised projections.
  Uniform unit vectors give 1/sqrt(D) in every dimension; a collapsed encoder (one output for
  every input) gives 0.

  Two views, not the run's V: alignment needs at least two, two keep the cost independent of V
  and make runs of different V comparable (a sweep's learning curves). Views rather than centre
  crops: alignment is a property of augmented pairs, and the rank and spread of the embeddings
  are those of the inputs the loss sees.

An encoder whose features are not finite (a diverged run) gets NaN for every metric rather than
an error: the training loop's divergence guard deals with it.

`collapse_warning` turns the results into one line when the projections look collapsed (see its
docstring); the training loop warns once and logs ``online/collapse``.

The cost of one evaluation against a training step is measured by
``experiments/bench_online_eval.py`` (``experiments/results/bench_online_eval.json``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from ml_collections import config_dict

from mvcl import data, evaluation, metrics, models, numerics
from mvcl.data import input_pipeline
from mvcl.train import config_checks, inputs
from mvcl.train.config_checks import require
from mvcl.train.errors import ConfigError

SETTINGS = (
    "every_steps",
    "online_train_examples",
    "online_test_examples",
    "collapse_check",
    "collapse_rank_fraction",
    "collapse_std",
)
"""The ``config.eval`` fields of the online evaluation (defaults:
`mvcl.evaluation.EVAL_DEFAULTS`)."""
PREFIX = "online/"
GEOMETRY_VIEWS = 2  # views per test image for the geometry metrics (see the module docstring)
# evaluation.train_subset's default seed: the final evaluation's subset when the sizes are equal
TRAIN_SUBSET_SEED = 0
TEST_SUBSET_SEED = 1
KEYS = tuple(
    PREFIX + name
    for name in (
        "knn_backbone",
        "knn_projector",
        "effective_rank_backbone",
        "effective_rank_projector",
        "alignment_backbone",
        "alignment_projector",
        "uniformity_backbone",
        "uniformity_projector",
        "projector_std_min",
        "projector_std_mean",
    )
)
"""The keys of `OnlineEvaluator.evaluate`'s results, in order."""


def check_settings(config: config_dict.ConfigDict) -> None:
    """Raises ``ConfigError("config.eval.<field>: ...")`` for an invalid online-evaluation field
    (its numeric ranges are those of `mvcl.train.config_checks.RANGES`, which
    `validate_config` checks; `OnlineEvaluator` checks them too)."""
    ev = {name: config.eval.get(name, evaluation.EVAL_DEFAULTS[name]) for name in SETTINGS}
    for name, value in ev.items():
        allowed = config_checks.RANGES.get(f"eval.{name}")
        if allowed is not None:
            require(allowed.holds(value), f"eval.{name}", f"must be {allowed}, got {value!r}")
    require(
        isinstance(ev["collapse_check"], bool),
        "eval.collapse_check",
        f"must be True or False, got {ev['collapse_check']!r}",
    )


def _subset(source: evaluation.Source, size: int | None, seed: int, image_size: int | None):
    """``min(size, len(source))`` records of ``source`` (a fixed random subset) read into memory:
    ``(uint8 images (n, H, W, C), int32 labels (n,))``."""
    count = len(source) if size is None else min(size, len(source))
    ids = evaluation.train_subset(len(source), count, seed=seed)
    batch = input_pipeline.read_records(source, ids, image_size)
    return batch["image"], np.asarray(batch["label"], np.int32)


def _records(images: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """In-memory records, as `mvcl.evaluation.extract_features` reads them."""
    return [{"image": image, "label": int(label)} for image, label in zip(images, labels)]


class OnlineEvaluator:
    """kNN accuracy and embedding geometry of fixed train/test subsets (module docstring).

    Build it once per run, after the train state; call `evaluate` with the state's variables.

    Args:
      config: the run's config: ``config.dataset`` (splits, ``image_size``, ``fake``),
        ``config.augment`` (views and centre crop) and ``config.eval`` (``online_*``, ``knn_*``,
        ``batch_size``, ``feature_dtype``, ``collapse_*``).
      model: the run's ``ContrastiveModel`` (any ``axis_name``; it runs with ``train=False``).
        Per-view (multimodal) models are not supported: a ConfigError.
      mesh: the run's 1-D mesh over ``parallel.DEFAULT_AXIS``.
      split_sources: ``{"train": ..., "test": ...}`` random-access records instead of the
        config's splits (tests, custom data).
    """

    def __init__(
        self,
        config: config_dict.ConfigDict,
        model: nn.Module,
        mesh: jax.sharding.Mesh,
        *,
        split_sources: Mapping[str, evaluation.Source] | None = None,
    ):
        if isinstance(model, models.PerViewModel):
            raise ConfigError(
                "config.eval.every_steps: the online evaluation does not support per-view "
                "(config.model.per_view) models; set it to 0"
            )
        check_settings(config)
        self.config, self.model, self.mesh = config, model, mesh
        self.settings = evaluation.eval_settings(config)
        ds = config.dataset
        if split_sources is None:
            if ds.fake:
                fake = inputs.fake_source(config)
                split_sources = {"train": fake, "test": fake}
            else:
                split_sources = {
                    "train": inputs.open_split(config, "train_split"),
                    "test": inputs.open_split(config, "test_split"),
                }
        ev = self.settings
        self.train_images, self.train_labels = _subset(
            split_sources["train"], ev.online_train_examples, TRAIN_SUBSET_SEED, ds.image_size
        )
        self.test_images, self.test_labels = _subset(
            split_sources["test"], ev.online_test_examples, TEST_SUBSET_SEED, ds.image_size
        )
        self._train = _records(self.train_images, self.train_labels)
        self._test = _records(self.test_images, self.test_labels)
        self.num_classes = int(max(self.train_labels.max(), self.test_labels.max())) + 1
        num_views, augment = data.view_groups(config.num_views, config.augment.to_dict())[0]
        del num_views  # GEOMETRY_VIEWS instead (module docstring)
        self._augment = augment
        self.proj_dim: int | None = None  # D, known after the first evaluation

    def features(self, variables: Mapping[str, Any]) -> tuple[dict, dict]:
        """Host banks ``{"backbone", "projector"}`` of the centre views of the train and test
        subsets (`mvcl.evaluation.extract_features`, sharded over the mesh)."""
        ev = self.settings
        banks = []
        for records in (self._train, self._test):
            bank, _ = evaluation.extract_features(
                self.model,
                variables,
                records,
                np.arange(len(records)),
                mesh=self.mesh,
                crop_size=self.config.augment.crop_size,
                batch_size=ev.batch_size,
                dtype="float32",  # small banks; float16 could overflow mid-training
            )
            banks.append(bank)
        return banks[0], banks[1]

    def view_embeddings(self, variables: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Backbone features (N, 2, F) and projections (N, 2, D) of two views of every test
        image (`mvcl.evaluation.view_embeddings`)."""
        return evaluation.view_embeddings(
            self.model,
            variables,
            self.test_images,
            num_views=GEOMETRY_VIEWS,
            augment=self._augment,
            mesh=self.mesh,
        )

    def evaluate(self, variables: Mapping[str, Any]) -> dict[str, float]:
        """The metrics of the module docstring (keys `KEYS`) of the encoder ``variables``
        (``{"params", "batch_stats"}``), the same on every process; all NaN if the encoder's
        features are not finite (a diverged run)."""
        ev = self.settings
        try:
            train_bank, test_bank = self.features(variables)
        except ValueError as e:  # a diverged encoder: NaN, for the loop's divergence guard
            if "non-finite" not in str(e):
                raise
            return {key: math.nan for key in KEYS}
        results = {}
        for part in ("backbone", "projector"):
            results[f"{PREFIX}knn_{part}"] = evaluation.knn_accuracy(
                train_bank[part],
                self.train_labels,
                test_bank[part],
                self.test_labels,
                num_classes=self.num_classes,
                k=ev.knn_k,
                temperature=ev.knn_temperature,
                chunk_size=ev.knn_chunk_size,
                mesh=self.mesh,
            )
        h, z = self.view_embeddings(variables)
        self.proj_dim = z.shape[-1]
        results.update(geometry(h, z))
        return {key: results[key] for key in KEYS}

    def collapse_warning(self, results: Mapping[str, float]) -> str | None:
        """`collapse_warning` with this run's config and projection dimension (None before an
        evaluation with finite features has shown the dimension)."""
        if self.proj_dim is None:
            return None
        return collapse_warning(results, self.config, proj_dim=self.proj_dim)


@jax.jit
def _geometry(h, z):
    out = {}
    for part, x in (("backbone", h), ("projector", z)):
        out[f"{PREFIX}effective_rank_{part}"] = metrics.effective_rank(x)
        out[f"{PREFIX}alignment_{part}"] = metrics.alignment(x)
        out[f"{PREFIX}uniformity_{part}"] = metrics.uniformity(x)
    rows = z.reshape(-1, z.shape[-1])
    std = numerics.normalize(rows.astype(numerics.compute_dtype()), 1e-12).std(axis=0)
    out[f"{PREFIX}projector_std_min"] = std.min()
    out[f"{PREFIX}projector_std_mean"] = std.mean()
    return out


def geometry(h: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """The geometry metrics of `OnlineEvaluator.evaluate` of backbone features ``h`` (N, V, F)
    and projections ``z`` (N, V, D), V >= 2, on this process's default device."""
    return {k: float(v) for k, v in jax.device_get(_geometry(h, z)).items()}


def collapse_warning(
    results: Mapping[str, float], config: config_dict.ConfigDict, *, proj_dim: int
) -> str | None:
    """One line if the online evaluation's projections look collapsed, else None.

    Fires (when ``config.eval.collapse_check``) if

    * ``online/effective_rank_projector`` < ``config.eval.collapse_rank_fraction`` x D
      (dimensional collapse: the projections span a few directions), or
    * ``online/projector_std_mean`` < ``config.eval.collapse_std`` / sqrt(D) (complete collapse:
      every input maps near one point; SimSiam's criterion, Chen & He 2021: uniform unit
      vectors give 1/sqrt(D), a collapsed encoder 0),

    with D = ``proj_dim``, the projections' dimension. A threshold of 0 turns its test off.
    """
    ev = evaluation.eval_settings(config)
    if not ev["collapse_check"]:
        return None
    reasons = []
    rank = results[f"{PREFIX}effective_rank_projector"]
    rank_floor = ev["collapse_rank_fraction"] * proj_dim
    if rank < rank_floor:
        reasons.append(
            f"effective rank of the projections {rank:.3g} < {rank_floor:.3g} "
            f"(config.eval.collapse_rank_fraction = {ev['collapse_rank_fraction']:g} of D = "
            f"{proj_dim})"
        )
    std = results[f"{PREFIX}projector_std_mean"]
    std_floor = ev["collapse_std"] / math.sqrt(proj_dim)
    if std < std_floor:
        reasons.append(
            f"mean per-dimension std of the normalised projections {std:.3g} < {std_floor:.3g} "
            f"(config.eval.collapse_std = {ev['collapse_std']:g} of 1/sqrt(D))"
        )
    if not reasons:
        return None
    return "Collapse alarm: " + "; ".join(reasons) + "."


def summary_line(results: Mapping[str, float], names: Sequence[str] = ()) -> str:
    """A short progress-line text of the results: kNN accuracies (%) and effective ranks."""
    names = names or (
        "knn_backbone",
        "knn_projector",
        "effective_rank_backbone",
        "effective_rank_projector",
    )
    parts = []
    for name in names:
        value = results[PREFIX + name]
        text = f"{100 * value:.1f}%" if name.startswith("knn") else f"{value:.1f}"
        parts.append(f"{name.replace('effective_rank', 'rank')}={text}")
    return " ".join(parts)
