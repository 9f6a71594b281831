"""Sweeps (mvcl.studies, mvcl-sweep): tiny fake-data grids run, write their tables and
plots, skip done cells, resume an interrupted one; every sweep config builds valid cells."""

import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import config_dict

from mvcl import configs, studies, train
from mvcl.configs.sweeps import paper
from mvcl.studies import grid, loss_cost, outputs, plots, report, runner
from mvcl.train.workdir import plain_config

SWEEP_CONFIGS = [name for name in configs.names() if name.startswith("sweeps/")]
OUTPUTS = (
    "results.csv",
    "results.md",
    "accuracy_vs_views.png",
    "effective_rank_vs_views.png",
    "accuracy_vs_batch_size.png",
    "loss_cost.png",
    "loss_cost.json",
)


def tiny_sweep(**blocks) -> config_dict.ConfigDict:
    """The fake (smoke) digits sweep with its grid replaced by ``blocks`` ((losses, views))."""
    sweep = grid.load_config_file("sweeps/digits_claims", "fake=True")
    sweep.grid = config_dict.ConfigDict(
        {
            name: {"losses": l, "views": v, "batch_sizes": (8,), "seeds": (0,)}
            for name, (l, v) in blocks.items()
        }
    )
    return sweep


def refuse(config, workdir):
    raise AssertionError(f"{config.name} should not have been trained again")


def test_tiny_sweep_runs_writes_outputs_and_skips_done_cells(tmp_path):
    sweep = tiny_sweep(a=(("mv_dhel", "pwe"), (2,)), b=(("mv_dhel",), (3,)))
    run = studies.run_sweep(sweep, tmp_path / "work", progress=False)
    names = ["mv_dhel_v2_b8_s0", "pwe_v2_b8_s0", "mv_dhel_v3_b8_s0"]
    assert run.complete and [c.name for c in run.trained] == names
    assert [r["step"] for r in run.results] == [2, 2, 2]
    for name in names:
        assert (tmp_path / "work" / "cells" / name / runner.RESULT_FILE).is_file()

    written = studies.write_outputs(sweep, run.results, tmp_path / "work", tmp_path / "out")
    assert {p.name for p in written} == set(OUTPUTS)  # no embeddings: fake data is not evaluated
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["loss"], r["views"]) for r in rows] == [
        ("mv_dhel", "2"),
        ("pwe", "2"),
        ("mv_dhel", "3"),
    ]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    assert "| mv_dhel | 3 | 8 | 1 |" in (tmp_path / "out" / "results.md").read_text()
    timed = json.loads((tmp_path / "out" / "loss_cost.json").read_text())
    assert {(r["loss"], r["v"]) for r in timed} == {
        ("mv_dhel", 2),
        ("mv_dhel", 3),
        ("pwe", 2),
        ("pwe", 3),
    }

    again = studies.run_sweep(sweep, tmp_path / "work", train_fn=refuse, progress=False)
    assert again.complete and again.trained == []
    assert again.results == run.results


def test_interrupted_cell_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    sweep = tiny_sweep(a=(("mv_infonce",), (2,)))
    write_scalars = train.MetricWriter.write_scalars

    def write_and_get_preempted(self, step, scalars):
        write_scalars(self, step, scalars)
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the run saves step 1 and stops

    monkeypatch.setattr(train.MetricWriter, "write_scalars", write_and_get_preempted)
    assert not studies.run_sweep(sweep, tmp_path, progress=False).complete
    cell = tmp_path / "cells" / "mv_infonce_v2_b8_s0"
    assert not (cell / runner.RESULT_FILE).exists()
    assert (cell / "checkpoints" / "1").is_dir()

    monkeypatch.undo()
    run = studies.run_sweep(sweep, tmp_path, progress=False)
    assert [c.name for c in run.trained] == ["mv_infonce_v2_b8_s0"]
    assert run.results[0]["step"] == 2
    logged = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "train/loss" in r] == [1, 2]  # step 1 was not redone


def test_preempted_cell_stops_the_sweep_without_a_result(tmp_path):
    sweep = tiny_sweep(a=(("mv_dhel", "pwe"), (2,)))
    calls = []

    def preempted(config, workdir):
        calls.append(config.name)
        return {"step": 1, "preempted": True, "eval": {}}

    run = studies.run_sweep(sweep, tmp_path, train_fn=preempted, progress=False)
    assert not run.complete and run.results == [] and len(calls) == 1
    assert not list(tmp_path.glob("cells/*/" + runner.RESULT_FILE))


def test_archived_cells_carry_a_sweep_to_a_fresh_workdir(tmp_path):
    """With an archive (--outdir), done cells' results are copied there and count as done: a
    sweep continued with a fresh workdir (another machine) trains only the cells not archived."""
    sweep = tiny_sweep(a=(("mv_dhel", "pwe"), (2, 3)))
    trained = []

    def fake_train(config, workdir):
        trained.append(os.path.basename(workdir))
        return {"step": 2, "preempted": len(trained) == 3, "eval": {"knn": 0.5}}

    first = studies.run_sweep(
        sweep, tmp_path / "a", archive=tmp_path / "out", train_fn=fake_train, progress=False
    )
    assert not first.complete and len(first.results) == 2
    archived = sorted(p.parent.name for p in (tmp_path / "out").glob("cells/*/result.json"))
    assert archived == sorted(trained[:2])  # the preempted third cell is not archived

    trained.clear()
    second = studies.run_sweep(
        sweep, tmp_path / "b", archive=tmp_path / "out", train_fn=fake_train, progress=False
    )
    assert second.complete and len(trained) == 2 and len(second.results) == 4
    assert second.results[:2] == first.results
    assert sorted(p.name for p in (tmp_path / "b" / "cells").iterdir()) == sorted(trained)
    assert len(list((tmp_path / "out").glob("cells/*/result.json"))) == 4

    sweep.overrides.num_steps = 3  # an archived cell run with another config is an error too
    with pytest.raises(ValueError, match="num_steps"):
        studies.run_sweep(sweep, tmp_path / "c", archive=tmp_path / "out", progress=False)


def test_progress_bar_counts_cells_found_done(tmp_path, capsys):
    """The bar counts the cells a resumed sweep finds done (it showed 0 done after skipping
    them: tqdm over an iterable syncs its count only when it prints)."""
    sweep = tiny_sweep(a=(("mv_dhel", "pwe"), (2, 3)))
    trained = []

    def fake_train(config, workdir):
        trained.append(workdir)
        return {"step": 2, "preempted": len(trained) == 3, "eval": {"knn": 0.5}}

    studies.run_sweep(sweep, tmp_path, train_fn=fake_train, progress=False)  # 2 of 4 done
    trained.clear()

    bars = []

    def seen(config, workdir):  # the bar as each cell to train starts
        bars.append(capsys.readouterr().err.split("\r")[-1])
        return fake_train(config, workdir)

    assert studies.run_sweep(sweep, tmp_path, train_fn=seen, progress=True).complete
    assert "2/4" in bars[0] and "3/4" in bars[1], bars
    assert "4/4" in capsys.readouterr().err


def test_a_done_cell_with_another_config_is_an_error(tmp_path):
    sweep = tiny_sweep(a=(("mv_dhel",), (2,)))
    cell = studies.cells(sweep)[0]
    directory = runner.cell_dir(tmp_path, cell)
    directory.mkdir(parents=True)
    stored = plain_config(studies.cell_config(sweep, cell))
    result = {"cell": vars(cell), "step": 2, "seconds": 1.0, "train_loss": 1.0, "eval": {}}
    (directory / runner.RESULT_FILE).write_text(json.dumps({**result, "config": stored}))
    assert studies.run_sweep(sweep, tmp_path, train_fn=refuse, progress=False).complete

    sweep.overrides.num_steps = 3
    with pytest.raises(ValueError, match="num_steps"):
        studies.run_sweep(sweep, tmp_path, train_fn=refuse, progress=False)


def test_done_results_of_an_unfinished_sweep_make_a_report(tmp_path):
    sweep = tiny_sweep(a=(("mv_dhel", "pwe"), (2, 3)))
    trained = []

    def fake_train(config, workdir):
        trained.append(workdir)
        return {"step": 2, "preempted": len(trained) == 3, "eval": {"knn": 0.5}}

    run = studies.run_sweep(sweep, tmp_path / "work", train_fn=fake_train, progress=False)
    assert not run.complete
    results = runner.done_results(sweep, tmp_path / "work")
    assert results == run.results and len(results) == 2
    written = studies.write_outputs(sweep, results, tmp_path / "work", tmp_path / "out", cells=4)
    title = (tmp_path / "out" / "results.md").read_text().splitlines()[0]
    assert title == f"# Sweep {sweep.name} (2 of 4 cells done)"
    assert {p.name for p in written} == set(OUTPUTS)

    sweep.overrides.num_steps = 3  # a done cell run with another config is an error here too
    with pytest.raises(ValueError, match="num_steps"):
        runner.done_results(sweep, tmp_path / "work")


def sweep_command(tmp_path, flag: str) -> list[str]:
    """``mvcl-sweep`` on the fake digits sweep with a workdir and outdir in ``tmp_path``."""
    return [
        sys.executable,
        "-m",
        "mvcl.sweep",
        "--config=sweeps/digits_claims:fake=True",
        f"--workdir={tmp_path / 'work'}",
        f"--outdir={tmp_path / 'out'}",
        flag,
    ]


def test_sweep_command_reports_the_cells_done_so_far(tmp_path):
    command = sweep_command(tmp_path, "--report")
    none = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert none.returncode != 0 and "is done yet" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1, none.stderr

    sweep = grid.load_config_file("sweeps/digits_claims", "fake=True")
    cell = studies.cells(sweep)[0]
    stored = plain_config(studies.cell_config(sweep, cell))
    result = {"cell": vars(cell), "step": 2, "seconds": 60.0, "train_loss": 1.0, "eval": {}}
    path = runner.cell_dir(tmp_path / "out", cell) / runner.RESULT_FILE  # committed, say
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**result, "config": stored}))
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
    total = len(studies.cells(sweep))
    assert f"Report of 1 of {total} cells written" in out.stdout
    text = (tmp_path / "out" / "results.md").read_text()
    assert text.startswith(f"# Sweep {sweep.name} (1 of {total} cells done)")
    assert f"| {cell.loss} | {cell.views} | {cell.batch_size} | 1 |" in text
    assert not (tmp_path / "work" / "cells").exists()  # nothing was trained


def test_multicrop_settings_change_a_cell_only_when_multicrop_is_on():
    sweep = tiny_sweep(a=(("mv_dhel",), (2,)))
    current = plain_config(studies.cell_config(sweep, studies.cells(sweep)[0]))
    before_multicrop = json.loads(json.dumps(current))
    del before_multicrop["augment"]["multicrop"]  # as stored by runs before multi-crop existed
    assert runner.config_changes(before_multicrop, current) == []
    current["augment"]["multicrop"]["small_size"] = 2  # inert while num_small = 0
    assert runner.config_changes(before_multicrop, current) == []
    current["augment"]["multicrop"]["num_small"] = 2
    assert runner.config_changes(before_multicrop, current) == [
        "augment.multicrop.num_small",
        "augment.multicrop.small_max_scale",
        "augment.multicrop.small_min_scale",
        "augment.multicrop.small_size",
    ]


@pytest.mark.parametrize("path", SWEEP_CONFIGS)
@pytest.mark.parametrize("arg", ["", "fake=True", "seeds=2"])
def test_every_sweep_config_builds_valid_cells(path, arg):
    sweep = grid.load_config_file(path, arg)
    cells = studies.cells(sweep)
    assert cells and len(set(cells)) == len(cells)
    default = studies.cells(grid.load_config_file(path))
    assert {c.seed for c in cells} == set(
        range(2 if arg == "seeds=2" else len({c.seed for c in default}))
    )
    for cell in cells:
        config = studies.cell_config(sweep, cell)
        train.validate_config(config, device_count=1, process_count=1)
        assert (config.loss.name, config.num_views, config.batch_size) == (
            cell.loss,
            cell.views,
            cell.batch_size,
        )
    if sweep.targets:
        assert set(sweep.targets.views) <= {c.views for c in cells}
        assert all(
            len(v) == len(sweep.targets.views) for k, v in sweep.targets.items() if k != "views"
        )


def test_sweep_command_lists_cells(tmp_path):
    archived = tmp_path / "out" / "cells" / "mv_dhel_v2_b8_s0" / runner.RESULT_FILE
    archived.parent.mkdir(parents=True)
    archived.write_text("{}")  # a cell done on another machine, committed with the results
    out = subprocess.run(
        sweep_command(tmp_path, "--list"),
        cwd=tmp_path,  # the packaged configs are found from any directory
        capture_output=True,
        text=True,
        check=True,
    )
    assert "mv_dhel_v8_b8_s0" in out.stdout and "to run" in out.stdout
    assert re.search(r"^mv_dhel_v2_b8_s0 +done$", out.stdout, re.MULTILINE)


def cell_row(loss: str, views: int, seed: int, **metrics) -> dict:
    """A results-table row of a batch-256 cell with the given evaluation ``metrics``."""
    run = {"step": 10, "seconds": 60.0, "train_loss": 1.0}
    cell = {"loss": loss, "views": views, "batch_size": 256, "seed": seed}
    return {**cell, **run, **{k.replace("__", "/"): v for k, v in metrics.items()}}


def synthetic_table() -> list[dict]:
    """Seed-0/1 rows where MV-DHEL's rank grows with V and beats PWE at V = 4 only."""
    ranks = {("mv_dhel", 2): 10.0, ("mv_dhel", 4): 20.0, ("mv_dhel", 6): 30.0}
    ranks |= {("pwe", 2): 12.0, ("pwe", 4): 15.0, ("pwe", 6): 35.0}
    return [
        cell_row(
            loss,
            v,
            seed,
            backbone__effective_rank=rank + seed,
            projector__effective_rank=rank,
            backbone__linear_probe=0.5 + v / 100,
            backbone__knn=0.4,
        )
        for (loss, v), rank in ranks.items()
        for seed in (0, 1)
    ]


def test_seed_means_claims_and_markdown():
    table = synthetic_table()
    means = report.seed_means(table)
    assert len(means) == 6 and means[0]["seeds"] == 2
    assert means[0]["backbone/effective_rank"] == pytest.approx(10.5)
    # seeds 0 and 1 give 10 and 11: the sample standard deviation, sqrt(0.5)
    assert means[0]["backbone/effective_rank_std"] == pytest.approx(np.sqrt(0.5))
    checks = dict((text.split(":")[0], ok) for text, ok in report.claims(means))
    assert checks == {
        "batch 256": True,  # grows: 10.5, 20.5, 30.5
        "batch 256, V = 4": True,  # 20.5 > 15.5
        "batch 256, V = 6": False,  # 30.5 < 35.5
    }
    text = report.markdown(
        table,
        title="t",
        targets={"views": (2, 4), "mv_dhel": (87.4, 89.5), "best_baseline": (86.0, 88.7)},
    )
    assert "| mv_dhel (paper) | 87.4 | 89.5 |" in text
    assert "| mv_dhel (measured) | 52.0 | 54.0 |" in text
    assert "| best other loss (measured) | 52.0 (pwe) | 54.0 (pwe) |" in text
    assert "- does not hold: batch 256, V = 6" in text


def comparison_table() -> list[dict]:
    """Linear probes per seed: MV-DHEL ahead of PWE at V = 4, behind MV-InfoNCE at V = 4, tied
    with PWE at V = 8; AVG with one seed at V = 8; V = 2 (not compared)."""
    probes = {
        ("mv_dhel", 2): (0.5, 0.5, 0.5),
        ("pwe", 2): (0.9, 0.9, 0.9),
        ("mv_dhel", 4): (0.80, 0.81, 0.82),
        ("pwe", 4): (0.70, 0.71, 0.72),
        ("mv_infonce", 4): (0.84, 0.85, 0.86),
        ("mv_dhel", 8): (0.80, 0.81, 0.82),
        ("pwe", 8): (0.80, 0.815, 0.83),
        ("avg", 8): (0.5,),
    }
    return [
        cell_row(loss, v, seed, backbone__linear_probe=probe)
        for (loss, v), values in probes.items()
        for seed, probe in enumerate(values)
    ]


def test_comparisons_resolve_beyond_one_standard_deviation_or_call_a_tie():
    table = comparison_table()
    found = report.comparisons(report.seed_means(table), metrics=("backbone/linear_probe",))
    verdicts = {(c["views"], c["loss"]): c["verdict"] for c in found}
    assert verdicts == {
        (4, "mv_infonce"): "MV-DHEL behind",  # 0.81 ± 0.01 vs 0.85 ± 0.01
        (4, "pwe"): "MV-DHEL ahead",  # 0.81 ± 0.01 vs 0.71 ± 0.01
        (8, "avg"): "one seed",
        (8, "pwe"): "tie",  # -0.005, well inside 0.01 + 0.015
    }
    pwe4 = next(c for c in found if (c["views"], c["loss"]) == (4, "pwe"))
    assert pwe4["delta"] == pytest.approx(0.10) and pwe4["mv_dhel_std"] == pytest.approx(0.01)
    assert pwe4["seeds"] == 3
    # A difference just inside the summed standard deviations is a tie, just outside resolved.
    edge = [dict(r) for r in table if r["views"] == 8 and r["loss"] in ("mv_dhel", "pwe")]
    for gap, verdict in ((0.0249, "tie"), (0.0251, "MV-DHEL ahead")):
        shifted = [
            dict(r, **{"backbone/linear_probe": 0.81 - gap + (r["seed"] - 1) * 0.015})
            if r["loss"] == "pwe"
            else r
            for r in edge
        ]
        (only,) = report.comparisons(report.seed_means(shifted), metrics=("backbone/linear_probe",))
        assert only["verdict"] == verdict, gap
    text = report.markdown(table, title="t")
    assert "| 256 | 4 | backbone/linear_probe | 81.00 ± 1.00 | pwe | 71.00 ± 1.00 | +10.00 " in text
    assert "| mv_dhel | 4 | 256 | 0, 1, 2 | 80.00, 81.00, 82.00 | —, —, — |" in text


def test_plots_draw_one_line_per_loss():
    means = report.seed_means(synthetic_table())
    fig = plots.effective_rank_vs_views(means)
    assert [len(ax.get_lines()) > 0 for ax in fig.axes] == [True, True]
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"mv_dhel", "pwe"}
    rows = [
        {"loss": "mv_dhel", "n": 8, "v": v, "time_s": 0.1 * v, "temp_bytes": 1024 * v}
        for v in (2, 4)
    ]
    fig = plots.loss_cost(rows)
    assert all(ax.get_lines() for ax in fig.axes)


def test_loss_costs_from_the_benchmark_json_or_timed(tmp_path):
    bench = {
        "rows": [
            {
                "loss": "mv_dhel",
                "backend": "dense",
                "devices": 1,
                "n": 4,
                "v": 2,
                "time_s": 0.5,
                "temp_bytes": 7,
            },
            {
                "loss": "mv_dhel",
                "backend": "ring",
                "devices": 4,
                "n": 4,
                "v": 2,
                "time_s": 0.2,
                "temp_bytes": 3,
            },
            {"loss": "pwe", "backend": "dense", "devices": 1, "n": 4, "v": 2, "skipped": "too big"},
        ]
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    assert loss_cost.from_bench(tmp_path / "bench.json", "dense") == [
        {"loss": "mv_dhel", "n": 4, "v": 2, "time_s": 0.5, "temp_bytes": 7}
    ]
    assert loss_cost.from_bench(tmp_path / "missing.json", "dense") is None

    sweep = tiny_sweep(a=(("mv_dhel",), (2,)))
    sweep.loss_cost.bench_json = str(tmp_path / "bench.json")
    assert outputs.loss_cost_rows(sweep, tmp_path) == loss_cost.from_bench(
        tmp_path / "bench.json", "dense"
    )
    row = loss_cost.time_loss("kcl", 4, 2, d=8, repeats=1)
    assert row["time_s"] > 0 and row["temp_bytes"] is not None


def test_a_workdirs_loss_costs_cached_under_the_name_of_0_1_0_are_used(tmp_path, monkeypatch):
    """A sweep workdir of 0.1.0 holds its timing as kernel_cost.json: it is used, not timed
    again, and kept under the new name."""
    sweep = tiny_sweep(a=(("mv_dhel",), (2,)))
    rows = [{"loss": "mv_dhel", "n": 8, "v": 2, "time_s": 0.5, "temp_bytes": 7}]
    (tmp_path / outputs.EARLIER_LOSS_COST_FILE).write_text(json.dumps(rows))

    def not_again(*args, **kwargs):
        raise AssertionError("the cached loss costs were timed again")

    monkeypatch.setattr(loss_cost, "time_losses", not_again)
    assert outputs.loss_cost_rows(sweep, tmp_path) == rows
    assert json.loads((tmp_path / outputs.LOSS_COST_FILE).read_text()) == rows
    (tmp_path / outputs.EARLIER_LOSS_COST_FILE).unlink()
    assert outputs.loss_cost_rows(sweep, tmp_path) == rows  # the new name from now on


def test_fashion_mnist_claims_sweep_has_three_losses_three_view_counts_three_seeds():
    sweep = grid.load_config_file("sweeps/fashion_mnist_claims")
    cells = studies.cells(sweep)
    assert len(cells) == 27
    assert {(c.loss, c.views) for c in cells} == {
        (loss, v) for loss in ("mv_dhel", "mv_infonce", "pwe") for v in (2, 4, 8)
    }
    assert {c.seed for c in cells} == {0, 1, 2} and {c.batch_size for c in cells} == {256}
    assert [c.seed for c in cells] == sorted(c.seed for c in cells)  # seed-major order
    config = studies.cell_config(sweep, cells[0])
    assert config.dataset.name == "fashion_mnist" and config.model.name == "convnet"
    assert config.model.kwargs.width == 0.5 and config.num_epochs == 4
    assert config.checkpoint_every_steps <= 100  # an interrupted cell loses little
    more = grid.load_config_file("sweeps/fashion_mnist_claims", "more_losses=True")
    assert len(studies.cells(more)) == 45


@pytest.mark.parametrize("dataset", sorted(paper.PUBLISHED))
def test_paper_sweep_is_one_config_with_the_published_targets(dataset):
    published = paper.PUBLISHED[dataset]
    for arg in ("", "fake=True,seeds=2"):
        by_name = grid.load_config_file(f"sweeps/{dataset}", arg)  # the earlier short name
        sep = "," if arg else ""
        by_arg = grid.load_config_file("sweeps/paper", f"dataset={dataset}{sep}{arg}")
        assert by_name.to_dict() == by_arg.to_dict()
    sweep = grid.load_config_file(f"sweeps/{dataset}")
    assert sweep.base == dataset and sweep.overrides.num_epochs == published.epochs
    assert tuple(sweep.targets.mv_dhel) == published.mv_dhel
    assert tuple(sweep.targets.best_baseline) == published.best_baseline
    assert len(studies.cells(sweep)) == 11


def test_paper_sweep_of_an_unknown_dataset_names_the_known_ones():
    with pytest.raises(ValueError, match="dataset must be one of cifar10, cifar100"):
        grid.load_config_file("sweeps/paper", "dataset=mnist")
    with pytest.raises(ValueError, match="unknown config argument 'dataset'"):
        grid.load_config_file("sweeps/cifar10", "dataset=cifar100")


def test_comparisons_judge_the_projections_too_by_default():
    # The backbone probes again on the projections, every PWE probe raised by 0.2.
    table = [
        dict(
            r, **{"projector/linear_probe": r["backbone/linear_probe"] + (r["loss"] == "pwe") * 0.2}
        )
        for r in comparison_table()
    ]
    found = report.comparisons(report.seed_means(table))
    verdicts = {(c["views"], c["loss"], c["metric"]): c["verdict"] for c in found}
    assert verdicts[(4, "pwe", "backbone/linear_probe")] == "MV-DHEL ahead"
    assert verdicts[(4, "pwe", "projector/linear_probe")] == "MV-DHEL behind"  # 0.81 vs 0.91
    assert {c["metric"] for c in found} == {"backbone/linear_probe", "projector/linear_probe"}
    text = report.markdown(table, title="t")
    row = "| 256 | 4 | projector/linear_probe | 81.00 ± 1.00 | pwe | 91.00 ± 1.00 | -10.00 "
    assert row in text


def test_view_comparisons_judge_each_loss_against_fewer_views():
    table = comparison_table()
    found = report.view_comparisons(report.seed_means(table), metrics=("backbone/linear_probe",))
    verdicts = {(c["loss"], c["views"]): c["verdict"] for c in found}
    assert verdicts == {
        ("mv_dhel", (2, 4)): "more views ahead",  # 0.5 ± 0 -> 0.81 ± 0.01
        ("mv_dhel", (4, 8)): "tie",  # the same probes
        ("pwe", (2, 4)): "more views behind",  # 0.9 ± 0 -> 0.71 ± 0.01
        ("pwe", (4, 8)): "more views ahead",  # 0.71 ± 0.01 -> 0.815 ± 0.015
    }  # MV-InfoNCE has one V and AVG one V: nothing to compare
    pwe = next(c for c in found if c["views"] == (4, 8) and c["loss"] == "pwe")
    assert pwe["delta"] == pytest.approx(0.105) and pwe["more_std"] == pytest.approx(0.015)
    text = report.markdown(table, title="t")
    row = "| 256 | pwe | backbone/linear_probe | 2 → 4 | 90.00 ± 0.00 | 71.00 ± 1.00 | -19.00 "
    assert row in text


def write_metrics(directory, lines):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "metrics.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def test_learning_curves_average_seeds_of_each_cell_and_skip_cells_without_online_metrics(
    tmp_path,
):
    sweep = tiny_sweep(a=(("mv_dhel", "pwe"), (2,)))
    sweep.grid.a.seeds = (0, 1)
    work = tmp_path / "work"
    knn = {0: [0.2, 0.5, 0.6], 1: [0.4, 0.7, 0.7]}  # mv_dhel's two seeds at steps 5, 10, 15
    results = []
    for loss in ("mv_dhel", "pwe"):
        for seed in (0, 1):
            cell = grid.Cell(loss=loss, views=2, batch_size=8, seed=seed)
            results.append({"cell": dataclasses.asdict(cell)})
            if loss == "pwe":  # an old cell: training losses only
                write_metrics(runner.cell_dir(work, cell), [{"step": 5, "train/loss": 1.0}])
                continue
            lines = [{"step": 1, "train/loss": 2.0}]
            for step, value in zip((5, 10, 15), knn[seed]):
                lines.append({"step": step, "online/knn_backbone": value, "time": 0.0})
                lines.append({"step": step, "online/effective_rank_projector": 10.0 + seed})
            if seed == 1:
                lines.append({"step": 20, "online/knn_backbone": 0.9})  # seed 0 has no step 20
                lines.append('{"step": 25, "online/knn_ba')  # a line cut by a crash
            write_metrics(runner.cell_dir(work, cell), lines)

    curves = outputs.cell_curves(results, work)
    assert [(c["loss"], c["metric"]) for c in curves] == [
        ("mv_dhel", "online/knn_backbone"),
        ("mv_dhel", "online/effective_rank_projector"),
    ]
    knn_curve, rank_curve = curves
    assert knn_curve["steps"] == [5, 10, 15] and knn_curve["seeds"] == 2
    np.testing.assert_allclose(knn_curve["mean"], [0.3, 0.6, 0.65])
    np.testing.assert_allclose(knn_curve["std"], np.std([knn[0], knn[1]], axis=0, ddof=1))
    np.testing.assert_allclose(rank_curve["mean"], [10.5] * 3)

    fig = plots.learning_curves(curves, "t")
    drawn = [ax for ax in fig.axes if ax.get_visible()]
    assert len(drawn) == 2 and all(len(ax.get_lines()) == 1 for ax in drawn)
    assert drawn[0].get_lines()[0].get_ydata().tolist() == pytest.approx([30.0, 60.0, 65.0])
    assert all(ax.collections for ax in drawn)  # the seed-spread bands

    written = studies.write_outputs(sweep, results_with_eval(results), work, tmp_path / "out")
    assert {"learning_curves.png", "learning_curves.json"} <= {p.name for p in written}
    saved = json.loads((tmp_path / "out" / "learning_curves.json").read_text())
    assert saved == curves

    assert outputs.cell_curves(results[2:], work) == []  # only old cells: no curves, no error
    assert plots.learning_curves([]) is None
    assert report.read_curve(tmp_path / "missing" / "metrics.jsonl") == {}


def results_with_eval(results):
    """`result.json`-like dicts of the cells (what write_outputs tabulates)."""
    return [{**r, "step": 15, "seconds": 1.0, "train_loss": 1.0, "eval": {}} for r in results]
