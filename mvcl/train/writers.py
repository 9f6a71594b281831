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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import tensorboard.summary
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer import record_writer

METRICS_FILE = "metrics.jsonl"
EVENTS_GLOB = "events.out.tfevents.*"

# (step, metric name) -> whether to keep it
Keep = Callable[[int, str], bool]


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class _EarlierLogs:
    """The metrics.jsonl lines and TensorBoard files written before this session."""

    def __init__(self, logdir: Path):
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
        _replace_atomically(self.jsonl, lambda tmp: tmp.write_text(text, encoding="utf-8"))

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
        _replace_atomically(self.jsonl, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _names(record: Mapping[str, object]) -> set[str]:
    return {k for k in record if k not in ("step", "time")}


def _rewrite_events(path: Path, keep: Keep) -> None:
    """Rewrites one TensorBoard event file without the summary values ``keep`` rejects."""
    events, changed = [], False
    for raw in event_file_loader.RawEventFileLoader(os.fspath(path)).Load():
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

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            writer = record_writer.RecordWriter(f)
            for raw in events:
                writer.write(raw)

    _replace_atomically(path, write)


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
        self.jsonl_path = os.path.join(logdir, METRICS_FILE)
        if enabled:
            os.makedirs(logdir, exist_ok=True)
            self._earlier = _EarlierLogs(Path(logdir))
            if resume_step is not None:
                self._earlier.drop_after(resume_step)
            self._tensorboard = tensorboard.summary.Writer(os.fspath(logdir))
            self._jsonl = open(self.jsonl_path, "a", buffering=1, encoding="utf-8")  # line-buffered

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
            self._jsonl = open(self.jsonl_path, "a", buffering=1, encoding="utf-8")
        for name, value in values.items():
            self._tensorboard.add_scalar(name, value, step=step)
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")

    def flush(self) -> None:
        if self.enabled:
            self._tensorboard.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tensorboard.close()
            self._jsonl.close()
            self.enabled = False
