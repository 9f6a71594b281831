"""Names that moved: the old name keeps working until `REMOVED_IN`, with a warning.

Every deprecated name, module, command path and config path of mvcl warns with `message`
("<old> is deprecated and will be removed in 0.2.0: use <new>"): a DeprecationWarning for names
used in code, a FutureWarning (shown to the user of a command) for command lines.
``tests/test_deprecated_names.py`` fails once ``mvcl.__version__`` reaches `REMOVED_IN` while
any of them is left.

Moved modules have no file at their old path (so that the move is a plain rename): a finder on
``sys.meta_path`` answers for the old names, and importing one gives a module holding the new
module's names and forwarding any other attribute to it, after warning.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

REMOVED_IN = "0.2.0"
"""The release without the deprecated names: every one of them goes before it is made."""

MOVED_MODULES = {
    "mvcl.kernels": "mvcl.backends",
    "mvcl.kernels.dense": "mvcl.backends.dense",
    "mvcl.kernels.precision": "mvcl.backends.precision",
    "mvcl.kernels.reductions": "mvcl.backends.reductions",
    "mvcl.kernels.streaming": "mvcl.backends.streaming",
    "mvcl.losses.pairwise": "mvcl.losses.two_view",
    "mvcl.models.conv": "mvcl.models.loop_conv",
    "mvcl.studies.kernel_cost": "mvcl.studies.loss_cost",
    "mvcl.train.evaluate": "mvcl.evaluation",
    "mvcl.train.multimodal": "mvcl.evaluation.multimodal",
}
"""Old module name -> the module that replaced it."""


def message(old: str, new: str) -> str:
    """The one message of every deprecation: ``old`` goes in `REMOVED_IN`, ``new`` replaces it."""
    return f"{old} is deprecated and will be removed in {REMOVED_IN}: use {new}"


def warn_moved(
    old: str, new: str, *, stacklevel: int = 3, category: type[Warning] = DeprecationWarning
) -> None:
    """Emits the warning for ``old`` (`message`), naming ``new`` that replaces it."""
    warnings.warn(message(old, new), category, stacklevel=stacklevel)


def warn_old_command(old: str, new: str) -> None:
    """A FutureWarning (shown by default) for a command line of earlier releases, e.g.
    ``python experiments/pretrain.py``, naming the command that replaces it."""
    warn_moved(old, new, stacklevel=3, category=FutureWarning)


def import_moved(old: str) -> types.ModuleType:
    """The moved module ``old`` for its package's ``__getattr__`` (``mvcl.kernels``), with the
    warning pointing at the caller's line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(old)
    warn_moved(old, MOVED_MODULES[old], stacklevel=4)
    return module


def renamed(fn: F, old: str) -> F:
    """``fn`` under its former name ``old``: the same call, with a DeprecationWarning."""
    new = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warn_moved(old, new)
        return fn(*args, **kwargs)

    wrapper.__doc__ = f"Deprecated alias of :func:`{new}` (warns).\n\n{fn.__doc__ or ''}"
    return wrapper  # type: ignore[return-value]


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the old names of :data:`MOVED_MODULES`."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        is_package = any(other.startswith(fullname + ".") for other in MOVED_MODULES)
        return importlib.util.spec_from_loader(fullname, self, is_package=is_package)

    def exec_module(self, module: types.ModuleType) -> None:
        new = MOVED_MODULES[module.__name__]
        warn_moved(module.__name__, new)  # importlib's frames are skipped: points at the import
        target = importlib.import_module(new)
        names = getattr(target, "__all__", None) or [n for n in vars(target) if n[0] != "_"]
        for name in names:
            setattr(module, name, getattr(target, name))
        module.__all__ = list(names)
        module.__doc__ = f"Deprecated alias of :mod:`{new}`."
        module.__getattr__ = functools.partial(getattr, target)  # everything else, forwarded


def install() -> None:
    """Puts the finder of the moved modules first on ``sys.meta_path`` (once): it answers for the
    old names only, before any other finder could find a stale copy of them."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
