"""The training loop: ``train_and_evaluate(config, workdir)`` pretrains, then evaluates.

Progress bar, metrics (TensorBoard + ``metrics.jsonl``, each step once), checkpoints every
``config.checkpoint_every_steps``, on SIGTERM or SIGINT (save, then return; `mvcl.train.signals`)
and at the end. A rerun in the same workdir resumes from the newest checkpoint that restores, if
its config may continue the run (`mvcl.train.run_identity`: nothing is written before that
check). Evaluation (`mvcl.train.workdir.evaluate_variables`) follows the last step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from ml_collections import config_dict
from tqdm import tqdm

from mvcl import parallel
from mvcl.train import cli, feed, noise, optim, run_identity, signals
from mvcl.train.checkpoint import Checkpointer
from mvcl.train.config_checks import num_train_steps, validate_config
from mvcl.train.processes import agree, announce, should_stop, stop_reason
from mvcl.train.sources import open_sources
from mvcl.train.state import build_model, create_train_state
from mvcl.train.step import AXIS, make_train_step
from mvcl.train.workdir import CHECKPOINT_DIR, evaluate_variables
from mvcl.train.writers import MetricWriter


def _mean_metrics(history: Sequence[Mapping[str, jax.Array]]) -> dict[str, float]:
    values = jax.device_get(list(history))
    return {f"train/{k}": float(np.mean([m[k] for m in values])) for k in values[0]}


def _latest_step_on_disk(workdir: str) -> int | None:
    """The newest complete checkpoint's step, from the directory names (orbax renames a step's
    temporary directory to its number when the save is complete)."""
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return None
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
    return max(steps, default=None)


def train_and_evaluate(
    config: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    *,
    allow_config_change: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Pretrains as ``config`` says, in ``workdir``, resuming the run there if any; evaluates.

    A new run writes ``config.json``; every session appends to ``config_history.jsonl`` and
    writes ``metrics.jsonl``, TensorBoard events and ``checkpoints/`` (`mvcl.train.writers`,
    `mvcl.train.checkpoint`). A rerun in the same workdir resumes from the newest checkpoint
    that restores, if ``config`` may continue the run there (`mvcl.train.run_identity`).
    SIGTERM or SIGINT saves a checkpoint and returns (`mvcl.train.signals`).

    Args:
      config: the run's config (``configs/*.py``).
      workdir: the run's directory.
      allow_config_change: fields of the consent class that may differ from the run's config
        (`mvcl.train.run_identity`). None: the ``--allow_config_change`` flag of the command-line
        program running, if any (`mvcl.train.cli.allowed_config_changes`).

    Returns:
      ``{"step": last step, "preempted": bool, "state": TrainState, "eval": {...}}``: "eval"
      holds the results of `mvcl.train.evaluate.evaluate` (empty when evaluation is off or was
      stopped by a signal). "preempted" is True when a signal stopped training or evaluation
      ("state" and "step" are None if it came before the run started).

    Raises:
      ConfigError: an invalid field, or a config that may not continue the run in ``workdir``
        (`RunIdentityError`, `CheckpointMismatchError`).
      WorkdirError: ``workdir`` cannot hold the run.
    """
    noise.install()
    validate_config(config)
    workdir = os.fspath(run_identity.check_workdir(workdir))
    if allow_config_change is None:
        allow_config_change = cli.allowed_config_changes()
    with signals.handling():
        if agree(signals.received() is not None):  # e.g. a sweep between two cells
            announce(f"{stop_reason()}: not starting the run in {workdir}.")
            return {"step": None, "preempted": True, "state": None, "eval": {}}
        return _train_and_evaluate(config, workdir, list(allow_config_change))


def _train_and_evaluate(
    config: config_dict.ConfigDict, workdir: str, allow_config_change: list[str]
) -> dict[str, Any]:
    with noise.quiet_data_preparation():
        source = open_sources(config)
    mesh = parallel.make_mesh(None if config.num_devices == -1 else config.num_devices)
    # Puts batches on the devices; its input workers start with the first batch, after the checks.
    iterator = feed.train_batches(config, source, mesh, AXIS)
    num_steps = num_train_steps(config, iterator.steps_per_epoch)
    latest = _latest_step_on_disk(workdir)
    if latest is not None:
        run_identity.check_target(workdir, latest, num_steps)
    resume = run_identity.check_resume(
        config, workdir, steps_per_epoch=iterator.steps_per_epoch, allow=allow_config_change
    )

    schedule = optim.learning_rate_schedule(config, num_steps)
    tx = optim.make_optimizer(config, num_steps)
    model = build_model(config, axis_name=AXIS)
    channels = np.asarray(source[0]["image"]).shape[-1]
    state = create_train_state(config, model, tx, mesh, channels)

    # The first writes: nothing above touched the workdir.
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        if resume.new_run:
            run_identity.start_run(workdir, config)
    checkpointer = Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=config.keep_checkpoints
    )
    writer = None
    try:  # a forced exit (second signal) or an error still ends pending saves and the logs
        restored = checkpointer.restore_latest(state)
        if restored is not None:
            _, state, data_state = restored
            iterator.set_state(data_state)
        start = int(state.step)
        run_identity.check_target(workdir, start, num_steps)
        _record_session(config, workdir, resume, start, num_steps, mesh.size)
        if restored is not None:
            announce(f"Resumed from the checkpoint at step {start} in {workdir}.")

        writer = MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=start)
        train_step = make_train_step(config, model, tx, schedule, mesh)
        small = config.augment.multicrop.num_small
        views = f"V={config.num_views}" + (f"+{small} small crops" if small else "")
        announce(
            f"{config.name}: {config.loss.name}, {views}, batch {config.batch_size} on "
            f"{mesh.size} device(s) in {jax.process_count()} process(es), "
            f"steps {start}->{num_steps}"
        )

        step, preempted, history = start, False, []
        progress = tqdm(
            total=num_steps,
            initial=start,
            desc=config.name,
            unit="step",
            disable=not config.progress_bar or jax.process_index() != 0,
        )
        last_log = time.perf_counter()
        for step in range(start + 1, num_steps + 1):
            images = next(iterator)  # the next step's batch is already on its way
            state, metrics = train_step(state, images)
            history.append(metrics)
            progress.update()
            if step % config.log_every_steps == 0 or step == num_steps:
                scalars = _mean_metrics(history)
                now = time.perf_counter()
                scalars["train/steps_per_second"] = len(history) / (now - last_log)
                scalars["train/epoch"] = step / iterator.steps_per_epoch
                writer.write_scalars(step, scalars)
                progress.set_postfix(loss=f"{scalars['train/loss']:.4f}")
                history, last_log = [], now
            if should_stop(step, every=config.log_every_steps):
                preempted = True
                break
            if step % config.checkpoint_every_steps == 0:
                checkpointer.save(step, state, iterator.get_state())
        progress.close()
        iterator.close()  # stops the input workers
        checkpoints = checkpointer.directory
        if preempted:
            second = (
                " (a second Ctrl-C exits without saving)" if signals.received() == "SIGINT" else ""
            )
            announce(f"{stop_reason()}: saving the checkpoint of step {step}{second}...")
        checkpointer.save(step, state, iterator.get_state())
        checkpointer.close()
        writer.flush()
        if preempted or signals.received() is not None:
            writer.close()
            announce(
                f"{stop_reason()}: saved the checkpoint at step {step} in {checkpoints}; exiting"
                f"{'' if preempted else ' before evaluation'}. Rerun the same command to resume."
            )
            return {"step": step, "preempted": True, "state": state, "eval": {}}

        results = {}
        if config.eval.enabled:
            try:
                with signals.immediate():
                    results = evaluate_variables(
                        config, jax.device_get(state.variables()), writer, step
                    )
            except signals.Interrupted as e:
                writer.close()
                announce(
                    f"{e.signame} during evaluation: stopped it; the checkpoint of step {step} is "
                    f"saved in {checkpoints}. Rerun the same command (or experiments/evaluate.py "
                    f"--workdir={workdir}) to evaluate."
                )
                return {"step": step, "preempted": True, "state": state, "eval": {}}
        writer.close()
        announce(
            f"Checkpoints: {checkpoints}\nMetrics: {writer.jsonl_path} and TensorBoard events "
            f"(tensorboard --logdir {workdir})"
        )
        return {"step": step, "preempted": False, "state": state, "eval": results}
    finally:
        checkpointer.close()
        if writer is not None:
            writer.close()


def _record_session(
    config: config_dict.ConfigDict,
    workdir: str,
    resume: run_identity.Resume,
    step: int,
    num_steps: int,
    devices: int,
) -> None:
    """Announces the accepted config changes and appends the session to the run's history."""
    notes = []
    if not resume.new_run:
        note = run_identity.schedule_note(
            resume.old_config, config, resume.old_total_steps, num_steps, step
        )
        if note is not None:
            notes.append(note)
    if resume.changes:
        changes = ", ".join(f"{change} ({how})" for change, how in resume.changes)
        announce(f"Config changes accepted for the run in {workdir}: {changes}.")
    for note in notes:
        announce(f"Note: {note}.")
    if jax.process_index() == 0:
        run_identity.record_session(
            workdir,
            new_run=resume.new_run,
            step=step,
            changes=resume.changes,
            devices=devices,
            processes=jax.process_count(),
            notes=notes,
        )
