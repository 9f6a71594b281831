"""Plots of a sweep (PNG, matplotlib without pyplot: no global state, no display needed).

Each function takes a `mvcl.studies.report.seed_means` table (or loss-cost rows, or learning
curves), draws one figure and returns it; `save` writes it. Error bars and bands are the
standard deviation over seeds.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator, ScalarFormatter

from mvcl import losses
from mvcl._deprecation import renamed
from mvcl.studies import report
from mvcl.train import storage

ACCURACIES = (("backbone/linear_probe", "linear probe"), ("backbone/knn", "kNN"))
Table = Sequence[Mapping[str, Any]]


def color(loss: str) -> str:
    """The loss's colour, the same in every plot (``C0``..``C9`` in registry order)."""
    return f"C{losses.NAMES.index(loss) % 10}" if loss in losses.NAMES else "k"


def _lines(
    ax: Axes, table: Table, metric: str, x: str, *, scale: float = 1.0, suffix: str = "", **fixed
) -> int:
    """One line per loss of ``metric`` against ``x`` over the rows matching ``fixed``; lines of a
    single point are left out when ``x`` is the batch size. Returns the number drawn."""
    drawn = 0
    for loss, (xs, ys, es) in report.series(table, metric, x, **fixed).items():
        if x == "batch_size" and len(xs) < 2:
            continue
        ax.errorbar(
            xs,
            [scale * y for y in ys],
            yerr=[scale * e for e in es],
            marker="o",
            capsize=3,
            color=color(loss),
            label=loss + suffix,
        )
        drawn += 1
    return drawn


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _ticks(ax: Axes, values: Sequence[float], *, log: bool = False) -> None:
    """Major ticks at exactly ``values``, written plainly (log axes: base 2, no minor ticks)."""
    if log:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sorted(set(values)))
    ax.xaxis.set_major_formatter(ScalarFormatter())


def _finish(fig: Figure, title: str) -> Figure:
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _views_batch_size(table: Table) -> int | None:
    """The batch size of the views study: the one with the most rows."""
    sizes = [r["batch_size"] for r in table]
    return max(set(sizes), key=sizes.count) if sizes else None


def accuracy_vs_views(table: Table, title: str = "") -> Figure:
    """Test accuracy (linear probe, kNN; %) against V, one line per loss; raw pixels dashed."""
    fig = Figure(figsize=(10, 4))
    batch_size = _views_batch_size(table)
    for ax, (metric, label) in zip(fig.subplots(1, 2), ACCURACIES):
        if not _lines(ax, table, metric, "views", scale=100, batch_size=batch_size):
            _no_data(ax, f"no {metric} (evaluation off)")
        pixels = metric.replace("backbone", "pixels")
        if table and pixels in table[0]:
            ax.axhline(100 * table[0][pixels], color="gray", linestyle="--", label="raw pixels")
        _ticks(ax, [r["views"] for r in table])
        ax.set(
            xlabel="views V", ylabel=f"{label} accuracy (%)", title=f"{label}, batch {batch_size}"
        )
    return _finish(fig, title)


def effective_rank_vs_views(table: Table, title: str = "") -> Figure:
    """Effective rank (RankMe) of backbone features and of projections against V, per loss."""
    fig = Figure(figsize=(10, 4))
    batch_size = _views_batch_size(table)
    for ax, features in zip(fig.subplots(1, 2), ("backbone", "projector")):
        metric = f"{features}/effective_rank"
        if not _lines(ax, table, metric, "views", batch_size=batch_size):
            _no_data(ax, f"no {metric} (evaluation off)")
        _ticks(ax, [r["views"] for r in table])
        ax.set(xlabel="views V", ylabel="effective rank", title=f"{features}, batch {batch_size}")
    return _finish(fig, title)


def accuracy_vs_batch_size(table: Table, title: str = "") -> Figure:
    """Test accuracy (%) against the batch size, one line per loss and V that has more than one
    batch size (log2 x axis)."""
    fig = Figure(figsize=(10, 4))
    for ax, (metric, label) in zip(fig.subplots(1, 2), ACCURACIES):
        drawn = sum(
            _lines(ax, table, metric, "batch_size", scale=100, suffix=f", V={v}", views=v)
            for v in sorted({r["views"] for r in table})
        )
        if drawn:
            _ticks(ax, [r["batch_size"] for r in table], log=True)
        else:
            _no_data(ax, f"no {metric} at two batch sizes")
        ax.set(xlabel="batch size (images)", ylabel=f"{label} accuracy (%)", title=label)
    return _finish(fig, title)


def loss_cost(rows: Table, title: str = "") -> Figure:
    """Forward+backward time and compiled temporary memory of each loss against N·V (log-log),
    one line per loss and N (a line shows the cost of adding views at a fixed batch)."""
    fig = Figure(figsize=(11, 4.5))
    time_ax, memory_ax = fig.subplots(1, 2)
    styles = dict(zip(sorted({r["n"] for r in rows}), ("-", "--", ":", "-.")))
    for loss in dict.fromkeys(r["loss"] for r in rows):
        for n, style in styles.items():
            points = sorted(
                (r for r in rows if (r["loss"], r["n"]) == (loss, n)), key=lambda r: r["v"]
            )
            if not points:
                continue
            nv = [r["n"] * r["v"] for r in points]
            options = {
                "marker": "o",
                "color": color(loss),
                "linestyle": style,
                "label": f"{loss}, N={n}",
            }
            time_ax.plot(nv, [r["time_s"] for r in points], **options)
            if all(r["temp_bytes"] for r in points):
                memory_ax.plot(nv, [r["temp_bytes"] / 2**20 for r in points], **options)
    time_ax.set(xlabel="N·V", ylabel="seconds (forward + backward)", title="time")
    memory_ax.set(xlabel="N·V", ylabel="MiB", title="compiled temporary memory")
    for ax in (time_ax, memory_ax):
        if ax.lines:
            ax.set_yscale("log")
            _ticks(ax, [r["n"] * r["v"] for r in rows], log=True)
        else:
            _no_data(ax, "no loss costs")
    _finish(fig, title)
    for ax in (time_ax, memory_ax):
        if ax.lines:
            ax.legend(fontsize=6, ncol=2)
    return fig


def learning_curves(curves: Table, title: str = "") -> Figure | None:
    """One panel per metric of `mvcl.studies.report.learning_curves` rows: the seed mean
    against the step, one line per (loss, V, batch size), coloured by loss, with a band of ±1
    standard deviation over the seeds (kNN accuracies in %). None if there are no curves."""
    metrics = list(dict.fromkeys(c["metric"] for c in curves))
    if not metrics:
        return None
    columns = min(2, len(metrics))
    rows = -(-len(metrics) // columns)
    fig = Figure(figsize=(5.5 * columns, 4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    styles = ("-", "--", ":", "-.")
    views = sorted({c["views"] for c in curves})
    batch_sizes = {c["batch_size"] for c in curves}
    for ax, metric in zip(axes, metrics):
        scale = 100.0 if "knn" in metric else 1.0
        for c in (c for c in curves if c["metric"] == metric):
            mean = [scale * m for m in c["mean"]]
            std = [scale * s for s in c["std"]]
            label = f"{c['loss']}, V={c['views']}"
            if len(batch_sizes) > 1:
                label += f", batch {c['batch_size']}"
            style = styles[views.index(c["views"]) % len(styles)]
            ax.plot(c["steps"], mean, color=color(c["loss"]), linestyle=style, label=label)
            if c["seeds"] > 1:
                low = [m - s for m, s in zip(mean, std)]
                high = [m + s for m, s in zip(mean, std)]
                ax.fill_between(c["steps"], low, high, color=color(c["loss"]), alpha=0.15)
        name = metric.removeprefix("online/")
        ylabel = "kNN accuracy (%)" if "knn" in metric else "effective rank"
        ax.set(xlabel="step", ylabel=ylabel, title=name)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    return _finish(fig, title)


def save(fig: Figure, path: str | os.PathLike) -> None:
    """Writes ``fig`` as a PNG at 120 dpi (a local file or a bucket's object)."""
    buffer = io.BytesIO()  # (matplotlib writes local files only)
    fig.savefig(buffer, dpi=120, format="png")
    storage.write_bytes(epath.Path(os.fspath(path)), buffer.getvalue())


kernel_cost = renamed(loss_cost, "mvcl.studies.plots.kernel_cost")
