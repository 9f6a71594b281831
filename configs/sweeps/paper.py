"""Reproduction sweeps of the paper's tables, one per data set, in the paper's setup, unchanged.

The base pretraining config is the data set's own (``configs/<data set>.py``: ResNet-18 on
CIFAR, ResNet-50 on ImageNet, batch 256; τ = 0.1 on ImageNet-1K). Each sweep runs the distinct
losses at V = 2 and every multi-view loss at V = 4, 11 runs (see
``configs/sweeps/common.py``, ``paper_sweep``)::

    mvcl-sweep --config=sweeps/paper:dataset=cifar10 \
        --workdir=/mnt/shared/sweeps/cifar10 --outdir=experiments/results/cifar10

``sweeps/cifar10``, ``sweeps/cifar100``, ``sweeps/imagenet100`` and ``sweeps/imagenet1k`` name
the same sweeps. Arguments: ``dataset`` (a key of :data:`PUBLISHED`, default cifar10) and those
of every sweep (``fake``, ``seeds``).
"""

from __future__ import annotations

import dataclasses

from ml_collections import config_dict

from mvcl.configs import common
from mvcl.configs.sweeps import common as sweeps


@dataclasses.dataclass(frozen=True)
class Published:
    """The paper's training budget and linear-probe accuracies (%) at V = 2 and V = 4."""

    epochs: int
    mv_dhel: tuple[float, float]
    best_baseline: tuple[float, float]


PUBLISHED: dict[str, Published] = {
    "cifar10": Published(epochs=200, mv_dhel=(87.4, 89.5), best_baseline=(86.0, 88.7)),
    "cifar100": Published(epochs=200, mv_dhel=(59.4, 62.7), best_baseline=(58.1, 61.1)),
    "imagenet100": Published(epochs=200, mv_dhel=(73.3, 77.2), best_baseline=(72.2, 74.4)),
    "imagenet1k": Published(epochs=100, mv_dhel=(61.2, 62.6), best_baseline=(60.0, 62.4)),
}
"""The published targets, by data set (the name of its pretraining config)."""


def paper_config(dataset: str) -> config_dict.ConfigDict:
    """The reproduction sweep of ``dataset`` (before the ``fake``/``seeds`` arguments)."""
    if dataset not in PUBLISHED:
        raise ValueError(
            f"dataset must be one of {', '.join(PUBLISHED)} (the data sets with published "
            f"targets), got {dataset!r}; e.g. --config=sweeps/paper:dataset=cifar100"
        )
    published = PUBLISHED[dataset]
    return sweeps.paper_sweep(
        dataset,
        dataset,
        epochs=published.epochs,
        mv_dhel=published.mv_dhel,
        best_baseline=published.best_baseline,
    )


def sweep_for(dataset: str, arg: str | None = None) -> config_dict.ConfigDict:
    """The sweep of ``dataset`` with the arguments every sweep understands (``fake``, ``seeds``):
    what ``sweeps/<data set>`` gives."""
    args = common.parse_arg(arg, **sweeps.sweep_args())
    return sweeps.apply_args(paper_config(dataset), args)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **sweeps.sweep_args(dataset="cifar10"))
    return sweeps.apply_args(paper_config(args.dataset), args)
