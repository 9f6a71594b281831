"""Metric logging of a run: TensorBoard event files and a JSON-lines file in the workdir.

``<workdir>/metrics.jsonl`` gets one line per call, ``{"step": s, "time": unix seconds, name:
value, ...}``, written through at once (a crash loses no line). TensorBoard
(``tensorboard --logdir <workdir>``) shows the same scalars.

**Each step once.** A run that crashes after its last checkpoint has logged steps it will redo
when resumed. A writer opened with ``resume_step=r`` (the restored checkpoint's step) therefore
first removes from both logs every value logged at a step after ``r``; and a value written at a
step and name already logged by an earlier session (evaluating the same checkpoint again)
replaces the old one. The logs of a resumed run hold every (step, name) once, as an
uninterrupted run's do; a ``metrics.jsonl`` that holds a (step, name) twice (two processes wrote
it before runs locked their workdir, `mvcl.train.lock`) keeps its last value when it is opened.
Only files of earlier sessions are rewritten, each into a temporary file renamed over the old one (a
crash leaves the old or the new file, never half of one); the
TensorBoard files rewritten are the ``events.out.tfevents.*`` directly in the workdir.

TensorBoard files are written with tensorboard's own framework-free ``tensorboard.summary.Writer``:
clu's ``metric_writers`` would be the flax-examples choice, but its package imports TensorFlow
unconditionally, which mvcl does not otherwise need. The method names follow clu's
``MetricWriter`` (``write_scalars``, ``flush``, ``close``).

**In a bucket** (``gs://``, `mvcl.train.storage`) an object cannot be appended to, and
tensorboard's writer without TensorFlow writes local files only. So ``metrics.jsonl`` is kept
in memory and the session's TensorBoard file is written into a local temporary directory; both
are uploaded whole at `MetricWriter.flush` (the loop flushes before every checkpoint, so the
logs in the bucket are at least as new as its newest checkpoint), at `close`, and by
`write_scalars` when `UPLOAD_SECONDS` have passed since the last upload. A crash loses what was
logged after the last upload; the resumed run logs those steps again. Rewriting an earlier
session's files works as above, each rewritten file uploaded as one object (atomic).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Mapping

import tensorboard.summary
from etils import epath
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer import record_writer

from mvcl.train import storage

METRICS_FILE = "metrics.jsonl"
EVENTS_GLOB = "events.out.tfevents.*"
UPLOAD_SECONDS = 30.0  # in a bucket, the logs are uploaded at least this often while logging

# (step, metric name) -> whether to keep it
Keep = Callable[[int, str], bool]


class _EarlierLogs:
    """The metrics.jsonl lines and TensorBoard files written before this session."""

    def __init__(self, logdir: epath.Path):
        self.jsonl = logdir / METRICS_FILE
        self.event_files = sorted(logdir.glob(EVENTS_GLOB))
        self.logged: dict[int, set[str]] = {}
        if self.jsonl.is_file():
            repeated = False
            for record in self._records():
                if isinstance(record, dict):
                    names = self.logged.setdefault(int(record["step"]), set())
                    repeated = repeated or bool(names & _names(record))
                    names.update(_names(record))
            if repeated:  # (written by an mvcl without the workdir lock: keep the last values)
                self._drop_repeats()

    def _records(self) -> list[dict | str]:
        """Parsed lines; a line that does not parse is kept as its text."""
        records: list[dict | str] = []
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records.append(record if isinstance(record, dict) and "step" in record else line)
            except json.JSONDecodeError:
                records.append(line)
        return records

    def _drop_repeats(self) -> None:
        """Keeps only the last value of every (step, name) logged more than once in the JSONL."""
        records = self._records()
        seen: set[tuple[int, str]] = set()
        kept: list[dict | str] = []
        for record in reversed(records):
            if isinstance(record, dict):
                step = int(record["step"])
                fresh = {k for k in _names(record) if (step, k) not in seen}
                seen.update((step, k) for k in fresh)
                record = {k: v for k, v in record.items() if k in ("step", "time") or k in fresh}
                if not _names(record):
                    continue
            kept.append(record)
        text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in reversed(kept))
        storage.write_text(self.jsonl, text)

    def drop_after(self, step: int) -> None:
        """Removes every value logged at a step after ``step``."""
        if any(s > step for s in self.logged):
            self._rewrite(lambda s, name: s <= step)

    def holds(self, step: int, names: Collection[str]) -> bool:
        """Whether an earlier session logged one of ``names`` at ``step``."""
        return bool(self.logged.get(step, set()) & set(names))

    def supersede(self, step: int, names: Collection[str]) -> None:
        """Removes the values of ``names`` logged at ``step`` (they are about to be rewritten)."""
        names = set(names)
        self._rewrite(lambda s, name: s != step or name not in names)

    def _rewrite(self, keep: Keep) -> None:
        self._rewrite_jsonl(keep)
        for path in self.event_files:
            _rewrite_events(path, keep)

    def _rewrite_jsonl(self, keep: Keep) -> None:
        lines, self.logged = [], {}
        for record in self._records():
            if isinstance(record, str):
                lines.append(record)
                continue
            step = int(record["step"])
            kept = {k: v for k, v in record.items() if k in ("step", "time") or keep(step, k)}
            if _names(kept):
                lines.append(json.dumps(kept))
                self.logged.setdefault(step, set()).update(_names(kept))
        text = "".join(line + "\n" for line in lines)
        storage.write_text(self.jsonl, text)


def _names(record: Mapping[str, object]) -> set[str]:
    return {k for k in record if k not in ("step", "time")}


def _read_events(path: epath.Path) -> list[bytes]:
    """The serialized events of one TensorBoard file (a bucket's is read through a local copy:
    tensorboard's reader without TensorFlow reads local files)."""
    if not storage.is_remote(path):
        return list(event_file_loader.RawEventFileLoader(os.fspath(path)).Load())
    with tempfile.TemporaryDirectory(prefix="mvcl-events-") as tmp:
        local = os.path.join(tmp, path.name)
        with open(local, "wb") as f:
            f.write(path.read_bytes())
        return list(event_file_loader.RawEventFileLoader(local).Load())


def _rewrite_events(path: epath.Path, keep: Keep) -> None:
    """Rewrites one TensorBoard event file without the summary values ``keep`` rejects."""
    events, changed = [], False
    for raw in _read_events(path):
        event = event_pb2.Event.FromString(raw)
        if event.HasField("summary"):
            values = [v for v in event.summary.value if keep(int(event.step), v.tag)]
            if len(values) != len(event.summary.value):
                changed = True
                if not values:
                    continue
                del event.summary.value[:]
                event.summary.value.extend(values)
        events.append(event.SerializeToString())
    if not changed:
        return
    buffer = io.BytesIO()
    writer = record_writer.RecordWriter(buffer)
    for raw in events:
        writer.write(raw)
    storage.write_bytes(path, buffer.getvalue())


class _Jsonl:
    """``metrics.jsonl`` open for new lines: a local file is appended to and line-buffered (a
    crash loses no line); a bucket's object is kept in memory and uploaded whole by `upload`."""

    def __init__(self, path: epath.Path):
        self.path = path
        self.remote = storage.is_remote(path)
        if self.remote:
            self._text = path.read_text(encoding="utf-8") if path.exists() else ""
            self._dirty = False
        else:
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # line-buffered

    def write(self, line: str) -> None:
        if self.remote:
            self._text += line
            self._dirty = True
        else:
            self._file.write(line)

    def upload(self) -> None:
        if self.remote:
            if self._dirty:
                storage.write_text(self.path, self._text)
                self._dirty = False
        else:
            self._file.flush()

    def close(self) -> None:
        self.upload()
        if not self.remote:
            self._file.close()


class MetricWriter:
    """Writes scalars to TensorBoard and ``metrics.jsonl`` in ``logdir``.

    Args:
      logdir: the run's directory.
      enabled: only one process of a multi-process run should write: pass ``enabled=False`` on
        the others and every call is a no-op.
      resume_step: the step the run resumes from (0 for a run starting afresh in a directory
        with logs); values logged after it by earlier sessions are removed. None (evaluation)
        removes nothing.
    """

    def __init__(
        self, logdir: str | os.PathLike, *, enabled: bool = True, resume_step: int | None = None
    ):
        self.enabled = enabled
        self.logdir = storage.resolve(logdir)
        self.jsonl_path = os.fspath(self.logdir / METRICS_FILE)
        self.remote = storage.is_remote(self.logdir)
        if enabled:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._earlier = _EarlierLogs(self.logdir)
            if resume_step is not None:
                self._earlier.drop_after(resume_step)
            # A bucket's events are written locally and uploaded (module docstring).
            self._staging = tempfile.mkdtemp(prefix="mvcl-events-") if self.remote else None
            self._tensorboard = tensorboard.summary.Writer(self._staging or os.fspath(logdir))
            self._jsonl = _Jsonl(self.logdir / METRICS_FILE)
            self._uploaded = time.monotonic()

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Logs ``scalars`` (name -> number) at ``step``; names may contain "/" for grouping.

        A name already logged at ``step`` by an earlier session is replaced.
        """
        if not self.enabled:
            return
        values = {name: float(value) for name, value in scalars.items()}
        if self._earlier.holds(int(step), values):
            self._jsonl.close()
            self._earlier.supersede(int(step), values)
            self._jsonl = _Jsonl(self.logdir / METRICS_FILE)
        for name, value in values.items():
            self._tensorboard.add_scalar(name, value, step=step)
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        if self.remote and time.monotonic() - self._uploaded > UPLOAD_SECONDS:
            self.flush()

    def _upload_events(self) -> None:
        """Copies the session's TensorBoard files from the staging directory to the bucket."""
        for name in sorted(os.listdir(self._staging)):
            with open(os.path.join(self._staging, name), "rb") as f:
                storage.write_bytes(self.logdir / name, f.read())

    def flush(self) -> None:
        """Writes out what was logged (in a bucket: uploads ``metrics.jsonl`` and the session's
        TensorBoard file)."""
        if self.enabled:
            self._tensorboard.flush()
            self._jsonl.upload()
            if self.remote:
                self._upload_events()
                self._uploaded = time.monotonic()

    def close(self) -> None:
        if self.enabled:
            self._tensorboard.close()
            self._jsonl.close()
            if self.remote:
                self._upload_events()
                shutil.rmtree(self._staging, ignore_errors=True)
            self.enabled = False
