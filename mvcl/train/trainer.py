"""Deprecated: the names of the former single training module (removed in 0.2.0).

Importing it warns; import each name from the module that defines it instead:

* `mvcl.train.config_checks`: `validate_config`, `num_train_steps`, ``LOSS_BACKENDS``, ``DTYPES``;
* `mvcl.train.sources`: `fake_source`, `open_sources`, `global_batch`;
* `mvcl.train.state`: `TrainState`, `build_model`, `create_train_state`;
* `mvcl.train.step`: `make_loss_fn`, `make_train_step`, ``AXIS``;
* `mvcl.train.loop`: `train_and_evaluate`;
* `mvcl.train.workdir`: `load_config`, `restore_variables`, `evaluate_workdir`,
  `evaluate_variables`, ``CONFIG_FILE``, ``CHECKPOINT_DIR``.

The names are the same objects as there. Patching one here does not reach the code that uses it:
patch it in the module that defines it (for example ``mvcl.train.step.make_loss_fn``). The
private helpers it once re-exported (``_latest_step_on_disk``, ``_mean_metrics``, ...) are gone.
"""

from __future__ import annotations

from mvcl._deprecation import warn_moved
from mvcl.train.config_checks import DTYPES, LOSS_BACKENDS, num_train_steps, validate_config
from mvcl.train.loop import train_and_evaluate
from mvcl.train.sources import fake_source, global_batch, open_sources
from mvcl.train.state import TrainState, build_model, create_train_state
from mvcl.train.step import AXIS, make_loss_fn, make_train_step
from mvcl.train.workdir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    evaluate_variables,
    evaluate_workdir,
    load_config,
    restore_variables,
)

__all__ = [
    "AXIS",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "DTYPES",
    "LOSS_BACKENDS",
    "TrainState",
    "build_model",
    "create_train_state",
    "evaluate_variables",
    "evaluate_workdir",
    "fake_source",
    "global_batch",
    "load_config",
    "make_loss_fn",
    "make_train_step",
    "num_train_steps",
    "open_sources",
    "restore_variables",
    "train_and_evaluate",
    "validate_config",
]

# The private helpers it once re-exported: asking for one says where it is now.
_GONE = {
    "_validate_multicrop": "mvcl.train.config_checks._validate_multicrop",
    "_require": "mvcl.train.config_checks.require",
    "_latest_step_on_disk": "mvcl.train.loop._latest_step_on_disk",
    "_mean_metrics": "mvcl.train.loop._mean_metrics",
    "_record_session": "mvcl.train.loop._record_session",
    "_train_and_evaluate": "mvcl.train.loop._train_and_evaluate",
    "_agree": "mvcl.train.processes.agree",
    "_announce": "mvcl.train.processes.announce",
    "_should_stop": "mvcl.train.processes.should_stop",
    "_stop_reason": "mvcl.train.processes.stop_reason",
    "_open_split": "mvcl.train.sources.open_split",
    "_num_images": "mvcl.train.step._num_images",
    "_whole": "mvcl.train.step._whole",
}


def __getattr__(name: str):
    if name in _GONE:
        raise AttributeError(f"mvcl.train.trainer.{name} was removed: use {_GONE[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# importlib's frames are skipped: the warning points at the importing line.
warn_moved(
    "mvcl.train.trainer",
    "the module that defines the name (mvcl.train.config_checks, sources, state, step, loop, "
    "workdir)",
    stacklevel=2,
)
