"""The committed sweep results say truthfully what their command does from a fresh clone: a
study folder with ``cells/`` holds the ``result.json`` of every cell of its table (so rerunning
the sweep's command skips them all), and one without says that the command reruns every cell."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
SWEEPS = sorted(
    p.parent.name
    for p in RESULTS.glob("*/results.csv")
    if "mvcl-sweep" in (p.parent / "README.md").read_text()
)


def test_the_sweep_studies_are_found():
    assert {"digits_claims", "fashion_mnist_claims"} <= set(SWEEPS)


@pytest.mark.parametrize("study", SWEEPS)
def test_a_sweeps_readme_is_true_about_rerunning_its_command(study):
    folder = RESULTS / study
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    readme = " ".join((folder / "README.md").read_text().split())
    if not (folder / "cells").is_dir():
        assert f"the command reruns all {len(rows)} cells" in readme
        return
    cells = {}
    for path in (folder / "cells").glob("*/result.json"):
        cells[path.parent.name] = json.loads(path.read_text())
    assert len(cells) == len(rows)
    for row in rows:
        (result,) = [
            r
            for r in cells.values()
            if {k: str(v) for k, v in r["cell"].items()}
            == {k: row[k] for k in ("loss", "views", "batch_size", "seed")}
        ]
        assert float(row["backbone/linear_probe"]) == result["eval"]["backbone/linear_probe"]
