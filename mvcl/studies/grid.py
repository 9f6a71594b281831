"""Sweep grids: which runs a sweep config asks for, and the pretraining config of each.

A sweep config (``configs/sweeps/*.py``) names a base pretraining config file and a grid::

    config.base = "configs/digits.py"      # relative to the repository root (or absolute)
    config.base_arg = ""                   # extra arguments of the base file, e.g. "fake=True"
    config.grid.main = ConfigDict(losses=("mv_dhel", "pwe"), views=(2, 4),
                                  batch_sizes=(256,), seeds=(0,))
    config.overrides = ConfigDict({"num_epochs": 20})  # nested fields set in every cell

Each entry of ``config.grid`` is a block: the product of its losses x views x batch sizes x seeds.
The sweep's cells are the union of its blocks in the order of the block names (ConfigDict keeps
fields sorted), a cell in two blocks running once; so a grid need not be a full product (e.g.
two-view losses at V = 2 only).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
from pathlib import Path

from ml_collections import config_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout holding ``configs/``: config paths in sweep configs are relative to it."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a sweep: a loss, a number of views, a batch size and a seed."""

    loss: str
    views: int
    batch_size: int
    seed: int

    @property
    def name(self) -> str:
        """A directory-safe id, e.g. ``mv_dhel_v4_b256_s0``."""
        return f"{self.loss}_v{self.views}_b{self.batch_size}_s{self.seed}"


def cells(sweep: config_dict.ConfigDict) -> list[Cell]:
    """The cells of every block of ``sweep.grid``, in order, without repeats."""
    out: dict[Cell, None] = {}
    for block_name, block in sweep.grid.items():
        for field in ("losses", "views", "batch_sizes", "seeds"):
            if not block[field]:
                raise ValueError(f"config.grid.{block_name}.{field} is empty")
        for loss, views, batch_size, seed in itertools.product(
            block.losses, block.views, block.batch_sizes, block.seeds
        ):
            out[Cell(loss, int(views), int(batch_size), int(seed))] = None
    return list(out)


def resolve(path: str | os.PathLike) -> Path:
    """``path`` if absolute, else relative to the repository root (`REPO_ROOT`)."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> config_dict.ConfigDict:
    """``get_config(arg)`` of the config file at ``path`` (see `resolve`).

    The file may import ``configs.common``: the repository root must be importable (the entry
    points put it on ``sys.path``).
    """
    path = resolve(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_mvcl_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def cell_config(sweep: config_dict.ConfigDict, cell: Cell) -> config_dict.ConfigDict:
    """The pretraining config of ``cell``: the base file with the cell's loss and views, then
    ``sweep.overrides``, then the cell's batch size and seed."""
    arg = ",".join(filter(None, [f"loss={cell.loss}", f"views={cell.views}", sweep.base_arg]))
    config = load_config_file(sweep.base, arg)
    config.update(sweep.overrides)
    config.batch_size = cell.batch_size
    config.seed = cell.seed
    config.name = f"{sweep.name}_{cell.name}"
    return config
