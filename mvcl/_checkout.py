"""``mvcl.configs`` in a source checkout that is used without installing it.

The configs live in the checkout's top-level ``configs/`` folder, which the installed package
holds as ``mvcl.configs`` (``package-dir`` in ``pyproject.toml``; an editable install maps it the
same way). A checkout put on ``PYTHONPATH`` as it is has no ``mvcl/configs/``: a finder on
``sys.meta_path`` then answers ``mvcl.configs`` with the checkout's ``configs/``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent
_CONFIGS = _PACKAGE.parent / "configs"


def configs_dir() -> Path | None:
    """The checkout's ``configs/`` when ``mvcl`` is imported from a checkout without
    ``mvcl/configs/`` (not installed); None for an installed package."""
    if (_PACKAGE / "configs").exists():
        return None
    checkout = (_PACKAGE.parent / "pyproject.toml").is_file()
    return _CONFIGS if checkout and (_CONFIGS / "__init__.py").is_file() else None


class _ConfigsFinder(importlib.abc.MetaPathFinder):
    """Finds ``mvcl.configs`` (only that name) in the checkout's ``configs/``; its subpackages
    are then found below it as usual."""

    def __init__(self, directory: Path):
        self.directory = directory

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "mvcl.configs":
            return None
        return importlib.util.spec_from_file_location(
            fullname,
            self.directory / "__init__.py",
            submodule_search_locations=[str(self.directory)],
        )


def install() -> None:
    """Puts the finder first on ``sys.meta_path`` (once), in a checkout used as is only."""
    directory = configs_dir()
    if directory is None or any(isinstance(f, _ConfigsFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _ConfigsFinder(directory))
