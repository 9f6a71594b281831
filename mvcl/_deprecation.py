"""Names that moved: the old name keeps working until `REMOVED_IN`, with a warning.

Every deprecated name, module, command path and config path of mvcl warns with `message`
("<old> is deprecated and will be removed in 0.2.0: use <new>"): a DeprecationWarning for names
used in code, a FutureWarning (shown to the user of a command) for command lines.
``tests/test_deprecated_names.py`` fails once ``mvcl.__version__`` reaches `REMOVED_IN` while
any of them is left.

Moved modules have no file at their old path (so that the move is a plain rename): a finder on
``sys.meta_path`` answers for the old names, and importing one gives a module holding the new
module's names and forwarding any other attribute to it, after warning. A module whose names
went to several modules (`SPLIT_MODULES`) gives those names, each from where it is now.
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
    "mvcl.train.feed": "mvcl.train.inputs",
    "mvcl.train.malloc": "mvcl.train.cli",
    "mvcl.train.multimodal": "mvcl.evaluation.multimodal",
    "mvcl.train.optim": "mvcl.train.state",
    "mvcl.train.sources": "mvcl.train.inputs",
    "mvcl.train.step_timing": "mvcl.train.memory_plan",
    "mvcl.train.summary": "mvcl.train.workdir",
}
"""Old module name -> the module that replaced it."""

MOVED_SWEEP_FIELDS = {"kernel_cost": "loss_cost"}
"""Old field of a sweep config (``configs/sweeps/common.py``) -> the field that replaced it: set or
read in a config file, or overridden on the command line (``--config.kernel_cost.ns=...``), the
old name reaches the new field with a FutureWarning (`warn_moved_field`)."""

_TRAINER = {  # the names of the former single training module, mvcl.train.trainer
    "mvcl.train.config_checks": ("DTYPES", "LOSS_BACKENDS", "num_train_steps", "validate_config"),
    "mvcl.train.inputs": ("fake_source", "global_batch", "open_sources"),
    "mvcl.train.loop": ("train_and_evaluate",),
    "mvcl.train.state": ("TrainState", "build_model", "create_train_state"),
    "mvcl.train.step": ("AXIS", "make_loss_fn", "make_train_step"),
    "mvcl.train.workdir": (
        "CHECKPOINT_DIR",
        "CONFIG_FILE",
        "evaluate_variables",
        "evaluate_workdir",
        "load_config",
        "restore_variables",
    ),
}
SPLIT_MODULES = {
    "mvcl.train.processes": {
        "agree": "mvcl.parallel",
        "announce": "mvcl.parallel",
        "should_stop": "mvcl.train.signals",
        "stop_reason": "mvcl.train.signals",
    },
    "mvcl.train.trainer": {name: new for new, names in _TRAINER.items() for name in names},
}
"""Old module name -> {name: the module that holds it now}: modules whose names went to several."""


def replacement(old: str) -> str:
    """What replaces the moved module ``old``: its new module, or for one of `SPLIT_MODULES` the
    modules that hold its names now, e.g. ``"mvcl.parallel (agree, announce) and
    mvcl.train.signals (should_stop, stop_reason)"``."""
    if old in MOVED_MODULES:
        return MOVED_MODULES[old]
    modules: dict[str, list[str]] = {}
    for name, new in SPLIT_MODULES[old].items():
        modules.setdefault(new, []).append(name)
    parts = [f"{new} ({', '.join(names)})" for new, names in modules.items()]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


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


def warn_moved_field(old: str, new: str, *, skip: tuple[str, ...] = ()) -> None:
    """A FutureWarning (shown by default) for the config field ``old``, set or read in a config
    file or on the command line, naming the field ``new`` that replaces it. The warning points at
    the caller's first frame outside the files under the ``skip`` prefixes (the config class,
    ml_collections, absl): the config file's line, or the command's start for a command-line
    override (one warning however often the flag parser looks the field up)."""
    frame, stacklevel = sys._getframe(1), 3  # 1: warn_moved, 2: here, 3: our caller
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skip):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warn_moved(old, new, stacklevel=stacklevel, category=FutureWarning)


def is_moved(name: str) -> bool:
    """Whether ``name`` is the old name of a moved module (`MOVED_MODULES`, `SPLIT_MODULES`)."""
    return name in MOVED_MODULES or name in SPLIT_MODULES


def import_moved(old: str) -> types.ModuleType:
    """The moved module ``old`` for its package's ``__getattr__`` (``mvcl.kernels``), with the
    warning pointing at the caller's line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(old)
    warn_moved(old, replacement(old), stacklevel=4)
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
    """Finds and loads the old names of :data:`MOVED_MODULES` and :data:`SPLIT_MODULES`."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not is_moved(fullname):
            return None
        is_package = any(other.startswith(fullname + ".") for other in MOVED_MODULES)
        return importlib.util.spec_from_loader(fullname, self, is_package=is_package)

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        # importlib's frames are skipped: the warning points at the import
        warn_moved(old, replacement(old))
        if old in SPLIT_MODULES:
            self._exec_split(module)
            return
        new = MOVED_MODULES[old]
        target = importlib.import_module(new)
        names = getattr(target, "__all__", None) or [n for n in vars(target) if n[0] != "_"]
        for name in names:
            setattr(module, name, getattr(target, name))
        module.__all__ = list(names)
        module.__doc__ = f"Deprecated alias of :mod:`{new}`."
        module.__getattr__ = functools.partial(getattr, target)  # everything else, forwarded

    @staticmethod
    def _exec_split(module: types.ModuleType) -> None:
        old, moved = module.__name__, SPLIT_MODULES[module.__name__]
        for name, new in moved.items():
            setattr(module, name, getattr(importlib.import_module(new), name))
        module.__all__ = sorted(moved)
        module.__doc__ = f"Deprecated: its names are in {replacement(old)}."

        def missing(name: str) -> Any:
            modules = ", ".join(dict.fromkeys(moved.values()))
            raise AttributeError(f"{old}.{name} was removed: {old}'s names are in {modules}")

        module.__getattr__ = missing


def install() -> None:
    """Puts the finder of the moved modules first on ``sys.meta_path`` (once): it answers for the
    old names only, before any other finder could find a stale copy of them."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
