"""Losses by name, for configs: ``mvcl.losses.get("mv_dhel")``."""

from __future__ import annotations

from typing import Callable

from mvcl.losses import baselines, multiview, pairwise

_LOSSES: dict[str, Callable] = {
    "mv_infonce": multiview.mv_infonce,
    "mv_dhel": multiview.mv_dhel,
    "pwe": baselines.pwe,
    "avg": baselines.avg,
    "pvc": baselines.pvc,
    "multipos_infonce": baselines.multipos_infonce,
    "infonce": pairwise.infonce,
    "dcl": pairwise.dcl,
    "dhel": pairwise.dhel,
    "kcl": pairwise.kcl,
}
NAMES = tuple(_LOSSES)
TWO_VIEW = ("infonce", "dcl", "dhel", "kcl")
"""Losses that take exactly V = 2 views."""
TEMPERATURE_FREE = ("kcl",)
"""Losses without a ``temperature`` argument."""


def get(name: str) -> Callable:
    """The loss function called ``name`` (one of :data:`NAMES`)."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(NAMES)}")
    return _LOSSES[name]
