"""Checkpoints of a pretraining run: orbax ``CheckpointManager`` with a fall-back on restore.

A checkpoint at step s holds two items:

  state   the train state (params, optimiser state, batch_stats, step, RNG), any pytree;
  data    the input pipeline position, ``BatchIterator.get_state()`` (JSON).

Saves are asynchronous (training continues while the files are written); orbax writes each step
into a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoints intact. On restore the newest checkpoint is tried first; one that fails to
restore is reported with a warning and deleted (unless the checkpointer is read-only), and the
one before it is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import jax
import orbax.checkpoint as ocp
from absl import logging

State = TypeVar("State")


class Checkpointer(Generic[State]):
    """The checkpoints of one run in ``directory``, at most ``max_to_keep`` of them.

    ``read_only=True`` (for evaluation) never writes or deletes anything.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=not read_only,
                cleanup_tmp_directories=not read_only,
                read_only=read_only,
            ),
            item_names=("state", "data"),
        )

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: State, data_state: Mapping[str, Any]) -> bool:
        """Starts saving ``state`` and ``data_state`` as step ``step``; False if already saved."""
        if step in self._manager.all_steps():
            return False
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))
            ),
            force=True,
        )

    def restore_latest(self, target: State) -> tuple[int, State, dict[str, Any]] | None:
        """(step, state, data_state) of the newest checkpoint that restores, or None if none does.

        ``target`` is a state of the right structure, shapes, dtypes and shardings (its values
        are not used). Newer checkpoints that failed to restore are deleted (unless read-only),
        so the run can write its next checkpoints in their place.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored, failed = None, []
        for step in reversed(self.all_steps()):
            try:
                items = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # any failure means: use an older one
                logging.warning(
                    "Checkpoint at step %d in %s failed to restore (%s: %s); "
                    "falling back to the previous checkpoint.",
                    step,
                    self.directory,
                    type(e).__name__,
                    str(e)[:500],
                )
                failed.append(step)
                continue
            restored = (step, items.state, dict(items.data))
            break
        for step in [] if self.read_only else failed:
            logging.warning("Deleting the unreadable checkpoint at step %d.", step)
            self._manager.delete(step)
        if restored is None and failed:
            logging.warning(
                "No checkpoint in %s could be restored; starting afresh.", self.directory
            )
        return restored

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.close()
