"""A finished run in one JSON file: what `mvcl-pretrain --summary` and every sweep cell write.

``run_summary`` gathers the last step, the wall time, the last logged training loss, the
evaluation results and the whole config, with the facts of the machine that ran it (JAX version,
CPU count, load average at the end: a run's wall time means little without them). Results
committed under ``experiments/results/`` come from these files, so a figure there is reproduced
by rerunning the command that wrote them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
from etils import epath
from ml_collections import config_dict

from mvcl.train import storage, writers


def plain_config(config: config_dict.ConfigDict) -> dict[str, Any]:
    """The config as JSON-compatible nested dicts (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def last_train_loss(workdir: str | os.PathLike) -> float | None:
    """The last ``train/loss`` the run logged in ``metrics.jsonl`` (None if there is none)."""
    path = epath.Path(workdir) / writers.METRICS_FILE
    if not path.is_file():
        return None
    losses = [
        record["train/loss"]
        for record in map(json.loads, path.read_text(encoding="utf-8").splitlines())
        if "train/loss" in record
    ]
    return losses[-1] if losses else None


def run_summary(
    config: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    out: Mapping[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The summary of a run that `mvcl.train.train_and_evaluate` returned ``out`` for, after
    ``seconds`` of wall time."""
    return {
        "step": int(out["step"]),
        "seconds": seconds,
        "train_loss": last_train_loss(workdir),
        "eval": dict(out["eval"]),
        "config": plain_config(config),
        "machine": {
            "jax": jax.__version__,
            "devices": jax.device_count(),
            "processes": jax.process_count(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
        },
    }


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes ``value`` as JSON atomically: a killed run leaves no file or a complete one (a
    local file or a bucket's object, `mvcl.train.storage`).

    Raises:
      WorkdirError: ``path`` has an unsupported scheme.
    """
    path = storage.resolve(path, "the file")
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(path, json.dumps(value, indent=1))
