"""The package stands alone: the losses import without the training stack, the configs (the
repository's top-level configs/) are installed as mvcl.configs and are named by short names from
any directory, and the old paths still work."""

import math
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import pytest
from absl import flags

from mvcl import configs

REPO = Path(__file__).resolve().parents[1]

# Imports mvcl's core with the training stack made unimportable, as on `pip install mvcl`.
_CORE_ONLY = textwrap.dedent(
    """
    import sys

    BLOCKED = ("flax", "optax", "orbax", "tensorflow_datasets", "tensorflow", "ml_collections",
               "absl", "grain", "chex", "sklearn", "PIL", "pix", "dm_pix", "matplotlib")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: not part of mvcl's core dependencies")
            return None

    sys.meta_path.insert(0, Block())
    import jax.numpy as jnp
    import mvcl
    import mvcl.backends, mvcl.losses, mvcl.metrics, mvcl.parallel

    z = jnp.ones((4, 2, 3)) / 3**0.5
    loss = mvcl.losses.mv_dhel(z, temperature=0.5)
    print(float(loss), sorted(n for n in sys.modules if n.startswith("mvcl")))
    """
)


def test_core_imports_without_the_training_stack():
    proc = subprocess.run(
        [sys.executable, "-c", _CORE_ONLY], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loss, _ = proc.stdout.split(" ", 1)
    assert math.isfinite(float(loss))
    assert "mvcl.train" not in proc.stdout and "mvcl.data" not in proc.stdout


def test_every_packaged_config_is_named_and_loads():
    names = configs.names()
    assert {"digits", "cifar10", "sweeps/digits_claims"} <= set(names)
    assert not any(n.endswith(("__init__", "common")) for n in names)
    for name in names:
        assert configs.path(name) == configs.DIR / f"{name}.py"
    assert configs.load("digits:views=2,loss=mv_infonce").num_views == 2
    assert configs.load("digits", "views=6").num_views == 6
    assert configs.load("sweeps/digits_claims", "fake=True").base == "digits"


def test_a_config_file_of_ones_own_is_loaded_by_path(tmp_path):
    own = tmp_path / "mine.py"
    own.write_text(
        "from mvcl.configs import common, digits\n\n"
        "def get_config(arg=None):\n"
        "    config = digits.get_config(arg)\n"
        "    config.num_epochs = 7\n"
        "    return config\n"
    )
    assert configs.path(own) == own
    config = configs.load(f"{own}:views=3")
    assert (config.num_epochs, config.num_views) == (7, 3)


def test_the_configs_are_the_top_level_folder_installed_as_mvcl_configs():
    """pyproject.toml maps mvcl.configs to configs/ and lists every package (a new subpackage
    of mvcl/ left out of the list would be missing from the wheel); setup.py is the thin one."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {
        "mvcl.configs": "configs",
        "mvcl.configs.sweeps": "configs/sweeps",
    }
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "mvcl").rglob("__init__.py")
    }
    on_disk |= {
        ".".join(("mvcl", *p.parent.relative_to(REPO).parts))
        for p in (REPO / "configs").rglob("__init__.py")
    }
    assert sorted(setuptools["packages"]) == sorted(on_disk)
    assert not (REPO / "mvcl" / "configs").exists()
    assert "setup()" in (REPO / "setup.py").read_text()
    if configs.DIR.is_relative_to(REPO):  # a checkout (PYTHONPATH or editable), not a wheel
        assert configs.DIR == REPO / "configs"


@pytest.mark.parametrize(
    "old, new",
    [
        ("configs/digits.py", "digits"),
        ("./configs/sweeps/digits_claims.py", "sweeps/digits_claims"),
        ("/some/old/checkout/configs/cifar10.py", "cifar10"),
    ],
)
def test_old_checkout_paths_still_work_with_a_warning_naming_the_short_form(
    old, new, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a directory without configs/: the path names no file
    with pytest.warns(FutureWarning, match=f"removed in 0.2.0: use its name, --config={new}$"):
        assert configs.path(old) == configs.path(new)


def test_a_shipped_configs_path_in_the_repository_is_that_config_without_warning(monkeypatch):
    monkeypatch.chdir(REPO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert configs.path("configs/digits.py") == configs.path("digits")
        assert configs.load("configs/digits.py:views=3").num_views == 3


def test_unknown_config_names_the_packaged_ones():
    with pytest.raises(ValueError, match="packaged configs: .*digits.*sweeps/digits_claims"):
        configs.path("digitz")
    with pytest.raises(ValueError, match="neither a packaged config"):
        configs.path("common")


def test_config_flag_takes_short_names_and_rejects_unknown_ones_clearly():
    flag_values = flags.FlagValues()
    holder = configs.define_flag("config", None, "a config", flag_values)
    flag_values(["prog", "--config=digits:views=2,loss=mv_infonce"])
    assert (holder.value.num_views, holder.value.loss.name) == (2, "mv_infonce")

    flag_values = flags.FlagValues()
    configs.define_flag("config", None, "a config", flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="digitz.*packaged configs"):
        flag_values(["prog", "--config=digitz"])


def test_old_command_line_still_works_from_the_checkout(tmp_path):
    """``python experiments/sweep.py --config=configs/sweeps/<file>.py`` as documented before,
    from a directory without configs/."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / "sweep.py"),
            "--config=configs/sweeps/digits_claims.py:fake=True",
            f"--workdir={tmp_path / 'sweep'}",
            "--list",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mv_dhel_v8_b8_s0" in proc.stdout
    assert "FutureWarning" in proc.stderr and "--config=sweeps/digits_claims" in proc.stderr


def test_no_warning_for_the_short_form():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configs.path("sweeps/digits_claims")


def test_no_file_edits_sys_path():
    """Scripts, tests and the package import mvcl as installed (or from PYTHONPATH)."""
    needle = "sys.path." + "insert"
    offenders = [
        str(p.relative_to(REPO))
        for folder in ("mvcl", "configs", "experiments", "tests", "docs")
        for p in (REPO / folder).rglob("*.py")
        if needle in p.read_text(encoding="utf-8")
    ]
    assert not offenders
