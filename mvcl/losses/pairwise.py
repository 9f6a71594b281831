"""Deprecated alias of :mod:`mvcl.losses.two_view` (the two-view losses), kept for one release.

"Pairwise" names PWE aggregation (:func:`mvcl.losses.pwe`) everywhere else, so the two-view
losses moved to :mod:`mvcl.losses.two_view`; importing this module warns.
"""

from mvcl._deprecation import warn_moved
from mvcl.losses.two_view import (
    KERNELS,
    dcl,
    dcl_rows,
    dcl_terms,
    dhel,
    infonce,
    infonce_terms,
    kcl,
)

warn_moved("mvcl.losses.pairwise", "mvcl.losses.two_view", stacklevel=2)

__all__ = ["KERNELS", "dcl", "dcl_rows", "dcl_terms", "dhel", "infonce", "infonce_terms", "kcl"]
