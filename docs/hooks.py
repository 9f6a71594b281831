"""mkdocs hook: publish ``experiments/results/`` as the site's ``results/`` section.

Each study keeps its README next to its result files (JSON, CSV, plots), and those READMEs link
to the files beside them. Copying the whole folder into the site, at ``results/<study>/...``,
lets every such link resolve under ``mkdocs build --strict`` without a second copy of the
READMEs in ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


def on_files(files, config):
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            uri = "results/" + path.relative_to(RESULTS).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
