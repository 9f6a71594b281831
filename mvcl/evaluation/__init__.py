"""Evaluation of a pretrained encoder: linear probe, weighted kNN and embedding geometry.

    from mvcl import evaluation
    results = evaluation.evaluate(config, model, variables)   # {"backbone/knn": ..., ...}
    print(evaluation.format_report(results, knn_k=config.eval.knn_k))

Everything here reads a frozen encoder (BatchNorm running statistics, ``train=False``), and
`evaluate` streams: no split is ever held as images. One module per step:

* **features** (`mvcl.evaluation.features`: `extract_features`, `embed`, `pixels`): the centre
  views of a split streamed through the encoder over a mesh of every device of every process,
  kept on the host as a float16 bank of backbone features (M, F) and projections (M, D)
  (``config.eval.feature_dtype``); the train split may be cut to a fixed random subset of
  ``config.eval.train_examples`` images (`train_subset`). The **raw-pixel baseline** keeps the
  flattened centre views the same way.
* **linear probes** (`mvcl.evaluation.probes`): multinomial logistic regression on the
  standardised features, by minibatch Adam over the mesh (`minibatch_probe_accuracy`) or by
  full-batch L-BFGS (`linear_probe_accuracy`, the reference for small feature sets).
* **weighted kNN** (`mvcl.evaluation.knn`: `knn_accuracy`): cosine similarity, the k nearest
  train features vote with weight ``exp(similarity / T)``; the train bank streams past the test
  features in chunks.
* **geometry** (`mvcl.evaluation.geometry`: `view_geometry`, `view_embeddings`):
  ``mvcl.metrics.all_metrics`` of backbone features and projections of V random views of the
  first ``config.eval.geometry_examples`` test images.
* **the report** (`mvcl.evaluation.report`: `evaluate`, `format_report`): all of the above from a
  config and the encoder's variables; `eval_settings` fills the ``config.eval`` fields an older
  saved config lacks (`EVAL_DEFAULTS`).
* **per-view models** (`mvcl.evaluation.multimodal`): per-modality probes and kNN and top-1
  cross-modal retrieval for a `mvcl.models.PerViewModel`.

The jitted encoder passes take the variables as arguments and are compiled once per model, mesh
and shape, so repeated evaluations (the online evaluation during training,
`mvcl.train.online_eval`, which uses these functions) do not compile again. A training run
(`mvcl.train.train_and_evaluate`) and ``mvcl-evaluate`` (`mvcl.train.evaluate_workdir`) call
`evaluate`, or `mvcl.evaluation.multimodal.evaluate` for a per-view model, after the last step.

This package imports nothing of `mvcl.train` (which imports it).
"""

from mvcl.evaluation import features, geometry, knn, multimodal, probes, report
from mvcl.evaluation._sharding import AXIS
from mvcl.evaluation.features import FEATURE_DTYPES, Source, embed, extract_features, pixels
from mvcl.evaluation.geometry import view_embeddings, view_geometry
from mvcl.evaluation.knn import knn_accuracy
from mvcl.evaluation.probes import linear_probe_accuracy, minibatch_probe_accuracy
from mvcl.evaluation.report import (
    EVAL_DEFAULTS,
    FEATURE_SETS,
    eval_settings,
    evaluate,
    format_report,
    train_subset,
)

__all__ = [
    "AXIS",
    "EVAL_DEFAULTS",
    "FEATURE_DTYPES",
    "FEATURE_SETS",
    "Source",
    "embed",
    "eval_settings",
    "evaluate",
    "extract_features",
    "features",
    "format_report",
    "geometry",
    "knn",
    "knn_accuracy",
    "linear_probe_accuracy",
    "minibatch_probe_accuracy",
    "multimodal",
    "pixels",
    "probes",
    "report",
    "train_subset",
    "view_embeddings",
    "view_geometry",
]
