"""Training: optimisers, the sharded train step and loop, checkpoints, evaluation.

    from mvcl import train
    result = train.train_and_evaluate(config, workdir)   # pretrain (resumes), then evaluate
    results = train.evaluate_workdir(workdir)            # evaluate the newest checkpoint
    step, variables = train.restore_variables(workdir)   # its encoder, {"params", "batch_stats"}
    train.evaluate.knn_accuracy(...)                      # the evaluation pieces

A rerun in a workdir continues its run only with a config that may continue it
(`mvcl.train.run_identity`); checkpoints are never deleted on restore (`mvcl.train.checkpoint`);
SIGTERM and SIGINT save and stop (`mvcl.train.signals`). Mistakes raise a `UserError` subclass
(`mvcl.train.errors`), which the command-line programs (``mvcl-pretrain``,
``mvcl-evaluate``, ``mvcl-sweep``: `mvcl.pretrain`, `mvcl.evaluate`, `mvcl.sweep`, through
`mvcl.train.cli.run`) print as one line.
"""

from mvcl.train import evaluate, run_identity, signals
from mvcl.train.checkpoint import Checkpointer
from mvcl.train.errors import (
    CheckpointMismatchError,
    ConfigError,
    NoRunError,
    RunIdentityError,
    UserError,
    WorkdirError,
)
from mvcl.train.optim import learning_rate_schedule, make_optimizer
from mvcl.train.trainer import (
    TrainState,
    build_model,
    create_train_state,
    evaluate_workdir,
    load_config,
    make_train_step,
    restore_variables,
    train_and_evaluate,
    validate_config,
)
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
    "evaluate",
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
