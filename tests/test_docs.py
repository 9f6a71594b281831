"""The documentation runs: the docstring examples (doctests) of the public modules, and every
```python block of README.md and docs/**/*.md.

A block runs unless the line before its opening fence is ``<!-- skip: reason -->`` (for the few
that need several processes or an accelerator); the blocks of one file run in order in one
namespace, as a reader would paste them. Snippets that build a training stack import the
``train`` extra, which the test extra installs.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]

DOCTEST_MODULES = (
    "mvcl.losses._common",
    "mvcl.losses.multiview",
    "mvcl.losses.baselines",
    "mvcl.losses.two_view",
    "mvcl.losses.registry",
    "mvcl.losses.spec",
    "mvcl.backends",
    "mvcl.backends.dense",
    "mvcl.backends.streaming",
    "mvcl.backends.reductions",
    "mvcl.parallel",
    "mvcl.metrics",
)

# Public functions whose docstrings must carry a runnable example (a `>>>` line).
MUST_HAVE_EXAMPLES = {
    "mvcl.losses": (
        "mv_infonce mv_dhel pwe avg pvc multipos_infonce infonce dcl dhel kcl spec get "
        "check_finite LossSpec"
    ),
    "mvcl.backends": "get self_rows BuiltinBackend keep per_key_view sum_of",
    "mvcl.backends.dense": "dense gather",
    "mvcl.backends.streaming": "streaming streaming_self",
    "mvcl.parallel": "initialize make_mesh batch_sharding shard_loss",
    "mvcl.metrics": (
        "alignment uniformity effective_rank covariance_rank wasserstein_uniformity all_metrics"
    ),
}
LOSSES = "mv_infonce mv_dhel pwe avg pvc multipos_infonce infonce dcl dhel kcl".split()


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_doctests(module):
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, module) if t.examples]
    assert tests, f"{module} has no doctests"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} failed"


@pytest.mark.parametrize("module", sorted(MUST_HAVE_EXAMPLES))
def test_public_names_have_examples(module):
    mod = importlib.import_module(module)
    missing = [
        name
        for name in MUST_HAVE_EXAMPLES[module].split()
        if ">>>" not in (getattr(mod, name).__doc__ or "")
    ]
    assert not missing, f"{module}: no `>>>` example in the docstring of {missing}"


@pytest.mark.parametrize("name", LOSSES)
def test_losses_document_formula_and_references(name):
    doc = getattr(importlib.import_module("mvcl.losses"), name).__doc__
    assert "References:" in doc, name
    assert re.search(r"^\s+L = ", doc, re.M), f"{name}: no formula `L = ...` in the docstring"


# --- the Markdown snippets ------------------------------------------------------------------

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)
_SKIP = re.compile(r"<!--\s*skip:\s*(.+?)\s*-->\s*$")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason) of every ```python block of ``path``."""
    text = path.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        blocks.append((line, match.group(1), skip.group(1) if skip else None))
    return blocks


def test_snippet_extraction_sees_blocks_and_skips():
    counts = {p.relative_to(ROOT).as_posix(): len(python_blocks(p)) for p in markdown_files()}
    assert counts["README.md"] >= 2, counts
    skipped = [
        (p.name, line, reason)
        for p in markdown_files()
        for line, _, reason in python_blocks(p)
        if reason
    ]
    assert len(skipped) <= 3, f"keep skipped snippets few: {skipped}"


@pytest.mark.parametrize(
    "path",
    [p for p in markdown_files() if any(not skip for _, _, skip in python_blocks(p))],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_markdown_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    namespace: dict = {"__name__": "__snippet__"}
    ran = 0
    for line, code, skip in python_blocks(path):
        if skip:
            continue
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as error:  # name the block that failed
            raise AssertionError(
                f"the python block at {path.name}:{line} raised {error!r}"
            ) from error
        ran += 1
    assert ran, path
    jax.clear_caches()


def test_readme_is_short():
    # The README is read in five minutes; guides and measurements live in docs/ and
    # experiments/results/.
    size = (ROOT / "README.md").stat().st_size
    assert size <= 15 * 1024, f"README.md is {size} bytes, over 15 KiB"
