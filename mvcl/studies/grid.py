"""Sweep grids: which runs a sweep config asks for, and the pretraining config of each.

A sweep config (``configs/sweeps/*.py``) names a base pretraining config and a grid::

    config.base = "digits"                 # a packaged config or a .py path (`mvcl.configs.path`)
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
import itertools
import os

from ml_collections import config_dict

from mvcl import configs


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


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> config_dict.ConfigDict:
    """``get_config(arg)`` of the config named ``path``: a packaged config (``"digits"``,
    ``"sweeps/digits_claims"``) or a ``.py`` file (see `mvcl.configs.path`)."""
    return configs.load(path, arg)


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
