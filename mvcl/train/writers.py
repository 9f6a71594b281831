"""Metric logging of a run: TensorBoard event files and a JSON-lines file in the workdir.

``<workdir>/metrics.jsonl`` gets one line per call, ``{"step": s, "time": unix seconds, name:
value, ...}``, written through at once (a crash loses no line); a resumed run appends, so steps
redone after a restart appear again (keep the last line of a step). TensorBoard
(``tensorboard --logdir <workdir>``) shows the same scalars.

TensorBoard files are written with tensorboard's own framework-free ``tensorboard.summary.Writer``:
clu's ``metric_writers`` would be the flax-examples choice, but its package imports TensorFlow
unconditionally, which mvcl does not otherwise need. The method names follow clu's
``MetricWriter`` (``write_scalars``, ``flush``, ``close``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import tensorboard.summary

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Writes scalars to TensorBoard and ``metrics.jsonl`` in ``logdir``.

    Only one process of a multi-process run should write: pass ``enabled=False`` on the others
    and every call is a no-op.
    """

    def __init__(self, logdir: str | os.PathLike, *, enabled: bool = True):
        self.enabled = enabled
        self.jsonl_path = os.path.join(logdir, METRICS_FILE)
        if enabled:
            os.makedirs(logdir, exist_ok=True)
            self._tensorboard = tensorboard.summary.Writer(os.fspath(logdir))
            self._jsonl = open(self.jsonl_path, "a", buffering=1, encoding="utf-8")  # line-buffered

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Logs ``scalars`` (name -> number) at ``step``; names may contain "/" for grouping."""
        if not self.enabled:
            return
        values = {name: float(value) for name, value in scalars.items()}
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
