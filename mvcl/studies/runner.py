"""Running a sweep: every cell one pretraining run + evaluation, one after another, resumable.

Layout of a sweep's workdir::

    <workdir>/cells/<cell>/            the cell's run (`mvcl.train.train_and_evaluate` workdir:
                                       config.json, metrics.jsonl, checkpoints/)
    <workdir>/cells/<cell>/result.json written last: the cell is done when it exists
    <workdir>/cells/<cell>/embeddings.npz  test-set features of the final encoder (real data only)

With an ``archive`` directory (``mvcl-sweep --outdir``), every done cell's ``result.json`` is
also copied to ``<archive>/cells/<cell>/result.json``, and a cell found there counts as done.
Those few-kilobyte files are meant to be committed with the results: a sweep too long for one
machine's session continues on another machine, with a fresh workdir, from the cells done
before. (A cell's embeddings and checkpoints stay in the workdir: megabytes per cell.)

The workdir and the archive may be bucket paths (``gs://``, `mvcl.train.storage`): every file
here is read and written through ``etils.epath``.

A rerun skips done cells; an interrupted cell resumes from its own checkpoints (the trainer
resumes from its workdir). A done cell whose stored config differs from the one the sweep config
now gives is an error, so a changed sweep never mixes old and new results silently.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from etils import epath
from ml_collections import config_dict
from tqdm import tqdm

from mvcl import data, evaluation, train
from mvcl._deprecation import renamed
from mvcl.studies import grid
from mvcl.train import storage
from mvcl.train.workdir import (
    last_train_loss,  # noqa: F401 (runner.last_train_loss, as before)
    plain_config,
    run_summary,
    write_json,
)

CELLS_DIR = "cells"
RESULT_FILE = "result.json"
EMBEDDINGS_FILE = "embeddings.npz"
# Fields that may change between a cell's runs without changing its result. The online
# evaluation's (mvcl.train.online_eval) only add online/* values to the cell's metrics.jsonl:
# cells done before they existed stay done.
RERUN_SAFE_FIELDS = (
    "dataset.data_dir",
    "progress_bar",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "eval.every_steps",
    "eval.online_train_examples",
    "eval.online_test_examples",
    "eval.collapse_check",
    "eval.collapse_rank_fraction",
    "eval.collapse_std",
)

TrainFn = Callable[[config_dict.ConfigDict, str], Mapping[str, Any]]


@dataclasses.dataclass
class SweepRun:
    """What `run_sweep` did.

    Attributes:
      results: the ``result.json`` contents of every done cell, in grid order.
      trained: the cells trained (or resumed) by this call.
      complete: False if a cell was preempted (SIGTERM) and the sweep stopped early.
    """

    results: list[dict[str, Any]]
    trained: list[grid.Cell]
    complete: bool


def cell_dir(workdir: str | os.PathLike, cell: grid.Cell) -> epath.Path:
    """The run directory of ``cell`` in the sweep's ``workdir`` (a local or a bucket path).

    Raises:
      WorkdirError: ``workdir`` has an unsupported scheme (`mvcl.train.storage`).
    """
    storage.check_scheme(workdir)
    return epath.Path(os.fspath(workdir)) / CELLS_DIR / cell.name


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _result_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened fields of a plain config that decide its result: the multi-crop settings
    count only when multi-crop is on (configs stored before it existed have none)."""
    flat = _flatten(config)
    if flat.get("augment.multicrop.num_small", 0):
        return flat
    return {k: v for k, v in flat.items() if not k.startswith("augment.multicrop.")}


def config_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted names of the fields that differ between two plain configs (`RERUN_SAFE_FIELDS`
    excepted, and multi-crop settings while it is off)."""
    a, b = _result_fields(stored), _result_fields(current)
    return sorted(
        k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RERUN_SAFE_FIELDS
    )


def read_result(directory: epath.Path) -> dict[str, Any] | None:
    """The cell's ``result.json``, or None if the cell is not done."""
    path = directory / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def embed_test_split(
    config: config_dict.ConfigDict, directory: epath.Path
) -> dict[str, np.ndarray]:
    """Backbone features, projections and labels of the centre views of the test split."""
    ds = config.dataset
    images, labels = data.load_numpy(ds.name, ds.test_split, ds.data_dir, image_size=ds.image_size)
    _, variables = train.restore_variables(directory, config)
    backbone, projector = evaluation.embed(
        train.build_model(config),
        variables,
        images,
        crop_size=config.augment.crop_size,
        batch_size=config.eval.batch_size,
    )
    return {"backbone": backbone, "projector": projector, "labels": labels}


def run_cell(
    config: config_dict.ConfigDict,
    cell: grid.Cell,
    directory: epath.Path,
    *,
    train_fn: TrainFn,
    save_embeddings: bool,
) -> dict[str, Any] | None:
    """Trains and evaluates one cell; writes and returns its result (None if preempted)."""
    start = time.perf_counter()
    out = train_fn(config, os.fspath(directory))
    if out["preempted"]:
        return None
    seconds = time.perf_counter() - start
    result = {
        "cell": dataclasses.asdict(cell),
        **run_summary(config, directory, out, seconds),
    }
    embeddings = (
        embed_test_split(config, directory) if save_embeddings and config.eval.enabled else None
    )
    if jax.process_index() == 0:
        if embeddings is not None:
            buffer = io.BytesIO()  # (numpy writes local files only; a bucket's is one object)
            np.savez_compressed(buffer, **embeddings)
            storage.write_bytes(directory / EMBEDDINGS_FILE, buffer.getvalue())
        write_json(directory / RESULT_FILE, result)
    return result


def cell_configs(sweep: config_dict.ConfigDict) -> dict[grid.Cell, config_dict.ConfigDict]:
    """Every cell's config, in grid order, each checked (`mvcl.train.validate_config`)."""
    configs = {}
    for cell in grid.cells(sweep):
        config = grid.cell_config(sweep, cell)
        config.progress_bar = bool(sweep.cell_progress_bar)
        train.validate_config(config)
        configs[cell] = config
    return configs


def _done(configs, workdir, archive) -> dict[grid.Cell, dict[str, Any]]:
    """The results of the cells done already (in the workdir or the archive), each checked
    against its config: a cell run with another config is an error."""
    done = {}
    for cell, config in configs.items():
        directory = cell_dir(workdir, cell)
        result = read_result(directory)
        if result is None and archive is not None:
            result = read_result(cell_dir(archive, cell))
            directory = cell_dir(archive, cell) if result is not None else directory
        if result is not None:
            changes = config_changes(result["config"], plain_config(config))
            if changes:
                raise ValueError(
                    f"cell {cell.name} in {directory} was run with a different config "
                    f"(fields {', '.join(changes)}); use another workdir or delete the cell"
                )
            done[cell] = result
    return done


def done_results(
    sweep: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    *,
    archive: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """The results of the cells of ``sweep`` done so far (in the workdir or the archive), in
    grid order, without running anything: what a report of an unfinished sweep is made from.

    Raises:
      ValueError: a cell config is invalid, or a done cell was run with a different config.
    """
    return list(_done(cell_configs(sweep), workdir, archive).values())


def run_sweep(
    sweep: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    *,
    archive: str | os.PathLike | None = None,
    train_fn: TrainFn | None = None,
    progress: bool = True,
) -> SweepRun:
    """Runs the cells of ``sweep`` that are not done yet, in grid order.

    Every cell config is built and checked (`mvcl.train.validate_config`) before the first run,
    so a bad grid fails at once. A cell's trainer progress bar is off unless
    ``sweep.cell_progress_bar``; a bar over the cells shows the sweep's progress.

    Args:
      sweep: a sweep config (``configs/sweeps/*.py``).
      workdir: the sweep's directory (see the module docstring).
      archive: where done cells' results are also kept and looked up (see the module
        docstring); None: the workdir only.
      train_fn: ``(config, workdir) -> {"step", "preempted", "eval"}``; default
        `mvcl.train.train_and_evaluate`.
      progress: show the bar over the cells.

    Raises:
      ValueError: a cell config is invalid, or a done cell was run with a different config.
    """
    train_fn = train_fn or train.train_and_evaluate
    configs = cell_configs(sweep)
    # Checked before anything runs or the bar prints, so that a changed config is a clean error.
    done = _done(configs, workdir, archive)

    results, trained = [], []
    # Counted by hand (tqdm over an iterable only syncs its count when it prints, so cells found
    # done in a burst showed as 0 done).
    bar = tqdm(
        total=len(configs),
        desc=sweep.name,
        unit="cell",
        disable=not progress or jax.process_index() != 0,
    )
    try:  # closed on every way out, so that an error starts on a line of its own
        for cell, config in configs.items():
            if cell in done:
                _archive(done[cell], archive, cell)
                results.append(done[cell])
                bar.update()
                continue
            bar.set_postfix_str(cell.name)
            result = run_cell(
                config,
                cell,
                cell_dir(workdir, cell),
                train_fn=train_fn,
                save_embeddings=sweep.save_embeddings,
            )
            if result is None:
                return SweepRun(results, trained, complete=False)
            _archive(result, archive, cell)
            results.append(result)
            trained.append(cell)
            bar.update()
    finally:
        bar.close()
    return SweepRun(results, trained, complete=True)


def _archive(result: dict[str, Any], archive: str | os.PathLike | None, cell: grid.Cell) -> None:
    """Copies a done cell's result into the archive unless it is there already."""
    if archive is None or jax.process_index() != 0:
        return
    if read_result(cell_dir(archive, cell)) != result:
        write_json(cell_dir(archive, cell) / RESULT_FILE, result)


test_embeddings = renamed(embed_test_split, "mvcl.studies.runner.test_embeddings")
