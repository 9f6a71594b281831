"""The public loss and backend API is typed: every parameter and return of the functions of
mvcl.losses, mvcl.backends, mvcl.parallel and mvcl.metrics is annotated, the ``Literal`` choices
are the values the code accepts, and array arguments take any array-like (NumPy included)."""

import inspect
import typing

import numpy as np
import pytest

from mvcl import backends, losses, metrics, parallel
from mvcl.backends import dense, precision, reductions, streaming
from mvcl.losses import baselines, multiview, two_view

PUBLIC = [
    *(losses.get(name) for name in losses.NAMES),
    multiview.dhel_terms,
    two_view.infonce_terms,
    two_view.dcl_terms,
    two_view.dcl_rows,
    backends.get,
    backends.self_rows,
    backends.BuiltinBackend.__call__,
    backends.keep,
    backends.sum_of,
    dense.dense,
    dense.dense_self,
    dense.gather,
    dense.gather_self,
    streaming.streaming,
    streaming.streaming_self,
    precision.resolve,
    parallel.make_mesh,
    parallel.shard_loss,
    metrics.alignment,
    metrics.uniformity,
    metrics.effective_rank,
    metrics.covariance_rank,
    metrics.wasserstein_uniformity,
    metrics.all_metrics,
]


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__qualname__)
def test_every_public_parameter_and_return_is_annotated(fn):
    signature = inspect.signature(fn)
    missing = [
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.annotation is inspect.Parameter.empty
    ]
    assert not missing, f"{fn.__qualname__}: unannotated parameters {missing}"
    assert signature.return_annotation is not inspect.Signature.empty


@pytest.mark.parametrize(
    "literal, accepted",
    [
        (reductions.Mask, reductions.MASKS),
        (backends.BackendName, backends.NAMES),
        (precision.PrecisionName, precision.CHOICES),
        (multiview.Negatives, multiview.NEGATIVES),
        (baselines.PairLoss, tuple(baselines.PAIR_LOSSES)),
        (two_view.KernelName, tuple(two_view.KERNELS)),
    ],
)
def test_literal_choices_are_the_accepted_values(literal, accepted):
    assert typing.get_args(literal) == tuple(accepted)


def test_losses_and_metrics_take_numpy_arrays():
    z = np.random.default_rng(0).normal(size=(6, 3, 4))
    assert np.isclose(
        float(losses.mv_dhel(z, temperature=0.5)),
        float(losses.mv_dhel(np.asarray(z, np.float32), temperature=0.5, backend="blockwise")),
        rtol=1e-6,
    )
    assert np.isfinite(float(metrics.effective_rank(z)))


def _parameters(fn, skip: int = 0) -> list[tuple[str, object, object]]:
    """(name, kind, default) of ``fn``'s parameters, without the first ``skip`` ones and without
    keyword-only options of its own that have defaults (``tile=``)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return [(p.name, p.kind, p.default) for p in params if p.name != "tile"]


@pytest.mark.parametrize(
    "fn, protocol",
    [
        (dense.dense, backends.Backend),
        (dense.gather, backends.Backend),
        (streaming.streaming, backends.Backend),
        (dense.dense_self, backends.SelfRows),
        (dense.gather_self, backends.SelfRows),
        (streaming.streaming_self, backends.SelfRows),
    ],
    ids=lambda f: getattr(f, "__name__", ""),
)
def test_the_builtin_backends_have_the_protocols_signature(fn, protocol):
    assert _parameters(fn) == _parameters(protocol.__call__, skip=1)


def test_a_builtin_backend_forwards_the_protocols_arguments():
    seen = {}

    def rows(q, k, *, mask, reduction, axis_name=None, precision=None):
        seen.update(mask=mask, reduction=reduction, axis_name=axis_name, precision=precision)
        return q

    backend = backends.BuiltinBackend(rows)
    backend(np.ones((1, 2, 2, 3)), np.ones((1, 2, 2, 3)), mask="self", reduction=backends.LSE)
    assert seen == {"mask": "self", "reduction": backends.LSE, "axis_name": None, "precision": None}
