"""The quick start's printed output, as the README shows it, is a committed result: the README's
block is ``experiments/results/digits_default/output.txt`` (what ``mvcl-pretrain --config=digits``
printed at its end), whose evaluation table is the one the evaluation formats from the run's
summary ``result.json``, of a run of today's ``digits`` config. Editing one without the others,
or changing a default of the digits config the run used, fails here: rerun the command of
``experiments/results/digits_default/README.md`` and commit its outputs."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "experiments" / "results" / "digits_default"


def _blocks_starting_with(path: Path, first_line: str) -> list[str]:
    """The fenced code blocks of ``path`` whose first line is ``first_line``."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```$", path.read_text(), re.M | re.S)
    return [b for b in blocks if b.startswith(first_line + "\n")]


def _output() -> str:
    return (RESULT / "output.txt").read_text()


def _result() -> dict:
    return json.loads((RESULT / "result.json").read_text())


@pytest.mark.parametrize("page", ["README.md", "experiments/results/digits_default/README.md"])
def test_the_quick_starts_printed_output_is_the_committed_output(page):
    output = _output()
    first = output.splitlines()[0]
    assert first == f"Evaluation at step {_result()['step']}:"
    assert _blocks_starting_with(ROOT / page, first) == [output]
    # experiments/quick_start.py, which writes them, would leave the page as it is.
    spec = importlib.util.spec_from_file_location(
        "quick_start", ROOT / "experiments" / "quick_start.py"
    )
    quick_start = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quick_start)
    text = (ROOT / page).read_text()
    assert quick_start.replace_blocks(text, output) == text
    assert quick_start.replace_blocks(text, "x\n") != text


def test_the_committed_output_prints_the_committed_results():
    pytest.importorskip("flax")
    from mvcl import evaluation

    result = _result()
    config = result["config"]
    table = evaluation.format_report(result["eval"], knn_k=config["eval"]["knn_k"])
    lines = _output().splitlines()
    assert "\n".join(lines[1:-2]) == table
    workdir = f"/path/to/mvcl/workdirs/{config['name']}"
    assert lines[-2:] == [
        f"Checkpoints: {workdir}/checkpoints",
        f"Metrics: {workdir}/metrics.jsonl and TensorBoard events (tensorboard --logdir {workdir})",
    ]


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_committed_run_is_the_quick_start_command_with_todays_digits_config():
    pytest.importorskip("ml_collections")
    from mvcl import configs

    result = _result()
    assert result["command"].startswith("mvcl-pretrain --config=digits ")
    recorded = _flat(result["config"])
    today = _flat(json.loads(configs.load("digits").to_json()))
    # Fields added since the run (the online evaluation, the divergence guard, ...) leave the
    # printed evaluation as it was; a recorded field whose default changed does not.
    changed = {k: (v, today.get(k)) for k, v in recorded.items() if today.get(k) != v}
    assert not changed, f"the digits config changed since the committed run: {changed}"
