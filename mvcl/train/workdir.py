"""A run's workdir, read back: its config, its newest checkpoint's variables, their evaluation,
and the summary of a finished run.

`load_config` gives the run's current config, `restore_variables` the encoder variables of its
newest good checkpoint (nothing in the workdir is written, moved or deleted), `evaluate_workdir`
evaluates them, and `evaluate_variables` evaluates any encoder variables (`mvcl.evaluation`;
`mvcl.evaluation.multimodal` for per-view models), logs the results and prints the report.

`run_summary` is a finished run in one JSON file, what ``mvcl-pretrain --summary`` and every
sweep cell write (`write_json`): the last step, the wall time, the last logged training loss,
the evaluation results and the whole config, with the facts of the machine that ran it (JAX
version, CPU count, load average at the end: a run's wall time means little without them).
Results committed under ``experiments/results/`` come from these files, so a figure there is
reproduced by rerunning the command that wrote them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
from etils import epath
from ml_collections import config_dict

from mvcl import evaluation, models, parallel
from mvcl.parallel import announce
from mvcl.train import cli, lock, noise, run_identity, signals, storage, writers
from mvcl.train.checkpoint import Checkpointer
from mvcl.train.errors import NoRunError
from mvcl.train.inputs import open_split
from mvcl.train.state import build_model, create_train_state, make_optimizer
from mvcl.train.writers import MetricWriter

CONFIG_FILE = run_identity.CONFIG_FILE
CHECKPOINT_DIR = "checkpoints"


def evaluate_variables(
    config: config_dict.ConfigDict,
    variables: Mapping[str, Any],
    writer: MetricWriter,
    step: int,
) -> dict[str, float]:
    """Evaluates the encoder ``variables`` (``{"params", "batch_stats"}``), logs ``eval/*`` at
    ``step`` and prints the report."""
    model = build_model(config)
    if isinstance(model, models.PerViewModel):  # per-modality probes and retrieval
        results = evaluation.multimodal.evaluate(config, model, variables)
        report = evaluation.multimodal.format_report(results)
    else:
        results = evaluation.evaluate(config, model, variables)
        report = evaluation.format_report(results, knn_k=config.eval.knn_k)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
    writer.flush()
    announce(f"Evaluation at step {step}:\n{report}")
    return results


def load_config(workdir: str | os.PathLike) -> config_dict.ConfigDict:
    """The current config of the run in ``workdir``: its ``config.json`` with the changes later
    sessions made (``config_history.jsonl``) applied (`mvcl.train.run_identity`).

    Raises:
      NoRunError: ``workdir`` holds no run.
    """
    return config_dict.ConfigDict(run_identity.effective_config(workdir))


def restore_variables(
    workdir: str | os.PathLike, config: config_dict.ConfigDict | None = None
) -> tuple[int, dict[str, Any]]:
    """The step and encoder variables of the newest good checkpoint of the run in ``workdir``.

    ``config`` (default: the run's, `load_config`) gives the structure of the train state; the
    image channels come from ``config.dataset.fake_shape`` or the first test image. Nothing in
    ``workdir`` is written, moved or deleted.

    Returns:
      ``(step, {"params": ..., "batch_stats": ...})`` with numpy arrays on the host.

    Raises:
      NoRunError: ``workdir`` has no checkpoint that restores.
      CheckpointMismatchError: ``config`` builds another model or optimiser than the run's.
    """
    noise.install()
    workdir = os.fspath(storage.resolve(workdir))
    config = load_config(workdir) if config is None else config
    directory = storage.join(workdir, CHECKPOINT_DIR)
    if not epath.Path(directory).is_dir():
        raise NoRunError(f"no run in {workdir}: no checkpoint in {directory}")
    if config.dataset.fake:
        channels = config.dataset.fake_shape[-1]
    else:
        with noise.quiet_data_preparation():
            channels = np.asarray(open_split(config, "test_split")[0]["image"]).shape[-1]
    tx = make_optimizer(config, total_steps=1)  # gives the state's structure only
    target = create_train_state(config, build_model(config), tx, parallel.make_mesh(), channels)
    checkpointer = Checkpointer(directory, max_to_keep=config.keep_checkpoints, read_only=True)
    try:
        restored = checkpointer.restore_latest(target)
    finally:
        checkpointer.close()
    if restored is None:
        raise NoRunError(f"no run in {workdir}: no checkpoint to restore in {directory}")
    step, state, _ = restored
    return step, jax.device_get(state.variables())


def evaluate_workdir(
    workdir: str | os.PathLike,
    config: config_dict.ConfigDict | None = None,
    *,
    allow_config_change: Iterable[str] | None = None,
) -> dict[str, float]:
    """Evaluates the newest good checkpoint in ``workdir`` (with the run's config by default).

    A ``config`` that differs from the run's in more than the free fields
    (`mvcl.train.run_identity`: evaluation settings, data directory, ...) would log results under
    other settings: it is refused unless the fields are in ``allow_config_change`` (None: the
    ``--allow_config_change`` flag of the command-line program running). A signal stops the
    evaluation at once (`mvcl.train.signals.Interrupted`); nothing is written then. The
    evaluation holds the workdir's lock (`mvcl.train.lock`): not while the run trains.

    ``workdir`` may be a bucket path (``gs://``, `mvcl.train.storage`).

    Raises:
      WorkdirError: ``workdir``'s scheme is not supported.
      NoRunError: ``workdir`` holds no run, or no checkpoint that restores.
      NonFiniteCheckpointError: the newest checkpoint holds NaN or infinite values.
      WorkdirLockedError: another process works in ``workdir``.
      RunIdentityError: ``config`` differs from the run's (see above).
    """
    noise.install()
    workdir = os.fspath(storage.resolve(workdir))
    run_config = load_config(workdir)
    if config is None:
        config = run_config
    else:
        if allow_config_change is None:
            allow_config_change = cli.allowed_config_changes()
        run_identity.check_evaluation(run_config, config, workdir, allow=allow_config_change)
    with signals.handling(), signals.immediate(), lock.holding(workdir):
        step, variables = restore_variables(workdir, config)
        writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
        try:
            return evaluate_variables(config, variables, writer, step)
        finally:
            writer.close()


# --- the summary of a finished run ----------------------------------------------------------------


plain_config = run_identity.plain  # the config as JSON values (tuples become lists)


def last_train_loss(workdir: str | os.PathLike) -> float | None:
    """The last ``train/loss`` the run logged in ``metrics.jsonl`` (None if there is none)."""
    path = epath.Path(workdir) / writers.METRICS_FILE
    if not path.is_file():
        return None
    losses = [
        record["train/loss"]
        for record in map(json.loads, path.read_text(encoding="utf-8").splitlines())
        if "train/loss" in record
    ]
    return losses[-1] if losses else None


def run_summary(
    config: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    out: Mapping[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The summary of a run that `mvcl.train.train_and_evaluate` returned ``out`` for, after
    ``seconds`` of wall time."""
    return {
        "step": int(out["step"]),
        "seconds": seconds,
        "train_loss": last_train_loss(workdir),
        "eval": dict(out["eval"]),
        "config": plain_config(config),
        "machine": {
            "jax": jax.__version__,
            "devices": jax.device_count(),
            "processes": jax.process_count(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
        },
    }


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes ``value`` as JSON atomically: a killed run leaves no file or a complete one (a
    local file or a bucket's object, `mvcl.train.storage`).

    Raises:
      WorkdirError: ``path`` has an unsupported scheme.
    """
    path = storage.resolve(path, "the file")
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(path, json.dumps(value, indent=1))
