"""One run per workdir: the lock a training or evaluation session holds on its workdir.

``<workdir>/.lock`` holds who has the workdir (pid, host, start time, command), and the process
holds an exclusive ``flock`` on it for as long as it works there. The kernel drops the flock when
the process ends, however it ends, so a lock whose process is gone is never in the way: the next
session takes it over and says whose it was. A second session while the first is alive is
refused with one line naming the holder.

``flock`` is the lock, the file's text only names the holder. On a shared POSIX file system
(NFS) the flock is taken on the server, so processes on other hosts are refused as well; a host
that crashed releases its locks when its NFS lease expires. With several processes, the first
takes the lock and the others follow its answer (`mvcl.train.processes.agree`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax

from mvcl.train.errors import WorkdirLockedError
from mvcl.train.processes import agree, announce

LOCK_FILE = ".lock"


def _describe(holder: dict[str, Any]) -> str:
    command = holder.get("command")
    return (
        f"{command or 'an mvcl program'} (pid {holder.get('pid')} on host {holder.get('host')}, "
        f"since {holder.get('started')})"
    )


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode("utf-8", "replace")
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


class WorkdirLock:
    """The lock of one workdir, taken by `acquire` and given back by `release`."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.fspath(workdir), LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Takes the lock; returns a note if it took over the lock of a process that is gone.

        Raises:
          WorkdirLockedError: a live process holds it (the message names it).
        """
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise WorkdirLockedError(
                    f"--workdir {os.path.dirname(self.path)} is in use by {_describe(holder)}: "
                    "one run per workdir. Wait for it to finish or stop it (Ctrl-C saves a "
                    "checkpoint), or use another --workdir"
                ) from None
            # The file may have been removed by a holder releasing it between our open and our
            # flock: then the lock we hold is on a deleted file; start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read(fd)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
            if sys.argv and sys.argv[0]
            else None,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        if previous:
            return (
                f"took over the lock of {_describe(previous)} on {os.path.dirname(self.path)}: "
                "that process is gone"
            )
        return None

    def release(self) -> None:
        """Removes the lock file and drops the lock (again: nothing)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)  # closing drops the flock
        self._fd = None


@contextlib.contextmanager
def holding(workdir: str | os.PathLike) -> Iterator[None]:
    """Holds the workdir's lock for the block: the first process takes it, every process stops
    if it cannot (`WorkdirLockedError` on the first, a pointer to it on the others)."""
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    error: WorkdirLockedError | None = None
    note = None
    if lock is not None:
        try:
            note = lock.acquire()
        except WorkdirLockedError as e:
            error = e
    if agree(error is not None):
        raise error or WorkdirLockedError(
            f"--workdir {os.fspath(workdir)} is in use (the first process says by whom)"
        )
    if note:
        announce(f"Note: {note}.")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
