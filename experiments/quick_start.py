"""Reruns the README's quick start and writes what it printed where the README shows it.

    python experiments/quick_start.py [--workdir=/tmp/quick_start]

runs ``mvcl-pretrain --config=digits --workdir=WORKDIR --summary=.../result.json`` (WORKDIR must
not hold a run: the quick start is a fresh run), then writes the lines it printed from
``Evaluation at step`` on, with WORKDIR written as the placeholder of a checkout's default
workdir, to ``experiments/results/digits_default/output.txt`` and into the code blocks of
``README.md`` and ``experiments/results/digits_default/README.md`` that start the same way.
``tests/test_quick_start.py`` checks the three against ``result.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "experiments" / "results" / "digits_default"
PAGES = [REPO / "README.md", RESULT / "README.md"]
FIRST = "Evaluation at step "


def printed_output(stdout: str, workdir: str, name: str) -> str:
    """The lines of ``stdout`` from the evaluation on, the workdir written as a placeholder."""
    start = stdout.index(FIRST)
    return stdout[start:].replace(workdir, f"/path/to/mvcl/workdirs/{name}").rstrip("\n") + "\n"


def replace_blocks(text: str, output: str) -> str:
    """``text`` with every fenced block starting with `FIRST` replaced by ``output``."""
    pattern = re.compile(rf"^(```[^\n]*\n){re.escape(FIRST)}.*?^```$", re.M | re.S)
    return pattern.sub(lambda m: f"{m.group(1)}{output}```", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/mvcl_quick_start")
    args = parser.parse_args()
    if os.path.exists(args.workdir):
        sys.exit(f"quick_start.py: {args.workdir} exists; the quick start is a fresh run")
    command = [
        sys.executable,
        "-m",
        "mvcl.pretrain",
        "--config=digits",
        f"--workdir={args.workdir}",
        f"--summary={(RESULT / 'result.json').relative_to(REPO)}",
    ]
    proc = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    output = printed_output(proc.stdout, os.path.abspath(args.workdir), "digits_mv_dhel_v4")
    (RESULT / "output.txt").write_text(output)
    for page in PAGES:
        page.write_text(replace_blocks(page.read_text(), output))
    print(output, end="")


if __name__ == "__main__":
    main()
