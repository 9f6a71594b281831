"""The installed commands as a new user meets them: ``--help`` lists each command's own flags and
``--helpfull`` works."""

import subprocess
import sys

import pytest

# As the console script runs it: the command's module is imported (not run as __main__) and
# sys.argv[0] is the script's name.
_CONSOLE_SCRIPT = "import sys; sys.argv[0] = {name!r}; from {module} import run; run()"

COMMANDS = {
    "mvcl-pretrain": ("mvcl.pretrain", ["--config", "--workdir", "--summary"]),
    "mvcl-evaluate": ("mvcl.evaluate", ["--config", "--workdir"]),
    "mvcl-sweep": (
        "mvcl.sweep",
        ["--config", "--workdir", "--outdir", "--[no]list", "--[no]report"],
    ),
}


def _command(name: str, *args: str) -> subprocess.CompletedProcess:
    module = COMMANDS[name][0]
    code = _CONSOLE_SCRIPT.format(name=name, module=module)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
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
    assert {"mvcl.configs:", f"{COMMANDS[name][0]}:", "absl.logging:"} <= set(modules)
