"""Losses by name, for configs: ``mvcl.losses.get("mv_dhel")``."""

from __future__ import annotations

from typing import Callable

from mvcl.losses import baselines, multiview, two_view

_LOSSES: dict[str, Callable] = {
    "mv_infonce": multiview.mv_infonce,
    "mv_dhel": multiview.mv_dhel,
    "pwe": baselines.pwe,
    "avg": baselines.avg,
    "pvc": baselines.pvc,
    "multipos_infonce": baselines.multipos_infonce,
    "infonce": two_view.infonce,
    "dcl": two_view.dcl,
    "dhel": two_view.dhel,
    "kcl": two_view.kcl,
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
