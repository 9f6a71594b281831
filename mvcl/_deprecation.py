"""Warnings for names that moved: the old name keeps working for one release, then goes."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def warn_moved(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Emits the DeprecationWarning for ``old``, naming ``new`` that replaces it."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release: use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed(fn: F, old: str) -> F:
    """``fn`` under its former name ``old``: the same call, with a DeprecationWarning."""
    new = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warn_moved(old, new)
        return fn(*args, **kwargs)

    wrapper.__doc__ = f"Deprecated alias of :func:`{new}` (warns).\n\n{fn.__doc__ or ''}"
    return wrapper  # type: ignore[return-value]
