"""SIGTERM and SIGINT (Ctrl-C) during a run: stop at a safe point, save, exit.

Inside `handling()` the first SIGTERM or SIGINT does not kill the process: it is recorded, and
the code that runs decides what to do at its next safe point:

* **training** checks `received()` after every step (every ``log_every_steps``-th step with
  several processes, which agree on it with one collective), saves a checkpoint and returns;
* **evaluation** (nothing to save: the checkpoint is already on disk) runs inside `immediate()`,
  where the signal raises `Interrupted` at once;
* anything else (data loading, compilation, a sweep between cells) carries on to the next of
  those points; a run that is about to start does not start.

A second signal (Ctrl-C pressed again) raises ``KeyboardInterrupt`` wherever the program is: the
exit is forced, without saving (the checkpoints already on disk are kept). `mvcl.train.cli.run`
turns both into one line and an exit status: 0 after SIGTERM (a preemption was handled), 130
after SIGINT (so ``cmd1 && cmd2`` stops after Ctrl-C).

Python delivers signals to the main thread only: elsewhere (a run started from another thread)
`handling()` installs nothing and the default handlers stay. Every `handling()` block installs
the handlers again on entry: ``jax.distributed.initialize`` installs a native SIGTERM handler
(its preemption notifier) that would otherwise take the signal from Python. Several processes
agree on stopping with one collective in the training loop instead (`should_stop`, which
`stop_reason` explains).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import jax

from mvcl import parallel

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """Raised by a signal inside `immediate()`. A BaseException, as KeyboardInterrupt: library
    code catching ``Exception`` does not swallow it."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


class _State:
    def __init__(self) -> None:
        self.depth = 0
        self.installed = False
        self.received: list[str] = []
        self.immediate = False
        self.previous: dict[int, Any] = {}


_STATE = _State()


def _handle(signum: int, frame: Any) -> None:
    del frame
    name = signal.Signals(signum).name
    _STATE.received.append(name)
    if len(_STATE.received) > 1:
        raise KeyboardInterrupt(f"second signal ({name})")
    if _STATE.immediate:
        raise Interrupted(name)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Handles SIGTERM and SIGINT as the module docstring says, for the block.

    Blocks nest (a sweep's cells inside a command-line program): the outermost one installs
    the handlers and clears what was received, inner ones share its state.
    """
    outermost = _STATE.depth == 0
    if outermost:
        _STATE.received.clear()
        _STATE.immediate = False
        _STATE.installed = threading.current_thread() is threading.main_thread()
        if _STATE.installed:
            _STATE.previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    elif _STATE.installed:
        # Installed again: native code may have replaced the handler in between (the
        # preemption notifier of `jax.distributed.initialize` takes over SIGTERM).
        for s in SIGNALS:
            signal.signal(s, _handle)
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        if outermost and _STATE.installed:
            for s, previous in _STATE.previous.items():
                signal.signal(s, previous)
            _STATE.installed = False


def received() -> str | None:
    """The name of the first signal received inside `handling()` ("SIGTERM"/"SIGINT"), or None."""
    return _STATE.received[0] if _STATE.received else None


def all_received() -> list[str]:
    """The names of every signal received inside `handling()`, in order."""
    return list(_STATE.received)


@contextlib.contextmanager
def immediate() -> Iterator[None]:
    """Inside the block a signal raises `Interrupted` at once (one already received, at entry).

    For phases that have nothing to save, such as evaluation after the final checkpoint.
    """
    if received() is not None:
        raise Interrupted(received())
    previous, _STATE.immediate = _STATE.immediate, True
    try:
        yield
    finally:
        _STATE.immediate = previous


def should_stop(step: int, every: int) -> bool:
    """Whether to stop after ``step`` because of SIGTERM/SIGINT: every process gets the same answer.

    One process stops as soon as it has the signal. Several agree on it with a blocking
    collective (`mvcl.parallel.agree`), so only at every ``every``-th step (where the loop syncs
    for logging anyway).
    """
    if jax.process_count() > 1 and step % every:
        return False
    return parallel.agree(received() is not None)


def stop_reason() -> str:
    """The name of the signal that stops the run, for its messages (another process's, if this
    one received none)."""
    name = received()
    return name if name is not None else "A signal to another process"
