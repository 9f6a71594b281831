"""Training: optimisers, the sharded train step and loop, checkpoints, evaluation.

    from mvcl import train
    result = train.train_and_evaluate(config, workdir)   # pretrain (resumes), then evaluate
    results = train.evaluate_workdir(workdir)            # evaluate the newest checkpoint
    step, variables = train.restore_variables(workdir)   # its encoder, {"params", "batch_stats"}
    train.evaluate.knn_accuracy(...)                      # the evaluation pieces

The command-line entry points are ``mvcl-pretrain`` and ``mvcl-evaluate`` (`mvcl.pretrain`,
`mvcl.evaluate`).
"""

from mvcl.train import evaluate
from mvcl.train.checkpoint import Checkpointer
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
    "Checkpointer",
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
    "train_and_evaluate",
    "validate_config",
]
