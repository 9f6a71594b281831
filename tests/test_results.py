"""The committed results say truthfully what they hold.

A sweep's study folder with ``cells/`` holds the ``result.json`` of every cell of its table (so
rerunning the sweep's command skips them all), and one without says that the command reruns
every cell.

Every figure of a study's README comes from a committed results file of the study (the project's
rule: every figure lives with its study, from a results file). A *figure* is a number written with
a decimal point or a percent sign ("0.114 s", "1.47×", "98.89 %", "4 %"), outside code spans and
code blocks; integers (counts, sizes, dates) and version strings ("0.10.2") are not checked. The
*results files of a study* are the JSON, CSV, Markdown and text files in its folder (not its
README) and those its README names by path, relative to its folder or to ``experiments/results/``
(``../bench_losses.json``, ``bench_losses.json``). A figure is *found* when it is written in a
Markdown, CSV or text results file, or when a number of a JSON or CSV results file, taken as it
is or as a percentage (x 100), milliseconds (x 1000), minutes (/ 60), hours (/ 3600), MiB or GiB
(/ 2^20, / 2^30), gives it when rounded to the figure's decimals (the sign is not compared).

A figure the files do not hold (a mean, ratio or difference computed from them, a value of an
earlier committed version of a file, a setting) is declared in the README, next to the text, by
an HTML comment that the rendered page does not show, saying how it was obtained::

    <!-- figure: 4.9 = 21.5 / 4.4, the mean minutes of the V = 8 and V = 2 cells -->
    <!-- figure: 0.75, 0.55 = step_seconds cached over one pass at N·V = 512 and 1,024 -->

A declared figure must occur in the README's text. The check finds figures with no source at
all; it cannot tell a wrong figure that happens to round like some other number of the files.
The headline tables of the main README and of ``experiments/results/README.md`` are checked the
same way, each row against the results files (and declared figures) of the studies it links to.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
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


STUDIES = sorted(p.parent.name for p in RESULTS.glob("*/README.md"))
# A number with a decimal point (not a version string such as 0.10.2) or a percent sign.
FIGURE = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?:\s?%)?(?![\w.]*\d)")
DECLARED = re.compile(r"<!--\s*figure:\s*(.+?)\s+=\s+\S.*?-->", re.S)
NAMED_FILE = re.compile(r"[\w./-]+\.(?:json|csv|md|txt)\b")
SCALES = (1.0, 100.0, 1e3, 1 / 60, 1 / 3600, 2.0**-20, 2.0**-30)


def _blank(match: re.Match) -> str:
    return "\n" * match.group(0).count("\n")  # the lines keep their numbers


def _visible(text: str) -> str:
    """The README's prose and tables: no code blocks, code spans or HTML comments."""
    text = re.sub(r"<!--.*?-->", _blank, text, flags=re.S)
    text = re.sub(r"```.*?```", _blank, text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def declared(text: str) -> set[str]:
    """The figures ``text`` declares (``<!-- figure: a, b = how -->``)."""
    return {f.strip() for found in DECLARED.findall(text) for f in found.split(", ")}


def figures(text: str) -> Iterator[tuple[int, str]]:
    """(line, figure) of every figure of ``text`` (see the module docstring)."""
    for number, line in enumerate(_visible(text).splitlines(), 1):
        for match in FIGURE.finditer(line):
            figure = match.group(0).replace(" ", "")
            if "." in figure or figure.endswith("%"):
                yield number, figure


def _numbers(tree) -> Iterator[float]:
    if isinstance(tree, bool):
        return
    if isinstance(tree, (int, float)):
        yield float(tree)
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _numbers(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _numbers(value)


def _floats(cells) -> Iterator[float]:
    for cell in cells:
        try:
            yield float(cell)
        except ValueError:
            pass


def results_files(study: str) -> list[Path]:
    """The results files of ``study`` (see the module docstring)."""
    folder = RESULTS / study
    files = {
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".json", ".csv", ".md", ".txt") and p.name != "README.md"
    }
    for name in NAMED_FILE.findall((folder / "README.md").read_text(encoding="utf-8")):
        for base in (folder, RESULTS):
            path = (base / name).resolve()
            if path.is_file() and RESULTS in path.parents and path.name != "README.md":
                files.add(path)
    return sorted(files)


class Sources:
    """What the results files of some studies hold, and the figures their READMEs declare."""

    def __init__(self, studies: list[str]):
        self.values: set[float] = set()
        texts, self.declared = [], set()
        for study in studies:
            for path in results_files(study):
                text = path.read_text(encoding="utf-8")
                if path.suffix == ".json":
                    self.values.update(_numbers(json.loads(text)))
                else:
                    texts.append(text)
                    if path.suffix == ".csv":
                        for row in csv.reader(text.splitlines()):
                            self.values.update(_floats(row))
            readme = (RESULTS / study / "README.md").read_text(encoding="utf-8")
            self.declared.update(declared(readme))
        self.text_numbers = {
            m.group(0) for t in texts for m in FIGURE.finditer(t.replace(" %", "%"))
        }

    def holds(self, figure: str) -> bool:
        if figure in self.declared or figure.rstrip("%") in self.declared:
            return True
        bare = figure.rstrip("%")
        if figure in self.text_numbers or bare in self.text_numbers:
            return True
        x = float(bare.replace(",", ""))
        decimals = len(bare.partition(".")[2])
        return any(abs(round(abs(v) * k, decimals) - x) < 1e-9 for v in self.values for k in SCALES)


def test_the_figure_rule_reads_figures_and_declarations():
    text = "took 0.114 s (1.47×), 98.89 % and 4 %; N = 2048, JAX 0.10.2, `0.5` in code, 2026-12-05"
    assert [f for _, f in figures(text)] == ["0.114", "1.47", "98.89%", "4%"]
    assert declared("<!-- figure: 4.9 = 21.5 / 4.4 -->\n<!-- figure: 0.75, 1,044 = a\nb -->") == {
        "4.9",
        "0.75",
        "1,044",
    }
    sources = Sources(["loss_benchmarks"])
    assert sources.holds("0.114") and sources.holds("497")  # time_s; matmul_gflops.gflops
    assert not sources.holds("0.12345") and not sources.holds("3.14159%")


@pytest.mark.parametrize("study", STUDIES)
def test_every_figure_of_a_study_readme_comes_from_its_results_files(study):
    readme = (RESULTS / study / "README.md").read_text(encoding="utf-8")
    sources = Sources([study])
    visible = {f for _, f in figures(readme)} | {f.rstrip("%") for _, f in figures(readme)}
    stale = sorted(sources.declared - visible)
    assert not stale, f"{study}/README.md declares figures its text no longer has: {stale}"
    unsourced = [f"line {n}: {f}" for n, f in figures(readme) if not sources.holds(f)]
    assert not unsourced, (
        f"{study}/README.md quotes figures no results file of the study holds (see this test's "
        f"docstring: quote the file's value, or declare how the figure was computed): {unsourced}"
    )


@pytest.mark.parametrize("readme", ["README.md", "experiments/results/README.md"])
def test_every_headline_figure_comes_from_its_studys_results_files(readme):
    text = (REPO / readme).read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\| \[.*\]\(.*README\.md\)", line)]
    assert len(rows) >= 10, "the headline table was not found"
    for row in rows:
        studies = re.findall(r"\]\((?:experiments/results/)?([\w-]+)/README\.md\)", row)
        assert studies and all(s in STUDIES for s in studies), row
        sources = Sources(studies)
        unsourced = [f for _, f in figures(row) if not sources.holds(f)]
        assert not unsourced, f"{readme}: {unsourced} of the row of {studies} have no source"
