"""The training loop: ``train_and_evaluate(config, workdir)`` pretrains, then evaluates.

Progress bar, metrics (TensorBoard + ``metrics.jsonl``, each step once), checkpoints every
``config.checkpoint_every_steps``, on SIGTERM or SIGINT (save, then return; `mvcl.train.signals`)
and at the end. A rerun in the same workdir resumes from the newest checkpoint that restores, if
its config may continue the run (`mvcl.train.run_identity`: nothing is written before that
check). Evaluation (`mvcl.train.workdir.evaluate_variables`) follows the last step.

The run watches itself:

* **one run per workdir**: the session holds the workdir's lock (`mvcl.train.lock`);
* **the host stays close to the devices**: at most ``config.train.steps_ahead`` steps are in
  flight beyond the last completed one, so a signal, a failed save or a diverging loss acts
  within that many steps, and the progress line counts completed steps;
* **divergence**: a step with a non-finite loss, gradient or state is not applied (inside the
  jitted step), is counted in ``train/bad_steps``, and ``config.train.max_bad_steps`` of them in
  a row stop the run (`mvcl.train.guard.DivergenceError`, exit status 3) without saving: the
  checkpoints on disk stay the last good ones, and no periodic checkpoint is written while the
  last step was bad;
* **online evaluation** every ``config.eval.every_steps`` (`mvcl.train.online_eval`): kNN,
  effective rank, alignment and uniformity of a fixed subset, logged as ``online/*`` and shown on
  the progress line; the first sign of collapse (``config.eval.collapse_*``) is announced once
  and logged as ``online/collapse = 1``;
* **failed saves** (e.g. a full disk) stop the run at the next completed step with one line
  (`mvcl.train.errors.CheckpointSaveError`, exit status 3): the earlier checkpoints are intact
  and the same command resumes once the cause is fixed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from ml_collections import config_dict
from tqdm import tqdm

from mvcl import models, parallel
from mvcl.parallel import agree, announce
from mvcl.train import cli, guard, inputs, lock, noise, online_eval, run_identity, signals, storage
from mvcl.train.checkpoint import Checkpointer
from mvcl.train.config_checks import num_train_steps, validate_config
from mvcl.train.signals import should_stop, stop_reason
from mvcl.train.state import (
    build_model,
    create_train_state,
    learning_rate_schedule,
    make_optimizer,
)
from mvcl.train.step import AXIS, make_train_step
from mvcl.train.workdir import CHECKPOINT_DIR, evaluate_variables
from mvcl.train.writers import MetricWriter

ADVICE = (
    "Try a lower config.optim.lr (to resume, add --allow_config_change=optim.lr), and if they "
    "are set otherwise, config.loss.precision=highest and config.model.dtype=float32"
)


def _mean_metrics(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``train/<name>``: the mean over the window's steps of each metric, over its finite
    values only (a window whose values are all non-finite logs none of that metric)."""
    means = {}
    for name in history[0]:
        values = [m[name] for m in history if np.isfinite(m[name])]
        if values:
            means[f"train/{name}"] = float(np.mean(values))
    return means


class _Steps:
    """The host's side of the steps dispatched to the devices.

    `dispatched` queues a step's metrics and waits for the oldest steps until at most
    ``config.train.steps_ahead`` are in flight. A completed step updates the guard
    (`mvcl.train.guard.BadSteps`), the progress line (completed steps, so its rate is the rate
    of steps done), the logs (every ``log_every_steps``-th step and the last one) and checks the
    asynchronous checkpoint saves.
    """

    def __init__(self, config, writer, progress, checkpointer, steps_per_epoch):
        self.config = config
        self.writer = writer
        self.progress = progress
        self.checkpointer = checkpointer
        self.steps_per_epoch = steps_per_epoch
        self.ahead = max(1, int(config.train.get("steps_ahead", 2)))
        self.bad = guard.BadSteps(config.train.get("max_bad_steps", 10))
        self.pending: collections.deque = collections.deque()
        self.history: list[dict[str, float]] = []
        self.last_log = time.perf_counter()
        self.loss = ""  # the progress line's last training loss ...
        self.online = ""  # ... and last online evaluation

    def show(self) -> None:
        self.progress.set_postfix_str(" ".join(t for t in (self.loss, self.online) if t))

    @property
    def streak(self) -> str:
        return f"{self.bad.streak} step(s) in a row were not finite and were skipped"

    def dispatched(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
        self.pending.append((step, metrics))
        while len(self.pending) > self.ahead:
            self._complete(*self.pending.popleft())

    def complete_all(self) -> None:
        while self.pending:
            self._complete(*self.pending.popleft())

    def _complete(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
        values = jax.device_get(dict(metrics))  # waits for the step
        finite = bool(values.pop("finite"))
        values = {k: float(v) for k, v in values.items()}
        self.checkpointer.check()  # a failed save stops the run here
        self.bad.update(step, finite, values["loss"])
        self.history.append(values)
        self.progress.update()
        if step % self.config.log_every_steps and step != self.progress.total:
            return
        scalars = _mean_metrics(self.history)
        now = time.perf_counter()
        scalars["train/steps_per_second"] = len(self.history) / (now - self.last_log)
        scalars["train/epoch"] = step / self.steps_per_epoch
        scalars["train/bad_steps"] = self.bad.take_window()
        self.writer.write_scalars(step, scalars)
        if "train/loss" in scalars:
            self.loss = f"loss={scalars['train/loss']:.4f}"
        self.show()
        self.history, self.last_log = [], now


def _latest_step_on_disk(workdir: str) -> int | None:
    """The newest complete checkpoint's step, as orbax finds it (a step's directory renamed from
    its temporary name, or in a bucket one with its commit marker)."""
    directory = epath.Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return None
    return max(ocp.path.step.checkpoint_steps(directory), default=None)


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
      holds the results of `mvcl.evaluation.evaluate` (empty when evaluation is off or was
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
        source = inputs.open_sources(config)
    mesh = parallel.make_mesh(None if config.num_devices == -1 else config.num_devices)
    # Puts batches on the devices; its input workers start with the first batch, after the checks.
    iterator = inputs.train_batches(config, source, mesh, AXIS)
    num_steps = num_train_steps(config, iterator.steps_per_epoch)
    latest = _latest_step_on_disk(workdir)
    if latest is not None:
        run_identity.check_target(workdir, latest, num_steps)
    resume = run_identity.check_resume(
        config, workdir, steps_per_epoch=iterator.steps_per_epoch, allow=allow_config_change
    )

    schedule = learning_rate_schedule(config, num_steps)
    tx = make_optimizer(config, num_steps)
    model = build_model(config, axis_name=AXIS)
    channels = np.asarray(source[0]["image"]).shape[-1]
    state = create_train_state(config, model, tx, mesh, channels)

    # The first writes: nothing above touched the workdir. One run per workdir (mvcl.train.lock).
    with lock.holding(workdir):
        if jax.process_index() == 0 and resume.new_run:
            run_identity.start_run(workdir, config)
        checkpointer = Checkpointer(
            storage.join(workdir, CHECKPOINT_DIR), max_to_keep=config.keep_checkpoints
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
            try:
                run = _Run(
                    config=config,
                    model=model,
                    workdir=workdir,
                    mesh=mesh,
                    iterator=iterator,
                    checkpointer=checkpointer,
                    writer=writer,
                    train_step=make_train_step(config, model, tx, schedule, mesh),
                    num_steps=num_steps,
                )
                return _train(run, state, start)
            except guard.DivergenceError as e:
                raise guard.DivergenceError(
                    f"{e}. {checkpointer.newest_note()} (no state that was not finite was "
                    f"saved). {ADVICE}."
                ) from None
        finally:
            iterator.close()
            try:
                checkpointer.close()
            finally:
                if writer is not None:
                    writer.close()


def _online_evaluator(config, model, mesh) -> online_eval.OnlineEvaluator | None:
    """The run's online evaluation, if ``config.eval.every_steps`` asks for one it can do."""
    every = config.eval.get("every_steps", 0)
    if not every or not config.eval.enabled:
        return None
    if isinstance(model, models.PerViewModel):
        announce("Note: no online evaluation for a per-view model (config.eval.every_steps).")
        return None
    return online_eval.OnlineEvaluator(config, model, mesh)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What a session's training needs besides its state (`_train`)."""

    config: config_dict.ConfigDict
    model: Any
    workdir: str
    mesh: jax.sharding.Mesh
    iterator: Any
    checkpointer: Checkpointer
    writer: MetricWriter
    train_step: Any
    num_steps: int


def _train(run: _Run, state: Any, start: int) -> dict[str, Any]:
    """Steps ``start + 1 ... run.num_steps``, the saves, then the evaluation."""
    config, workdir, mesh, iterator = run.config, run.workdir, run.mesh, run.iterator
    checkpointer, writer, num_steps = run.checkpointer, run.writer, run.num_steps
    evaluator = _online_evaluator(config, run.model, mesh)
    alarmed = False
    small = config.augment.multicrop.num_small
    views = f"V={config.num_views}" + (f"+{small} small crops" if small else "")
    announce(
        f"{config.name}: {config.loss.name}, {views}, batch {config.batch_size} on "
        f"{mesh.size} device(s) in {jax.process_count()} process(es), "
        f"steps {start}->{num_steps}"
    )
    progress = tqdm(
        total=num_steps,
        initial=start,
        desc=config.name,
        unit="step",
        disable=not config.progress_bar or jax.process_index() != 0,
    )
    steps = _Steps(config, writer, progress, checkpointer, iterator.steps_per_epoch)
    step, preempted = start, False
    for step in range(start + 1, num_steps + 1):
        images = next(iterator)  # the next step's batch is already on its way
        state, metrics = run.train_step(state, images)
        # At most `steps_ahead` steps run ahead of the host: signals, the progress line, the
        # guard and save failures act on what the devices have done.
        steps.dispatched(step, metrics)
        if should_stop(step, every=config.log_every_steps):
            preempted = True
            break
        if evaluator is not None and step % config.eval.every_steps == 0:
            steps.complete_all()
            results = evaluator.evaluate(state.variables())
            warning = None if alarmed else evaluator.collapse_warning(results)
            if warning is not None:  # once per session
                alarmed = True
                announce(f"Warning at step {step}: {warning}")
                results[f"{online_eval.PREFIX}collapse"] = 1.0
            writer.write_scalars(step, results)
            steps.online = online_eval.summary_line(results)
            steps.show()
        if step % config.checkpoint_every_steps == 0:
            steps.complete_all()
            writer.flush()  # the logs are as new as the checkpoint (in a bucket: uploaded)
            if steps.bad.streak:  # the state is the one before the streak: keep the good ones
                announce(f"Note: not saving the checkpoint of step {step}: {steps.streak}.")
            else:
                checkpointer.save(step, state, iterator.get_state())
    steps.complete_all()
    progress.close()
    iterator.close()  # stops the input workers
    checkpoints = checkpointer.directory
    if preempted:
        second = " (a second Ctrl-C exits without saving)" if signals.received() == "SIGINT" else ""
        announce(f"{stop_reason()}: saving the checkpoint of step {step}{second}...")
    checkpointer.save(step, state, iterator.get_state())
    checkpointer.wait()
    writer.flush()
    if preempted or signals.received() is not None:
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
            announce(
                f"{e.signame} during evaluation: stopped it; the checkpoint of step {step} is "
                f"saved in {checkpoints}. Rerun the same command (or mvcl-evaluate "
                f"--workdir={workdir}) to evaluate."
            )
            return {"step": step, "preempted": True, "state": state, "eval": {}}
    announce(
        f"Checkpoints: {checkpoints}\nMetrics: {writer.jsonl_path} and TensorBoard events "
        f"(tensorboard --logdir {workdir})"
    )
    return {"step": step, "preempted": False, "state": state, "eval": results}


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
