"""Errors that are the user's to fix: the command-line programs print them as one line.

`UserError` marks a mistake in what was asked (a config field, a flag, a workdir), as opposed
to a bug. `mvcl.train.cli.run` prints its message as one line on stderr and exits with status 2
(the traceback only with ``--verbose``). Each subclass also derives from the built-in exception
that code catching the old behaviour expects (``ValueError`` for bad values,
``FileNotFoundError`` for a missing run).
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's request; its message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """An invalid config field; the message starts with ``config.<field>:``."""


class RunIdentityError(ConfigError):
    """The config differs from the one a workdir's run was written with (`run_identity`)."""


class CheckpointMismatchError(ConfigError):
    """A checkpoint holds a train state of another structure than the config builds."""


class WorkdirError(UserError, ValueError):
    """The workdir cannot hold a run: a file, not writable, or another program's files."""


class NoRunError(UserError, FileNotFoundError):
    """The directory holds no run (no ``config.json``) or no checkpoint that restores."""


class RunStoppedError(UserError):
    """The run stopped itself to keep what it has: it diverged (`mvcl.train.guard`) or a
    checkpoint could not be saved. The checkpoints on disk are intact; the message says which is
    the newest and what to do. The command-line programs exit with status 3."""


class CheckpointSaveError(RunStoppedError):
    """A checkpoint could not be written (e.g. no space left on the device)."""


class NonFiniteCheckpointError(UserError, ValueError):
    """A checkpoint holds NaN or infinite values (written by a diverged run of an older mvcl)."""


class WorkdirLockedError(WorkdirError):
    """Another live process holds the workdir's lock (`mvcl.train.lock`)."""
