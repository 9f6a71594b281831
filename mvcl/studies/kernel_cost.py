"""Deprecated alias of :mod:`mvcl.studies.loss_cost` (a loss's time and memory), kept for one
release: "kernel" names KCL's kernels only. Importing this module warns."""

from mvcl._deprecation import warn_moved
from mvcl.studies.loss_cost import from_bench, time_loss, time_losses

warn_moved("mvcl.studies.kernel_cost", "mvcl.studies.loss_cost", stacklevel=2)

__all__ = ["from_bench", "time_loss", "time_losses"]
