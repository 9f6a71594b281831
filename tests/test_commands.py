"""The installed commands as a new user meets them: ``--help`` lists each command's own flags and
``--helpfull`` works; every console script of pyproject.toml is among them."""

import subprocess
import sys

import pytest
from run_helpers import console_script

COMMANDS = {
    "mvcl-pretrain": ("mvcl.pretrain", ["--config", "--workdir", "--summary"]),
    "mvcl-evaluate": ("mvcl.evaluate", ["--config", "--workdir"]),
    "mvcl-sweep": (
        "mvcl.sweep",
        ["--config", "--workdir", "--outdir", "--[no]list", "--[no]report"],
    ),
    "mvcl-import": ("mvcl.import_data", ["--source", "--name", "--data_dir", "--[no]overwrite"]),
}


def _command(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", console_script(name), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_the_commands_own_flags_and_helpfull_works(name):
    proc = _command(name, "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = {line.split(":")[0].strip() for line in proc.stdout.splitlines() if ": " in line}
    own = COMMANDS[name][1]
    assert set(own) | {"--allow_config_change", "--[no]verbose"} <= listed, proc.stdout
    proc = _command(name, "--helpfull")
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = [line for line in proc.stdout.splitlines() if line.endswith(":")]
    assert {f"{COMMANDS[name][0]}:", "absl.logging:"} <= set(modules)


def test_every_console_script_is_checked_here():
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert {name: target.split(":")[0] for name, target in scripts.items()} == {
        name: module for name, (module, _) in COMMANDS.items()
    }
