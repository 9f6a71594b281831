"""Training: the model and optimiser, the sharded train step and loop, checkpoints, workdirs.

    from mvcl import evaluation, train
    result = train.train_and_evaluate(config, workdir)   # pretrain (resumes), then evaluate
    results = train.evaluate_workdir(workdir)            # evaluate the newest checkpoint
    step, variables = train.restore_variables(workdir)   # its encoder, {"params", "batch_stats"}
    evaluation.knn_accuracy(...)                         # the evaluation pieces (mvcl.evaluation)

One run, ``train_and_evaluate(config, workdir)``:

1. **Config checks** (`mvcl.train.config_checks`). `validate_config` turns every bad field into a
   ``ValueError`` naming it (``config.loss.name``, ``config.num_views``, ``config.batch_size``,
   ...) before any work; a missing data set fails as ``config.dataset.name`` when the sources are
   opened (`mvcl.train.inputs`), still before the first step.
2. **Data** (`mvcl.train.inputs`). The host reads each image of its share of the global batch
   once, as uint8 (`mvcl.data.BatchIterator`: a pure function of ``(seed, step)``, made by grain
   workers), and the global batch is one ``jax.Array`` sharded over the ``data`` axis of a mesh
   of every device of every process, copied there one step ahead.
3. **State** (`mvcl.train.state`). The model, the optimiser (SGD or LARS, warmup then cosine)
   and `TrainState`: step, params, batch_stats, optimiser state and the augmentation key,
   created replicated on the mesh.
4. **Step** (`mvcl.train.step`). `make_train_step`: inside ``jax.shard_map`` each device makes
   the V views of its images (`mvcl.data.make_views`), runs the model with BatchNorm statistics
   over the global batch (``axis_name``) and calls the loss with ``axis_name``, which returns the
   global-batch loss; ``jax.grad`` of the shard_map-ed function is the gradient of that loss. The
   views of instance ``i`` of the global batch at step ``s`` come from the key
   ``fold_in(fold_in(rng, s), i)``: the same on one device or many. With multi-crop
   (``config.augment.multicrop.num_small = K > 0``) that key is split in two, for the V large and
   the K small crops; the model runs once per resolution and the loss sees ``(n, V + K, D)``.
   `mvcl.train.grad_cache` computes the same gradient in chunks (``config.train.micro_batch``);
   a step that is not finite is not applied (`mvcl.train.guard`).
5. **Loop** (`mvcl.train.loop`). Progress bar, metrics (TensorBoard + ``metrics.jsonl``, each
   step once: `mvcl.train.writers`), the online evaluation (`mvcl.train.online_eval`),
   checkpoints (`mvcl.train.checkpoint`) every ``config.checkpoint_every_steps``, on SIGTERM or
   SIGINT (save, then return; `mvcl.train.signals`) and at the end. A rerun in the same workdir
   resumes from the newest checkpoint that restores, if its config may continue the run
   (`mvcl.train.run_identity`: nothing is written before that check), and one session at a time
   holds the workdir (`mvcl.train.lock`). Evaluation (`mvcl.evaluation`;
   `mvcl.evaluation.multimodal` for per-view models) follows the last step.
6. **Workdir** (`mvcl.train.workdir`). `load_config`, `restore_variables` and `evaluate_workdir`
   read a run back without writing to it; `mvcl.train.workdir.run_summary` is a finished run in
   one JSON file. A workdir may be a bucket path (``gs://``, `mvcl.train.storage`).

Mistakes raise a `UserError` subclass (`mvcl.train.errors`), which the command-line programs
(``mvcl-pretrain``, ``mvcl-evaluate``, ``mvcl-sweep``: `mvcl.pretrain`, `mvcl.evaluate`,
`mvcl.sweep`, through `mvcl.train.cli.run`) print as one line; `mvcl.train.noise` quiets the
libraries' messages that say nothing about the run. `mvcl.train.memory_plan` compiles a config's
step outside a run, for its device memory and its time.

The modules of earlier releases that moved or were folded into these (``mvcl.train.evaluate``,
``multimodal``, ``sources``, ``feed``, ``optim``, ``processes``, ``malloc``, ``summary``,
``step_timing``, ``trainer``) still import, with a DeprecationWarning naming where their names
are now, until 0.2.0 (`mvcl._deprecation`).
"""

from types import ModuleType

from mvcl import _deprecation
from mvcl.train import run_identity, signals
from mvcl.train.checkpoint import Checkpointer
from mvcl.train.config_checks import validate_config
from mvcl.train.errors import (
    CheckpointMismatchError,
    ConfigError,
    NoRunError,
    RunIdentityError,
    UserError,
    WorkdirError,
)
from mvcl.train.loop import train_and_evaluate
from mvcl.train.state import (
    TrainState,
    build_model,
    create_train_state,
    learning_rate_schedule,
    make_optimizer,
)
from mvcl.train.step import make_train_step
from mvcl.train.workdir import evaluate_workdir, load_config, restore_variables
from mvcl.train.writers import MetricWriter

__all__ = [
    "CheckpointMismatchError",
    "Checkpointer",
    "ConfigError",
    "NoRunError",
    "RunIdentityError",
    "UserError",
    "WorkdirError",
    "MetricWriter",
    "TrainState",
    "build_model",
    "create_train_state",
    "evaluate",  # mvcl.train.evaluate, now mvcl.evaluation: a star import warns and names it
    "evaluate_workdir",
    "learning_rate_schedule",
    "load_config",
    "make_optimizer",
    "make_train_step",
    "restore_variables",
    "run_identity",
    "signals",
    "train_and_evaluate",
    "validate_config",
]


def __getattr__(name: str) -> ModuleType:
    # The modules that moved or were folded into others (mvcl.train.evaluate is mvcl.evaluation,
    # mvcl.train.sources is mvcl.train.inputs, ...): using one warns.
    old = f"{__name__}.{name}"
    if _deprecation.is_moved(old):
        return _deprecation.import_moved(old)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
