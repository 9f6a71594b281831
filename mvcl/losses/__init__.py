"""Multi-view contrastive losses as pure, jittable JAX functions.

Every loss takes ``z`` of shape (N, V, D), instance-major, normalises it itself, and returns the
scalar mean over the global batch. ``axis_name`` makes the negatives the global batch inside
``jax.shard_map``/``jax.pmap``; ``backend`` picks how the energies are computed
(:mod:`mvcl.backends`); ``precision`` the matmul precision (:mod:`mvcl.backends.precision`).
The exact maths is in docs/losses.md and in each docstring. Each loss has one record,
:class:`LossSpec` (``mvcl.losses.spec("mv_dhel")``), in :mod:`mvcl.losses.registry`.
"""

from types import ModuleType

from mvcl import _deprecation
from mvcl.losses._common import check_finite
from mvcl.losses.baselines import avg, multipos_infonce, pvc, pwe
from mvcl.losses.multiview import mv_dhel, mv_infonce
from mvcl.losses.registry import (
    MULTI_VIEW,
    NAMES,
    SPECS,
    TEMPERATURE_FREE,
    TWO_VIEW,
    get,
    spec,
)
from mvcl.losses.spec import Case, LossSpec
from mvcl.losses.two_view import KERNELS, dcl, dhel, infonce, kcl

__all__ = [
    "KERNELS",
    "MULTI_VIEW",
    "NAMES",
    "SPECS",
    "TEMPERATURE_FREE",
    "TWO_VIEW",
    "Case",
    "LossSpec",
    "avg",
    "check_finite",
    "dcl",
    "dhel",
    "get",
    "infonce",
    "kcl",
    "multipos_infonce",
    "mv_dhel",
    "mv_infonce",
    "pvc",
    "pwe",
    "spec",
]


def __getattr__(name: str) -> ModuleType:
    # mvcl.losses.pairwise, the former two_view: importing it warns.
    if name == "pairwise":
        return _deprecation.import_moved(f"{__name__}.pairwise")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
