"""A sweep's outputs in one directory: CSV, markdown report, PNG plots, loss costs, embeddings.

results.csv                   one row per cell (`mvcl.studies.report.rows`)
results.md                    seed means, targets, the geometric headline
accuracy_vs_views.png         linear probe and kNN against V, per loss
effective_rank_vs_views.png   effective rank of backbone and projector against V, per loss
accuracy_vs_batch_size.png    accuracies against the batch size
loss_cost.png, loss_cost.json   loss forward+backward time and memory against N·V (named
                              kernel_cost.* in 0.1.0)
learning_curves.png, learning_curves.json   online kNN and effective rank against the step, per
                              cell (seed mean ± std), from the cells' metrics.jsonl; only when a
                              cell logged them (`mvcl.train.online_eval`)
embeddings.npz                test-set features of every cell (float16), for notebooks
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from ml_collections import config_dict

from mvcl._deprecation import renamed, warn_moved
from mvcl.studies import grid, loss_cost, plots, report, runner
from mvcl.train import storage
from mvcl.train.writers import METRICS_FILE

LOSS_COST_FILE = "loss_cost.json"
LOSS_COST_FIGURE = "loss_cost.png"
EARLIER_LOSS_COST_FILE = "kernel_cost.json"
"""The name of `LOSS_COST_FILE` in 0.1.0: a workdir's timing cached under it is still used (and
written again under the new name) until 0.2.0."""


def loss_cost_settings(sweep: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """``sweep.loss_cost``, or its name of 0.1.0, ``kernel_cost``, with a FutureWarning until
    0.2.0, in a sweep config of one's own built without `mvcl.configs.sweeps.common.sweep_config`
    (one built with it answers to the old name itself: `mvcl.configs.sweeps.common.SweepConfig`).
    """
    if "loss_cost" not in sweep and "kernel_cost" in sweep:
        warn_moved("config.kernel_cost", "config.loss_cost", category=FutureWarning)
        return sweep["kernel_cost"]
    return sweep.loss_cost


def loss_cost_rows(
    sweep: config_dict.ConfigDict, workdir: str | os.PathLike
) -> list[dict[str, Any]]:
    """Loss costs (time and memory) of the sweep's losses and views: the benchmark's JSON if it
    exists, else timed here once on ``sweep.loss_cost.ns`` instances and cached in the workdir
    (`LOSS_COST_FILE`; a cache of 0.1.0, `EARLIER_LOSS_COST_FILE`, is used too)."""
    return _loss_cost_rows(loss_cost_settings(sweep), sweep, workdir)


def _loss_cost_rows(
    settings: config_dict.ConfigDict, sweep: config_dict.ConfigDict, workdir: str | os.PathLike
) -> list[dict[str, Any]]:
    names = list(dict.fromkeys(cell.loss for cell in grid.cells(sweep)))
    views = sorted({cell.views for cell in grid.cells(sweep)})
    bench = loss_cost.from_bench(settings.bench_json, settings.backend)
    if bench:
        return [r for r in bench if r["loss"] in names]
    cache = epath.Path(os.fspath(workdir)) / LOSS_COST_FILE
    earlier = cache.parent / EARLIER_LOSS_COST_FILE
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    if earlier.is_file():
        rows = json.loads(earlier.read_text(encoding="utf-8"))
        storage.write_text(cache, json.dumps(rows, indent=1))  # the new name from now on
        return rows
    rows = loss_cost.time_losses(
        names, views, settings.ns, d=settings.d, backend=settings.backend, repeats=settings.repeats
    )
    cache.parent.mkdir(parents=True, exist_ok=True)  # a report from archived cells only
    storage.write_text(cache, json.dumps(rows, indent=1))
    return rows


def collect_embeddings(
    results: Sequence[Mapping[str, Any]], workdir: str | os.PathLike, path: str | os.PathLike
) -> bool:
    """Writes every cell's test embeddings into one compressed npz (float16 features), keys
    ``<cell>/backbone``, ``<cell>/projector`` and ``labels``; False if no cell has any."""
    arrays: dict[str, np.ndarray] = {}
    for result in results:
        cell = grid.Cell(**result["cell"])
        file = runner.cell_dir(workdir, cell) / runner.EMBEDDINGS_FILE
        if not file.is_file():
            continue
        with np.load(io.BytesIO(file.read_bytes())) as saved:
            arrays["labels"] = saved["labels"]
            for part in ("backbone", "projector"):
                arrays[f"{cell.name}/{part}"] = saved[part].astype(np.float16)
    if arrays:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        storage.write_bytes(epath.Path(os.fspath(path)), buffer.getvalue())
    return bool(arrays)


def cell_curves(
    results: Sequence[Mapping[str, Any]], workdir: str | os.PathLike
) -> list[dict[str, Any]]:
    """`report.learning_curves` of the cells' ``metrics.jsonl`` in ``workdir``; cells without
    one (archived only) or without online values are skipped."""
    cells = []
    for result in results:
        cell = grid.Cell(**result["cell"])
        curve = report.read_curve(runner.cell_dir(workdir, cell) / METRICS_FILE)
        if curve:
            cells.append((result["cell"], curve))
    return report.learning_curves(cells)


def write_outputs(
    sweep: config_dict.ConfigDict,
    results: Sequence[Mapping[str, Any]],
    workdir: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    cells: int | None = None,
) -> list[epath.Path]:
    """Writes the files of the module docstring into ``outdir``; returns their paths.

    ``cells``: the sweep's number of cells when ``results`` are those of an unfinished sweep
    (the report's title then says how many are done)."""
    outdir = storage.resolve(outdir, "--outdir")
    outdir.mkdir(parents=True, exist_ok=True)
    table = report.rows(results)
    means = report.seed_means(table)
    title = f"Sweep {sweep.name}"
    if cells is not None and len(results) < cells:
        title += f" ({len(results)} of {cells} cells done)"
    targets = sweep.targets.to_dict() if sweep.get("targets") else None

    written = [outdir / "results.csv", outdir / "results.md"]
    report.write_csv(table, written[0])
    storage.write_text(written[1], report.markdown(table, title=title, targets=targets))
    figures = {
        "accuracy_vs_views.png": plots.accuracy_vs_views(means, title),
        "effective_rank_vs_views.png": plots.effective_rank_vs_views(means, title),
        "accuracy_vs_batch_size.png": plots.accuracy_vs_batch_size(means, title),
    }
    settings = loss_cost_settings(sweep)
    if settings.enabled:
        rows = _loss_cost_rows(settings, sweep, workdir)
        storage.write_text(outdir / LOSS_COST_FILE, json.dumps(rows, indent=1))
        written.append(outdir / LOSS_COST_FILE)
        figures[LOSS_COST_FIGURE] = plots.loss_cost(rows, f"{title}: loss cost")
    curves = cell_curves(results, workdir)
    if curves:
        storage.write_text(outdir / "learning_curves.json", json.dumps(curves, indent=1))
        written.append(outdir / "learning_curves.json")
        figures["learning_curves.png"] = plots.learning_curves(curves, f"{title}: learning curves")
    for name, fig in figures.items():
        plots.save(fig, outdir / name)
        written.append(outdir / name)
    if collect_embeddings(results, workdir, outdir / "embeddings.npz"):
        written.append(outdir / "embeddings.npz")
    return written


kernel_rows = renamed(loss_cost_rows, "mvcl.studies.outputs.kernel_rows")
