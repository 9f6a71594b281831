"""Checkpoints of a pretraining run: orbax ``CheckpointManager``; nothing is deleted on restore.

A checkpoint at step s holds two items:

  state   the train state (params, optimiser state, batch_stats, step, RNG), any pytree;
  data    the input pipeline position, ``BatchIterator.get_state()`` (JSON).

Saves are asynchronous (training continues while the files are written); orbax writes each step
into a temporary directory and renames it when complete (in a bucket, ``gs://``: into the step's
directory, complete once orbax writes its ``commit_success.txt``), so a run killed mid-save
leaves the previous checkpoints intact. Only the retention policy of successful saves
(``max_to_keep``) removes checkpoints.

**Only finite states are saved.** `Checkpointer.save` refuses a state with a NaN or infinity
(`mvcl.train.guard.nonfinite_summary`). A save that fails in the background (a full disk, a lost
mount) is reported by `Checkpointer.check` (the loop calls it after every step), `wait` or
`close` as one `CheckpointSaveError` naming the cause, the newest good checkpoint and that the
same command resumes from it; the failed step's partial directory is removed first. orbax's own
traceback is logged at INFO (shown with ``--verbose``).

On restore the newest checkpoint is tried first, and a checkpoint that does not restore is one
of three things:

* **another structure** (its stored tree, shapes or dtypes differ from the target's, read from
  its metadata): the config is not the one the checkpoints were written with. That is the
  user's mistake to fix, not damage: `CheckpointMismatchError` names the differing arrays, and
  nothing is touched.
* **corrupt** (its metadata or its arrays cannot be read: truncated or overwritten files): it is
  moved to ``<directory>/quarantine/<step>/`` with the error in ``quarantine/<step>.error.txt``
  beside it, a warning says so, and the next older checkpoint is tried. (In a bucket, ``gs://``,
  the move copies the checkpoint's objects and deletes the originals.) A read-only
  checkpointer (evaluation) moves nothing and only falls back.
* **not finite** (NaN or infinite values, as a diverged run of an mvcl without the guard
  wrote): quarantined like a corrupt one when training resumes; a read-only checkpointer
  (evaluation) refuses it with `NonFiniteCheckpointError`, one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import traceback
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from mvcl.train import storage
from mvcl.train.errors import (
    CheckpointMismatchError,
    CheckpointSaveError,
    NonFiniteCheckpointError,
)
from mvcl.train.guard import nonfinite_summary

State = TypeVar("State")
QUARANTINE_DIR = "quarantine"

# "params/head/Dense_0/kernel" -> (shape, dtype name)
LeafSpecs = dict[str, tuple[tuple[int, ...], str]]


def _path(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def leaf_specs(tree: Any) -> LeafSpecs:
    """Every array leaf of ``tree`` (a state, or orbax's stored metadata) by its path."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path(p): (tuple(x.shape), str(x.dtype)) for p, x in leaves if hasattr(x, "shape")}


def describe_mismatch(stored: LeafSpecs, expected: LeafSpecs, limit: int = 3) -> str:
    """The first ``limit`` differences between two `leaf_specs`, as one line."""

    def show(spec: tuple[tuple[int, ...], str]) -> str:
        return f"{spec[0]} {spec[1]}"

    differences = []
    for name in sorted(stored.keys() | expected.keys()):
        if name not in expected:
            differences.append(f"{name} is in the checkpoint only")
        elif name not in stored:
            differences.append(f"{name} is not in the checkpoint")
        elif stored[name] != expected[name]:
            differences.append(
                f"{name} is {show(stored[name])} in the checkpoint, {show(expected[name])} here"
            )
    more = len(differences) - limit
    text = "; ".join(differences[:limit])
    return text + (f" (and {more} more)" if more > 0 else "")


def _reason(error: BaseException) -> str:
    """What went wrong, in a few words: the OS error if there is one in the chain (e.g. "no
    space left on device"), else the last line of the message."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            where = f" ({seen.filename})" if seen.filename else ""
            return f"{os.strerror(seen.errno).lower()}{where}"
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
        if os.strerror(code).lower() in text.lower():
            return os.strerror(code).lower()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


class Checkpointer(Generic[State]):
    """The checkpoints of one run in ``directory``, at most ``max_to_keep`` of them.

    ``read_only=True`` (for evaluation) never writes, moves or deletes anything.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int, read_only: bool = False):
        self.directory = os.fspath(storage.resolve(directory, "the checkpoint directory"))
        self.read_only = read_only
        self._closed = False
        self._saving: int | None = None  # the step of the last save started
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=not read_only,
                cleanup_tmp_directories=not read_only,
                read_only=read_only,
            ),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
            },
        )

    @property
    def quarantine(self) -> str:
        """Where corrupt checkpoints are moved."""
        return os.path.join(self.directory, QUARANTINE_DIR)

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: State, data_state: Mapping[str, Any]) -> bool:
        """Starts saving ``state`` and ``data_state`` as step ``step``; False if already saved.

        Raises:
          CheckpointSaveError: an earlier asynchronous save failed (`check`), or ``state`` holds
            NaN or infinite values (a checkpoint is never written from such a state).
        """
        self.wait()  # (orbax would wait for the previous save too; its error is that step's)
        if step in self._manager.all_steps():
            return False
        bad = nonfinite_summary(state)
        if bad is not None:
            raise CheckpointSaveError(
                f"refusing to save the checkpoint of step {step} in {self.directory}: {bad}. "
                f"{self.newest_note()}"
            )
        try:
            started = self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))
                ),
                force=True,
            )
        except Exception as e:  # (the synchronous part of the save failed)
            self._failed(step, e)
        self._saving = step
        return started

    def check(self) -> None:
        """Raises `CheckpointSaveError` if an asynchronous save has failed since the last call.

        Cheap (no waiting): the loop calls it after every completed step, so a failed save stops
        the run at the next step boundary. The step's partial directory is removed, so nothing
        that looks like a checkpoint is left.
        """
        try:
            self._manager.check_for_errors()
        except Exception as e:  # (orbax re-raises the save thread's error)
            self._failed(self._saving, e)

    def newest_note(self, failed: int | None = None) -> str:
        """``"The newest good checkpoint is step K in <directory>"`` (or that there is none)."""
        good = [s for s in self._manager.all_steps() if s != failed]
        if not good:
            return f"No checkpoint of this run is in {self.directory} yet"
        return f"The newest good checkpoint is step {max(good)} in {self.directory}"

    def _failed(self, step: int | None, error: BaseException) -> None:
        """Removes what the failed save of ``step`` left and raises its one-line error."""
        logging.info("The checkpoint save failed:\n%s", "".join(traceback.format_exception(error)))
        if step is not None and jax.process_index() == 0:
            with contextlib.suppress(OSError):
                for path in epath.Path(self.directory).iterdir():
                    if path.name == str(step) or path.name.startswith(
                        f"{step}.orbax-checkpoint-tmp"
                    ):
                        with contextlib.suppress(OSError):
                            path.rmtree()
        with contextlib.suppress(Exception):
            self._manager.reload()
        self._saving = None
        raise CheckpointSaveError(
            f"saving the checkpoint of step {step} in {self.directory} failed: "
            f"{_reason(error)}. {self.newest_note(step)}: free space (or fix the cause) and "
            "rerun the same command to resume from it"
        ) from error

    def stored_specs(self, step: int) -> LeafSpecs:
        """The arrays of the state saved at ``step`` (from its metadata; no array is read)."""
        metadata = self._manager.item_metadata(step)["state"]
        if metadata is None:
            raise ValueError("the checkpoint has no readable 'state' metadata")
        return leaf_specs(getattr(metadata, "tree", metadata))

    def restore_latest(self, target: State) -> tuple[int, State, dict[str, Any]] | None:
        """(step, state, data_state) of the newest checkpoint that restores, or None if none does.

        ``target`` is a state of the right structure, shapes, dtypes and shardings (its values
        are not used). Corrupt checkpoints on the way are quarantined (module docstring).

        Raises:
          CheckpointMismatchError: the newest readable checkpoint holds another structure.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        expected = leaf_specs(abstract)
        for step in reversed(self.all_steps()):
            try:
                stored = self.stored_specs(step)
            except Exception as e:  # (unreadable metadata: a corrupt checkpoint)
                self._corrupt(step, e)
                continue
            if stored != expected:
                raise CheckpointMismatchError(
                    f"the checkpoint at step {step} in {self.directory} holds a train state of "
                    f"another structure than this config builds: "
                    f"{describe_mismatch(stored, expected)}. The config is not the one the "
                    "checkpoints were written with (the run's config.json); a new --workdir "
                    "starts a new run"
                )
            try:
                items = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                    ),
                )
                data_state = dict(items.data)
            except Exception as e:  # (arrays that do not read: corrupt)
                self._corrupt(step, e)
                continue
            bad = nonfinite_summary(items.state)
            if bad is not None:
                error = NonFiniteCheckpointError(
                    f"the checkpoint at step {step} in {self.directory} holds non-finite values "
                    f"({bad}): it was written by a run that diverged"
                )
                if self.read_only:
                    raise NonFiniteCheckpointError(
                        f"{error}; evaluate an earlier run, or resume training (which sets "
                        "such checkpoints aside) with a lower config.optim.lr"
                    )
                self._corrupt(step, error)
                continue
            return step, items.state, data_state
        return None

    def _corrupt(self, step: int, error: BaseException) -> None:
        """Reports an unreadable checkpoint and (unless read-only) moves it to quarantine."""
        reason = f"{type(error).__name__}: {str(error)[:500]}"
        if self.read_only:
            logging.warning(
                "The checkpoint at step %d in %s does not restore (%s); using an older one.",
                step,
                self.directory,
                reason,
            )
            return
        source = epath.Path(self.directory) / str(step)
        quarantine = epath.Path(self.quarantine)
        name, n = str(step), 1
        while (quarantine / name).exists():
            n += 1
            name = f"{step}.{n}"
        destination = quarantine / name
        several = jax.process_count() > 1
        if several:
            multihost_utils.sync_global_devices(f"mvcl quarantine {step} start")
        if jax.process_index() == 0:
            quarantine.mkdir(parents=True, exist_ok=True)
            # The note first: in a bucket a directory exists once an object is in it, and epath
            # moves only into an existing one.
            storage.write_text(
                quarantine / f"{name}.error.txt",
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: the checkpoint at step {step} did not "
                f"restore and was moved here from {source}.\n\n"
                + "".join(traceback.format_exception(error)),
            )
            source.rename(destination)  # (in a bucket: copied object by object, then deleted)
        if several:
            multihost_utils.sync_global_devices(f"mvcl quarantine {step} done")
        self._manager.reload()
        logging.warning(
            "The checkpoint at step %d in %s does not restore (%s): moved it to %s (the error is "
            "in %s.error.txt); using an older one.",
            step,
            self.directory,
            reason,
            destination,
            destination,
        )

    def wait(self) -> None:
        """Blocks until every started save is complete on disk.

        Raises:
          CheckpointSaveError: a save failed.
        """
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            self._failed(self._saving, e)
        self.check()
        self._saving = None

    def close(self) -> None:
        """Waits for pending saves and releases the manager (again: nothing).

        Raises:
          CheckpointSaveError: a pending save failed (the manager is released all the same).
        """
        if self._closed:
            return
        self._closed = True
        try:
            if not self.read_only:
                self.wait()
        finally:
            with contextlib.suppress(Exception):  # (its error, if any, was just reported)
                self._manager.close()
