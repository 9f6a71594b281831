"""mvcl.train.cli.keep_freed_memory: the commands keep freed memory (glibc), unless told not to."""

import platform
import subprocess
import sys

import pytest

from mvcl.train import cli

PROBE = "from mvcl.train import cli; print(cli.keep_freed_memory())"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
@pytest.mark.parametrize("opt_out, applied", [(None, "True"), ("1", "False"), ("0", "True")])
def test_keep_freed_memory_applies_unless_opted_out(opt_out, applied, monkeypatch):
    if opt_out is None:
        monkeypatch.delenv(cli.OPT_OUT, raising=False)
    else:
        monkeypatch.setenv(cli.OPT_OUT, opt_out)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == applied


def test_commands_apply_it_before_parsing_flags(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("malloc") or True)
    monkeypatch.setattr(cli, "_define_flags", lambda: calls.append("flags"))
    monkeypatch.setattr(cli.app, "run", lambda *a, **k: calls.append("run"))
    cli.run(lambda argv: None, argv=["prog"])
    assert calls == ["malloc", "flags", "run"]
