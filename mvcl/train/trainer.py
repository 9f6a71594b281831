"""The names of the former single training module, re-exported from the modules that hold them.

Kept so that ``from mvcl.train import trainer; trainer.X`` goes on working; new code imports from
the module of one concern instead:

* `mvcl.train.config_checks`: `validate_config`, `num_train_steps`, ``LOSS_BACKENDS``, ``DTYPES``;
* `mvcl.train.sources`: `fake_source`, `open_sources`, `global_batch`;
* `mvcl.train.state`: `TrainState`, `build_model`, `create_train_state`;
* `mvcl.train.step`: `make_loss_fn`, `make_train_step`, ``AXIS``;
* `mvcl.train.loop`: `train_and_evaluate`;
* `mvcl.train.workdir`: `load_config`, `restore_variables`, `evaluate_workdir`,
  `evaluate_variables`, ``CONFIG_FILE``, ``CHECKPOINT_DIR``;
* `mvcl.train.processes`: what the processes agree on and what the first one prints.

The names are the same objects as there. Patching one here does not reach the code that uses it:
patch it in the module that defines it (for example ``mvcl.train.step.make_loss_fn``).
"""

from __future__ import annotations

from mvcl import losses as losses
from mvcl.train.config_checks import (
    DTYPES,
    LOSS_BACKENDS,
    num_train_steps,
    require,
    validate_config,
)
from mvcl.train.config_checks import _validate_multicrop as _validate_multicrop
from mvcl.train.loop import _latest_step_on_disk as _latest_step_on_disk
from mvcl.train.loop import _mean_metrics as _mean_metrics
from mvcl.train.loop import _record_session as _record_session
from mvcl.train.loop import _train_and_evaluate as _train_and_evaluate
from mvcl.train.loop import train_and_evaluate
from mvcl.train.processes import agree, announce, should_stop, stop_reason
from mvcl.train.sources import fake_source, global_batch, open_sources, open_split
from mvcl.train.state import TrainState, build_model, create_train_state
from mvcl.train.step import AXIS, make_loss_fn, make_train_step
from mvcl.train.step import _num_images as _num_images
from mvcl.train.step import _whole as _whole
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

# The old module's helpers under their old names, for code that reached into it.
_agree, _announce, _should_stop, _stop_reason = agree, announce, should_stop, stop_reason
_open_split, _require = open_split, require
