"""Deprecated alias of :mod:`mvcl.backends` (the row-reduction backends), kept for one release.

``import mvcl.kernels`` (and ``mvcl.kernels.dense``, ``.precision``, ``.reductions``,
``.streaming``) still works and gives the objects of :mod:`mvcl.backends`, with a
DeprecationWarning; write ``mvcl.backends`` instead.
"""

import sys

from mvcl import backends as _backends
from mvcl._deprecation import warn_moved
from mvcl.backends import *  # noqa: F403 (the whole public API, re-exported)
from mvcl.backends import BuiltinBackend, dense, reductions, streaming

warn_moved("mvcl.kernels", "mvcl.backends", stacklevel=2)

for _name in ("dense", "precision", "reductions", "streaming"):
    sys.modules[f"{__name__}.{_name}"] = getattr(_backends, _name)

Kernel = BuiltinBackend

__all__ = [*_backends.__all__, "Kernel", "dense", "reductions", "streaming"]
