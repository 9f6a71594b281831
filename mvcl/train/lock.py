"""One run per workdir: the lock a training or evaluation session holds on its workdir.

``<workdir>/.lock`` holds who has the workdir (pid, host, start time, command), and the process
holds an exclusive ``flock`` on it for as long as it works there. The kernel drops the flock when
the process ends, however it ends, so a lock whose process is gone is never in the way: the next
session takes it over and says whose it was. A second session while the first is alive is
refused with one line naming the holder.

``flock`` is the lock, the file's text only names the holder. On a shared POSIX file system
(NFS) the flock is taken on the server, so processes on other hosts are refused as well; a host
that crashed releases its locks when its NFS lease expires. With several processes, the first
takes the lock and the others follow its answer (`mvcl.parallel.agree`).

**In a bucket** (``gs://``, `mvcl.train.storage`) there is no flock: the lock is the object
``<workdir>/.lock`` itself, created only if absent and renewed only if unchanged (tensorstore's
conditional writes: GCS's ``ifGenerationMatch`` precondition, so of two sessions starting at
once one is refused). No kernel drops it when its process dies, so a lock object counts as held
while its holder renews it: the holder rewrites it every `RENEW_SECONDS` (a daemon thread), and
one not renewed for `LEASE_SECONDS`, or whose holder is a process of this host that is gone (a
crashed or killed session rerun on the same machine), is taken over with the same note as a
local one. (Hand-rolled: neither orbax nor etils has a lock on object storage.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
from absl import logging

from mvcl.parallel import agree, announce
from mvcl.train import storage
from mvcl.train.errors import WorkdirLockedError

LOCK_FILE = ".lock"
LEASE_SECONDS = 300.0  # a bucket's lock object not renewed for this long is stale ...
RENEW_SECONDS = 60.0  # ... and its holder renews it this often


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


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
        if sys.argv and sys.argv[0]
        else None,
    }


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # (another user's process, or no pid: assume alive)
    return True


class _BucketLock:
    """The lock object of a workdir in a bucket (module docstring)."""

    def __init__(self, workdir: str):
        import tensorstore as ts  # (orbax's storage layer; only needed for buckets)

        self.workdir = workdir
        self._kv = ts.KvStore.open(workdir.rstrip("/") + "/").result()
        self._generation: bytes | None = None
        self._holder: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def acquire(self) -> str | None:
        found = self._kv.read(LOCK_FILE).result()
        previous: dict[str, Any] = {}
        why = ""
        if found.state == "value":
            try:
                previous = json.loads(found.value.decode("utf-8", "replace"))
            except json.JSONDecodeError:
                previous = {}
            previous = previous if isinstance(previous, dict) else {}
            renewed = previous.get("renewed", 0)
            stale = time.time() - float(renewed or 0) > LEASE_SECONDS
            gone = previous.get("host") == socket.gethostname() and not _alive(previous.get("pid"))
            if not (stale or gone):
                raise WorkdirLockedError(self._refusal(previous))
            why = "that process is gone" if gone else f"not renewed for {LEASE_SECONDS:.0f} s"
        self._holder = {**_me(), "renewed": time.time()}
        written = self._kv.write(
            LOCK_FILE, json.dumps(self._holder).encode("utf-8"), if_equal=found.stamp.generation
        ).result()
        if not written.generation:  # another session wrote it between our read and our write
            raise WorkdirLockedError(self._refusal(self._read_holder()))
        self._generation = written.generation
        self._thread = threading.Thread(target=self._renew, name="mvcl-lock", daemon=True)
        self._thread.start()
        if found.state == "value":
            return f"took over the lock of {_describe(previous)} on {self.workdir}: {why}"
        return None

    def _read_holder(self) -> dict[str, Any]:
        found = self._kv.read(LOCK_FILE).result()
        try:
            holder = json.loads(found.value.decode("utf-8", "replace")) if found.value else {}
        except json.JSONDecodeError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def _refusal(self, holder: dict[str, Any]) -> str:
        return (
            f"--workdir {self.workdir} is in use by {_describe(holder)}: one run per workdir. "
            "Wait for it to finish or stop it (Ctrl-C saves a checkpoint), or use another "
            f"--workdir (a lock not renewed for {LEASE_SECONDS:.0f} s is taken over)"
        )

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            with self._mutex:
                if self._generation is None:
                    return
                self._holder["renewed"] = time.time()
                try:
                    written = self._kv.write(
                        LOCK_FILE,
                        json.dumps(self._holder).encode("utf-8"),
                        if_equal=self._generation,
                    ).result()
                except Exception as e:  # (a passing storage error: try again next time)
                    logging.warning("Could not renew the lock of %s: %s", self.workdir, e)
                    continue
                if not written.generation:
                    logging.warning(
                        "The lock of %s was taken over by another session.", self.workdir
                    )
                    return
                self._generation = written.generation

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mutex:
            if self._generation is not None:
                self._kv.write(LOCK_FILE, None, if_equal=self._generation).result()
                self._generation = None


class WorkdirLock:
    """The lock of one workdir, taken by `acquire` and given back by `release`."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.fspath(workdir), LOCK_FILE)
        self._fd: int | None = None
        self._bucket = _BucketLock(os.fspath(workdir)) if storage.is_remote(workdir) else None

    def acquire(self) -> str | None:
        """Takes the lock; returns a note if it took over the lock of a process that is gone.

        Raises:
          WorkdirLockedError: a live process holds it (the message names it).
        """
        if self._bucket is not None:
            return self._bucket.acquire()
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
        me = _me()
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
        if self._bucket is not None:
            self._bucket.release()
            return
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
