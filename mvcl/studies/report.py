"""Result tables of a sweep: one flat row per cell, a CSV, seed means and a markdown report.

A row holds the cell (``loss``, ``views``, ``batch_size``, ``seed``), the run (``step``,
``seconds``, ``train_loss``) and every evaluation value (``backbone/linear_probe``,
``projector/effective_rank``, ... as in `mvcl.evaluation.evaluate`; none for fake data).

Learning curves (`read_curve`, `learning_curves`): the online evaluation's values
(`mvcl.train.online_eval`, ``online/*`` in each cell's ``metrics.jsonl``) against the step,
averaged over the seeds of each (loss, views, batch_size).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath

from mvcl import losses
from mvcl.train import storage

KEYS = ("loss", "views", "batch_size")
"""What a group of seeds shares."""
RUN_FIELDS = ("loss", "views", "batch_size", "seed", "step", "seconds", "train_loss")
PAIRWISE_BASELINES = tuple(name for name, spec in losses.SPECS.items() if spec.pair_aggregate)
"""The multi-view losses built from pairs of views, pwe, avg and pvc (the paper's baselines of
MV-DHEL; each record's ``pair_aggregate``)."""


def rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per ``result.json`` of `mvcl.studies.runner`."""
    return [
        {
            **r["cell"],
            "step": r["step"],
            "seconds": r["seconds"],
            "train_loss": r["train_loss"],
            **r["eval"],
        }
        for r in results
    ]


def columns(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """`RUN_FIELDS` then every other key of ``table``, sorted."""
    extra = sorted({k for row in table for k in row} - set(RUN_FIELDS))
    return list(RUN_FIELDS) + extra


def write_csv(table: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Writes the rows with `columns` as header; missing values are empty (a local file or a
    bucket's object, `mvcl.train.storage`)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns(table), restval="")
    writer.writeheader()
    writer.writerows(table)
    storage.write_text(epath.Path(os.fspath(path)), text.getvalue())


def seed_means(table: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (loss, views, batch_size): the mean of every number over seeds, its sample
    standard deviation (``ddof=1``; 0 for one seed) as ``<key>_std`` and the number of seeds as
    ``seeds``; first-seen order.

    The sample standard deviation, not the population one: with the 3 seeds of a sweep the
    latter understates the spread by a factor sqrt(2/3)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in table:
        groups.setdefault(tuple(row[k] for k in KEYS), []).append(row)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(KEYS, key), seeds=len(members))
        for name in columns(members):
            if name in (*KEYS, "seed"):
                continue
            values = [m[name] for m in members if m.get(name) is not None]
            if values:
                row[name] = float(np.mean(values))
                row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return out


def series(
    table: Sequence[Mapping[str, Any]], metric: str, x: str, **fixed: Any
) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per loss: (x values, means, stds) of ``metric`` over rows matching ``fixed``, x sorted.

    ``table`` is a `seed_means` table; rows without ``metric`` are left out.
    """
    out: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for row in sorted(table, key=lambda r: r[x]):
        if metric not in row or any(row[k] != v for k, v in fixed.items()):
            continue
        xs, ys, es = out.setdefault(row["loss"], ([], [], []))
        xs.append(row[x])
        ys.append(row[metric])
        es.append(row.get(f"{metric}_std", 0.0))
    return out


def views_study_first(table: Sequence[Mapping[str, Any]]) -> Callable[[Mapping[str, Any]], tuple]:
    """A sort key: the batch size with the most rows first (the views study), then the others
    in increasing order; within one, losses in their order in the views study, then V."""
    sizes = [row["batch_size"] for row in table]
    main = max(set(sizes), key=sizes.count) if sizes else None
    first_seen = [r["loss"] for r in table if r["batch_size"] == main] + [r["loss"] for r in table]
    order = {loss: i for i, loss in enumerate(dict.fromkeys(first_seen))}
    return lambda row: (
        row["batch_size"] != main,
        row["batch_size"],
        order[row["loss"]],
        row["views"],
    )


def claims(
    table: Sequence[Mapping[str, Any]], *, features: str = "backbone"
) -> list[tuple[str, bool]]:
    """The paper's geometric headline, checked on a `seed_means` table, as (statement, holds).

    For the effective rank of ``features``: MV-DHEL's grows with V (each V larger than the one
    before), and at every V >= 4 it exceeds the largest of the pairwise baselines
    (`PAIRWISE_BASELINES`) present. Empty if MV-DHEL or the metric is missing.
    """
    metric = f"{features}/effective_rank"
    out = []
    batch_sizes = dict.fromkeys(
        r["batch_size"] for r in sorted(table, key=views_study_first(table))
    )
    for batch_size in batch_sizes:
        by_loss = series(table, metric, "views", batch_size=batch_size)
        if "mv_dhel" not in by_loss:
            continue
        views, ranks, _ = by_loss["mv_dhel"]
        if len(views) > 1:
            grows = all(b > a for a, b in zip(ranks, ranks[1:]))
            steps = ", ".join(f"{r:.1f}" for r in ranks)
            out.append(
                (
                    f"batch {batch_size}: MV-DHEL's {features} effective rank grows with V "
                    f"(V = {', '.join(map(str, views))}: {steps})",
                    grows,
                )
            )
        for v, rank in zip(views, ranks):
            rivals = {
                loss: dict(zip(by_loss[loss][0], by_loss[loss][1])).get(v)
                for loss in PAIRWISE_BASELINES
                if loss in by_loss
            }
            rivals = {k: r for k, r in rivals.items() if r is not None}
            if v < 4 or not rivals:
                continue
            best = max(rivals, key=rivals.get)
            out.append(
                (
                    f"batch {batch_size}, V = {v}: MV-DHEL's {features} effective rank "
                    f"({rank:.1f}) > the best pairwise baseline's ({best}: {rivals[best]:.1f})",
                    rank > rivals[best],
                )
            )
    return out


RESOLVED = ("MV-DHEL ahead", "MV-DHEL behind")
"""The verdicts of `comparisons` that say the seeds resolve the difference."""

COMPARED = (
    "backbone/linear_probe",
    "backbone/knn",
    "projector/linear_probe",
    "projector/knn",
)
"""The accuracies `comparisons` and `view_comparisons` judge by default: those of the backbone
features (the usual linear evaluation) and of the projections, which the losses act on
directly."""


def _judge(a: Mapping[str, Any], b: Mapping[str, Any], metric: str, labels: tuple[str, str]) -> str:
    """``labels[0]`` if ``a``'s ``metric`` is above ``b``'s beyond both ±1-standard-deviation
    intervals, ``labels[1]`` if below, "tie" if the intervals overlap, "one seed" if either side
    has a single seed (no spread to judge by)."""
    if min(a["seeds"], b["seeds"]) < 2:
        return "one seed"
    delta = a[metric] - b[metric]
    if abs(delta) > a.get(f"{metric}_std", 0.0) + b.get(f"{metric}_std", 0.0):
        return labels[0] if delta > 0 else labels[1]
    return "tie"


def comparisons(
    means: Sequence[Mapping[str, Any]],
    *,
    metrics: Sequence[str] = COMPARED,
    min_views: int = 4,
) -> list[dict[str, Any]]:
    """MV-DHEL against every other loss of the same cell (batch size and V >= ``min_views``), on
    a `seed_means` table: one dict per (batch size, V, metric, other loss).

    Each holds both means and standard deviations, ``delta`` (MV-DHEL's mean minus the other's)
    and a ``verdict``: ``"MV-DHEL ahead"`` / ``"MV-DHEL behind"`` when the two ±1-standard-
    deviation intervals do not overlap (|delta| > std_dhel + std_other), ``"tie"`` when they do,
    and ``"one seed"`` when either side has a single seed (no spread to judge by).
    """
    out = []
    cells = {(r["batch_size"], r["views"], r["loss"]): r for r in means}
    for (batch_size, views, loss), rival in cells.items():
        dhel = cells.get((batch_size, views, "mv_dhel"))
        if loss == "mv_dhel" or dhel is None or views < min_views:
            continue
        for metric in metrics:
            if metric not in dhel or metric not in rival:
                continue
            delta = dhel[metric] - rival[metric]
            verdict = _judge(dhel, rival, metric, RESOLVED)
            out.append(
                {
                    "batch_size": batch_size,
                    "views": views,
                    "metric": metric,
                    "loss": loss,
                    "mv_dhel": dhel[metric],
                    "mv_dhel_std": dhel.get(f"{metric}_std", 0.0),
                    "other": rival[metric],
                    "other_std": rival.get(f"{metric}_std", 0.0),
                    "seeds": min(dhel["seeds"], rival["seeds"]),
                    "delta": delta,
                    "verdict": verdict,
                }
            )
    return sorted(out, key=lambda c: (c["batch_size"], c["views"], c["metric"], c["loss"]))


MORE_VIEWS = ("more views ahead", "more views behind")
"""The verdicts of `view_comparisons` that say the seeds resolve the difference."""


def view_comparisons(
    means: Sequence[Mapping[str, Any]], *, metrics: Sequence[str] = COMPARED
) -> list[dict[str, Any]]:
    """Each loss at each V against itself at the next smaller V of the grid (same batch size),
    on a `seed_means` table: does adding views help? One dict per (batch size, loss, metric,
    pair of view counts) with both means and standard deviations, ``delta`` (more views minus
    fewer) and a ``verdict`` by the rule of `comparisons` (``MORE_VIEWS``, "tie", "one seed")."""
    out = []
    by_loss: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in sorted(means, key=lambda r: r["views"]):
        by_loss.setdefault((row["batch_size"], row["loss"]), []).append(row)
    for (batch_size, loss), cells in by_loss.items():
        for fewer, more in zip(cells, cells[1:]):
            for metric in metrics:
                if metric not in fewer or metric not in more:
                    continue
                out.append(
                    {
                        "batch_size": batch_size,
                        "loss": loss,
                        "metric": metric,
                        "views": (fewer["views"], more["views"]),
                        "fewer": fewer[metric],
                        "fewer_std": fewer.get(f"{metric}_std", 0.0),
                        "more": more[metric],
                        "more_std": more.get(f"{metric}_std", 0.0),
                        "seeds": min(fewer["seeds"], more["seeds"]),
                        "delta": more[metric] - fewer[metric],
                        "verdict": _judge(more, fewer, metric, MORE_VIEWS),
                    }
                )
    return sorted(out, key=lambda c: (c["batch_size"], c["loss"], c["metric"], c["views"]))


def _verdict_table(title: str, intro: str, columns_: Sequence[str], rows_: list[str]) -> list[str]:
    """Markdown lines of a verdict section: heading, one sentence, a table; nothing if no rows."""
    if not rows_:
        return []
    header = "| " + " | ".join(columns_) + " |"
    return [f"## {title}", "", intro, "", header, "|" + "---|" * len(columns_), *rows_]


def view_comparison_lines(means: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: the `view_comparisons` table, or nothing if there is none."""
    rows_ = [
        f"| {c['batch_size']} | {c['loss']} | {c['metric']} "
        f"| {c['views'][0]} → {c['views'][1]} "
        f"| {_spread(100 * c['fewer'], 100 * c['fewer_std'], c['seeds'], 2)} "
        f"| {_spread(100 * c['more'], 100 * c['more_std'], c['seeds'], 2)} "
        f"| {100 * c['delta']:+.2f} | {c['verdict']} |"
        for c in view_comparisons(means)
    ]
    return _verdict_table(
        "Each loss with more views",
        "Each V against the next smaller V of the same loss, by the same rule.",
        ("batch", "loss", "metric", "V", "fewer views %", "more views %", "Δ (points)", "verdict"),
        rows_,
    )


def comparison_lines(means: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: the `comparisons` table, or nothing if there is none."""
    rows_ = [
        f"| {c['batch_size']} | {c['views']} | {c['metric']} "
        f"| {_spread(100 * c['mv_dhel'], 100 * c['mv_dhel_std'], c['seeds'], 2)} | {c['loss']} "
        f"| {_spread(100 * c['other'], 100 * c['other_std'], c['seeds'], 2)} "
        f"| {100 * c['delta']:+.2f} | {c['verdict']} |"
        for c in comparisons(means)
    ]
    return _verdict_table(
        "MV-DHEL against the other losses (V >= 4)",
        "Mean ± sample standard deviation over the seeds; a difference counts as resolved when "
        "the two ±1-standard-deviation intervals do not overlap, and as a tie when they do.",
        ("batch", "V", "metric", "MV-DHEL %", "other loss", "other %", "Δ (points)", "verdict"),
        rows_,
    )


def _spread(mean: float, std: float, seeds: int, digits: int) -> str:
    """``mean`` to ``digits`` decimals, ± its standard deviation when there is one (seeds > 1)."""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if seeds > 1 else "")


def seed_lines(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: every seed's backbone linear-probe and kNN accuracy, per cell."""
    lines = [
        "## Every seed",
        "",
        "| loss | V | batch | seeds | linear probe % per seed | kNN % per seed |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(seed_means(table), key=views_study_first(table)):
        members = sorted(
            (r for r in table if all(r[k] == row[k] for k in KEYS)), key=lambda r: r["seed"]
        )
        seeds = ", ".join(str(r["seed"]) for r in members)
        lines.append(
            f"| {row['loss']} | {row['views']} | {row['batch_size']} | {seeds} "
            f"| {_each_seed(members, 'backbone/linear_probe')} "
            f"| {_each_seed(members, 'backbone/knn')} |"
        )
    return lines


def _each_seed(members: Sequence[Mapping[str, Any]], key: str) -> str:
    return ", ".join(f"{100 * r[key]:.2f}" if key in r else "—" for r in members)


def _percent(row: Mapping[str, Any], key: str) -> str:
    if key not in row:
        return "—"
    return _spread(100 * row[key], 100 * row.get(f"{key}_std", 0.0), row["seeds"], 1)


def _number(row: Mapping[str, Any], key: str, digits: int = 1) -> str:
    if row.get(key) is None:
        return "—"
    return _spread(row[key], row.get(f"{key}_std", 0.0), row["seeds"], digits)


def markdown(
    table: Sequence[Mapping[str, Any]],
    *,
    title: str,
    targets: Mapping[str, Any] | None = None,
) -> str:
    """The sweep's report: accuracies and geometry per cell (seed means ± sample standard
    deviations), the raw-pixel baseline, the published targets next to the measured values (if
    ``targets``), every seed's accuracies (`seed_lines`, with several seeds), MV-DHEL against
    the other losses (`comparisons`), each loss with more views (`view_comparisons`), and
    `claims` on the projections (the embeddings the loss sees) and on the backbone features.

    ``targets`` (a sweep config's ``targets``) has ``views`` and, per entry besides it, one
    linear-probe accuracy (%) per view count, e.g. ``{"views": (2, 4), "mv_dhel": (87.4, 89.5),
    "best_baseline": (86.0, 88.7)}``.
    """
    means = sorted(seed_means(table), key=views_study_first(table))
    header = (
        "| loss | V | batch | seeds | linear probe % | kNN % | eff. rank (backbone) "
        "| eff. rank (projector) | alignment | uniformity | train loss | minutes |"
    )
    lines = [f"# {title}", "", header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in means:
        cells = [
            row["loss"],
            str(row["views"]),
            str(row["batch_size"]),
            str(row["seeds"]),
            _percent(row, "backbone/linear_probe"),
            _percent(row, "backbone/knn"),
            _number(row, "backbone/effective_rank"),
            _number(row, "projector/effective_rank"),
            _number(row, "projector/alignment", 3),
            _number(row, "projector/uniformity", 2),
            _number(row, "train_loss", 3),
            f"{row['seconds'] / 60:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Accuracies are on the test split, of the backbone features (linear probe: logistic "
        "regression on the standardised features, fitted by minibatch Adam; kNN: weighted, "
        "cosine; both in `mvcl.evaluation`); geometry of V augmented views of test images "
        "(alignment and uniformity of the projections).",
    ]
    pixels = [r for r in means if "pixels/linear_probe" in r]
    if pixels:
        lines += [
            "",
            f"Raw-pixel baseline: linear probe {100 * pixels[0]['pixels/linear_probe']:.1f}%, "
            f"kNN {100 * pixels[0]['pixels/knn']:.1f}%.",
        ]
    total = sum(row["seconds"] for row in table)
    lines += ["", f"Total run time of the cells: {total / 60:.1f} minutes."]
    if targets:
        lines += ["", *target_table(means, targets)]
    if any(row["seeds"] > 1 for row in means):
        lines += ["", *seed_lines(table)]
    for compared in (comparison_lines(means), view_comparison_lines(means)):
        if compared:
            lines += ["", *compared]
    checks = claims(means, features="projector") + claims(means, features="backbone")
    if checks:
        lines += ["", "## The paper's geometric headline at this scale", ""]
        lines += [f"- {'holds' if ok else 'does not hold'}: {text}" for text, ok in checks]
    return "\n".join(lines) + "\n"


def target_table(means: Sequence[Mapping[str, Any]], targets: Mapping[str, Any]) -> list[str]:
    """Markdown lines: published linear-probe targets and the measured MV-DHEL and best other
    loss at each V (measured cells only; "—" where the grid has none)."""
    views = list(targets["views"])
    lines = [
        "## Published linear-probe targets (%)",
        "",
        "| | " + " | ".join(f"V = {v}" for v in views) + " |",
        "|---|" + "---|" * len(views),
    ]
    for name, values in targets.items():
        if name != "views":
            lines.append(f"| {name} (paper) | " + " | ".join(f"{x:.1f}" for x in values) + " |")

    def measured(v: int, dhel: bool) -> str:
        found = [
            r
            for r in means
            if r["views"] == v and (r["loss"] == "mv_dhel") == dhel and "backbone/linear_probe" in r
        ]
        if not found:
            return "—"
        best = max(found, key=lambda r: r["backbone/linear_probe"])
        return f"{100 * best['backbone/linear_probe']:.1f}" + ("" if dhel else f" ({best['loss']})")

    lines.append("| mv_dhel (measured) | " + " | ".join(measured(v, True) for v in views) + " |")
    lines.append(
        "| best other loss (measured) | " + " | ".join(measured(v, False) for v in views) + " |"
    )
    return lines


CURVE_METRICS = (
    "online/knn_backbone",
    "online/knn_projector",
    "online/effective_rank_backbone",
    "online/effective_rank_projector",
)
"""The online-evaluation values a sweep's learning curves show (`mvcl.train.online_eval`)."""


def read_curve(
    path: str | os.PathLike, metrics: Sequence[str] = CURVE_METRICS
) -> dict[str, dict[int, float]]:
    """``{metric: {step: value}}`` of the ``metrics`` a run's ``metrics.jsonl`` holds.

    Empty for a missing file or a run without online evaluation (a sweep from before it, or with
    ``config.eval.every_steps = 0``); lines that are not JSON objects with a step (a line cut by
    a crash) are skipped; a step logged twice keeps its last value.
    """
    curve: dict[str, dict[int, float]] = {}
    path = epath.Path(os.fspath(path))
    if not path.is_file():
        return curve
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        for name in metrics:
            value = record.get(name)
            if isinstance(value, (int, float)) and math.isfinite(value):
                curve.setdefault(name, {})[int(record["step"])] = float(value)
    return curve


def learning_curves(
    cells: Iterable[tuple[Mapping[str, Any], Mapping[str, Mapping[int, float]]]],
    metrics: Sequence[str] = CURVE_METRICS,
) -> list[dict[str, Any]]:
    """Seed means of learning curves: one dict per (loss, views, batch_size) and metric.

    ``cells``: ``(cell, curve)`` pairs, ``cell`` with the `KEYS` and ``seed``, ``curve`` as
    `read_curve` returns; cells without the metric are left out. Each dict holds the `KEYS`,
    ``metric``, ``steps`` (those every seed of the group logged, increasing), ``mean`` and
    ``std`` at each step (sample standard deviation over the seeds, ``ddof=1``; 0 for one seed)
    and ``seeds``. First-seen order of the groups.
    """
    groups: dict[tuple, list[Mapping[str, Mapping[int, float]]]] = {}
    for cell, curve in cells:
        groups.setdefault(tuple(cell[k] for k in KEYS), []).append(curve)
    out = []
    for key, curves in groups.items():
        for metric in metrics:
            members = [c[metric] for c in curves if c.get(metric)]
            if not members:
                continue
            steps = sorted(set.intersection(*(set(m) for m in members)))
            values = np.array([[m[s] for s in steps] for m in members], dtype=np.float64)
            std = values.std(axis=0, ddof=1) if len(members) > 1 else np.zeros(len(steps))
            out.append(
                {
                    **dict(zip(KEYS, key)),
                    "metric": metric,
                    "steps": steps,
                    "mean": values.mean(axis=0).tolist(),
                    "std": std.tolist(),
                    "seeds": len(members),
                }
            )
    return out
