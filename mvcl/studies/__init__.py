"""Scaling studies: grids of pretraining runs (sweeps), their result tables and plots.

    from mvcl import studies
    sweep = studies.grid.load_config_file("sweeps/digits_claims")
    run = studies.run_sweep(sweep, "workdirs/sweeps/digits_claims")   # resumable
    studies.write_outputs(sweep, run.results, "workdirs/sweeps/digits_claims", "out/")

The command-line entry point is ``mvcl-sweep`` (`mvcl.sweep`). Imported on demand (it pulls in
``mvcl.train``).
"""

from types import ModuleType

from mvcl import _deprecation
from mvcl.studies import grid, loss_cost, plots, report, runner
from mvcl.studies.grid import Cell, cell_config, cells
from mvcl.studies.outputs import write_outputs
from mvcl.studies.runner import SweepRun, run_sweep

__all__ = [
    "Cell",
    "SweepRun",
    "cell_config",
    "cells",
    "grid",
    "loss_cost",
    "plots",
    "report",
    "run_sweep",
    "runner",
    "write_outputs",
]


def __getattr__(name: str) -> ModuleType:
    # mvcl.studies.kernel_cost, the former loss_cost: importing it warns.
    if name == "kernel_cost":
        return _deprecation.import_moved(f"{__name__}.kernel_cost")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
