"""Experiment configs shipped with mvcl, and how a config is named on the command line.

The files are the repository's top-level ``configs/`` folder, installed as the package
``mvcl.configs`` (``package-dir`` in ``pyproject.toml``): open one, copy it, change it. Each
pretraining config is a ``get_config(arg)`` file per data set (fields and arguments:
`mvcl.configs.common`); the sweeps are in `mvcl.configs.sweeps` (`mvcl.configs.sweeps.common`).
A config is named by its path below this package without ``.py``, optionally followed by
``:<arguments>``::

    mvcl-pretrain --config=digits
    mvcl-pretrain --config=digits:loss=mv_infonce,views=2
    mvcl-sweep --config=sweeps/digits_claims:fake=True

A path to a config file of one's own works too (``--config=/path/to/my_config.py:arg``; the file
may ``from mvcl.configs import common``), and so does the path of a shipped config in the
repository (``--config=configs/digits.py``, run from the repository's root). The same path from a
directory without that file (as the documentation of earlier releases wrote it) still names the
shipped config, with a warning naming the short form.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvcl import _deprecation

if TYPE_CHECKING:
    from absl import flags
    from ml_collections import config_dict

DIR = Path(__file__).resolve().parent
"""The directory of the packaged config files (``mvcl/configs/`` of an installed wheel, the
repository's ``configs/`` in a checkout)."""

_SKIP = ("__init__", "common")
# "configs/digits.py", "./configs/sweeps/cifar10.py", "/old/checkout/configs/digits.py", ...
_OLD_PATH = re.compile(r"(?:.*/)?configs/(?P<name>[\w/]+)\.py")


def names() -> list[str]:
    """The packaged configs, e.g. ``["cifar10", ..., "digits", ..., "sweeps/digits_claims"]``."""
    return sorted(
        p.relative_to(DIR).with_suffix("").as_posix()
        for p in DIR.rglob("*.py")
        if p.stem not in _SKIP
    )


def path(name: str | os.PathLike) -> Path:
    """The config file named ``name``: a packaged config (``"digits"``, ``"sweeps/digits_claims"``)
    or the path of an existing ``.py`` file.

    Raises:
      ValueError: ``name`` is neither, with the list of packaged configs.
    """
    name = os.fspath(name)
    own = Path(name).expanduser()
    if own.suffix == ".py" and own.is_file():
        return own.resolve()
    short = name.removesuffix(".py")
    old = _OLD_PATH.fullmatch(name)
    if old and (DIR / f"{old['name']}.py").is_file():
        short = old["name"]
        _deprecation.warn_moved(
            f"the config path {name!r} (no such file here)",
            f"its name, --config={short}",
            stacklevel=3,
            category=FutureWarning,
        )
    packaged = DIR / f"{short}.py"
    if short and short not in _SKIP and packaged.is_file():
        return packaged
    raise ValueError(
        f"config {name!r} is neither a packaged config nor an existing .py file; packaged "
        f"configs: {', '.join(names())} (optionally with ':<arguments>', e.g. 'digits:views=2')"
    )


def resolve(spec: str) -> str:
    """``"<name>[:<arguments>]"`` with the name replaced by the file's absolute path (`path`)."""
    name, sep, arg = spec.partition(":")
    return f"{path(name)}{sep}{arg}"


def load(spec: str | os.PathLike, arg: str | None = None) -> config_dict.ConfigDict:
    """``get_config(arg)`` of the config file named ``spec`` (see `path`).

    ``spec`` may carry the arguments itself (``"digits:views=2"``) when ``arg`` is None.
    """
    spec = os.fspath(spec)
    if arg is None:
        spec, _, arg = spec.partition(":")
    file = path(spec)
    stem = file.relative_to(DIR).with_suffix("").as_posix() if file.is_relative_to(DIR) else None
    if stem is not None:  # a packaged config: import it as what it is, mvcl.configs.<name>
        module = importlib.import_module(f"{__name__}.{stem.replace('/', '.')}")
    else:
        module_spec = importlib.util.spec_from_file_location(f"_mvcl_config_{file.stem}", file)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


class _NamedConfigParser:
    """An absl flag parser that resolves a config name (`resolve`), then loads the file with
    ml_collections' own parser (which also calls ``get_config`` with the ``:<arguments>``).

    Everything else absl asks of a parser (``syntactic_help`` for ``--helpfull``, the XML of
    ``--helpxml``, ...) is the inner parser's."""

    def __init__(self, inner: Any):
        self._inner = inner

    def parse(self, argument: str) -> Any:
        return self._inner.parse(resolve(argument))

    def flag_type(self) -> str:
        return self._inner.flag_type()

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)


def define_flag(
    name: str,
    default: str | None,
    help_string: str,
    flag_values: flags.FlagValues | None = None,
) -> flags.FlagHolder:
    """``ml_collections.config_flags.DEFINE_config_file`` that also takes a packaged config's name
    (``--config=digits:views=2``; see the module docstring). ``--config.<field>=<value>``
    overrides work as usual."""
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    holder = config_flags.DEFINE_config_file(name, default, help_string, flag_values)
    flag = flag_values[name]
    flag.parser = _NamedConfigParser(flag.parser)
    return holder
