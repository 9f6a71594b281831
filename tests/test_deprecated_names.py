"""The names of earlier releases still work until 0.2.0, each with a warning that says so and
names its replacement; importing the package itself warns of nothing; and the release 0.2.0 cannot
be made while any of them is left."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import mvcl
from mvcl import _deprecation, backends, losses

REPO = Path(__file__).resolve().parents[1]
GOES = re.escape(f"will be removed in {_deprecation.REMOVED_IN}")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _shims() -> list[str]:
    """The files that still hold a deprecated name (they use mvcl._deprecation)."""
    roots = [Path(mvcl.__file__).parent, REPO / "configs", REPO / "experiments"]
    files = [f for root in roots if root.is_dir() for f in root.rglob("*.py")]
    return sorted(
        str(f)
        for f in files
        if f.name != "_deprecation.py" and "_deprecation" in f.read_text(encoding="utf-8")
    )


def test_no_release_of_0_2_0_with_a_deprecated_name_left():
    """Fails once mvcl.__version__ reaches 0.2.0 while a shim remains: remove them first (and
    then mvcl/_deprecation.py's MOVED_MODULES, SPLIT_MODULES, MOVED_SWEEP_FIELDS and this test's
    lists)."""
    left = (
        _shims()
        + list(_deprecation.MOVED_MODULES)
        + list(_deprecation.SPLIT_MODULES)
        + list(_deprecation.MOVED_SWEEP_FIELDS)
    )
    assert left, "no shim left: remove mvcl/_deprecation.py and this test"
    assert _release(mvcl.__version__) < _release(_deprecation.REMOVED_IN), (
        f"mvcl {mvcl.__version__} still holds the names deprecated until "
        f"{_deprecation.REMOVED_IN}: {left}"
    )


def test_the_version_is_the_packages_version():
    import tomllib

    pyproject = REPO / "pyproject.toml"
    if pyproject.is_file():
        assert tomllib.loads(pyproject.read_text())["project"]["version"] == mvcl.__version__


OLD_MODULES = [
    ("mvcl.kernels", "mvcl.backends"),
    ("mvcl.losses.pairwise", "mvcl.losses.two_view"),
    ("mvcl.studies.kernel_cost", "mvcl.studies.loss_cost"),
    ("mvcl.models.conv", "mvcl.models.loop_conv"),
    ("mvcl.train.evaluate", "mvcl.evaluation"),
    ("mvcl.train.multimodal", "mvcl.evaluation.multimodal"),
    ("mvcl.train.feed", "mvcl.train.inputs"),
    ("mvcl.train.sources", "mvcl.train.inputs"),
    ("mvcl.train.malloc", "mvcl.train.cli"),
    ("mvcl.train.optim", "mvcl.train.state"),
    ("mvcl.train.step_timing", "mvcl.train.memory_plan"),
    ("mvcl.train.summary", "mvcl.train.workdir"),
]

# The public names the moved modules of mvcl.train had: each is still reached through the old path.
OLD_NAMES = {
    "mvcl.train.evaluate": (
        "AXIS EVAL_DEFAULTS FEATURE_DTYPES FEATURE_SETS Source embed eval_settings evaluate "
        "extract_features format_report knn_accuracy linear_probe_accuracy "
        "minibatch_probe_accuracy pixels train_subset view_embeddings view_geometry"
    ),
    "mvcl.train.multimodal": (
        "cross_modal_retrieval embed_groups evaluate format_report retrieval_accuracy"
    ),
    "mvcl.train.feed": "DeviceBatch put_batch train_batches",
    "mvcl.train.sources": "fake_source global_batch open_sources open_split",
    "mvcl.train.malloc": (
        "KEEP M_ARENA_MAX M_MMAP_THRESHOLD M_TRIM_THRESHOLD OPT_OUT keep_freed_memory"
    ),
    "mvcl.train.optim": (
        "OPTIMIZERS kernel_mask learning_rate_schedule make_optimizer weight_matrix_mask"
    ),
    "mvcl.train.step_timing": "time_train_step",
    "mvcl.train.summary": "last_train_loss plain_config run_summary write_json",
    "mvcl.train.processes": "agree announce should_stop stop_reason",
}


def _fresh_import(name: str):
    """Imports ``name`` as if for the first time (so its import-time warning is raised again)."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    parent, _, child = name.rpartition(".")
    importlib.import_module(parent)
    if child in vars(sys.modules[parent]):
        delattr(sys.modules[parent], child)
    __import__(name)  # as an import statement does (importlib.import_module is a frame of its own)
    return sys.modules[name]


def test_importing_the_package_and_its_core_warns_of_nothing():
    code = "import mvcl, mvcl.backends, mvcl.losses, mvcl.metrics, mvcl.parallel"
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("old, names", OLD_NAMES.items())
def test_the_moved_train_modules_keep_every_public_name(old, names):
    pytest.importorskip("flax")
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
        module = _fresh_import(old)
    for name in names.split():
        value = getattr(module, name)
        assert value is not None, name


@pytest.mark.parametrize("old, new", OLD_MODULES)
def test_old_module_paths_warn_at_the_import_and_name_the_replacement(old, new):
    if old.startswith(("mvcl.studies", "mvcl.models", "mvcl.train")):
        pytest.importorskip("flax")
    with pytest.warns(
        DeprecationWarning, match=f"{old} is deprecated and {GOES}: use {new}"
    ) as record:
        module = _fresh_import(old)
    assert record[0].filename == __file__  # the warning points at the importing line
    replacement = importlib.import_module(new)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is getattr(replacement, name), name
    with pytest.warns(DeprecationWarning, match=f"use {new}") as record:  # attribute access
        parent, _, child = old.rpartition(".")
        _fresh_import(old)
        del sys.modules[old]
        delattr(sys.modules[parent], child)
        getattr(sys.modules[parent], child)
    assert record[-1].filename == __file__


def test_old_kernels_package_is_the_backends_package():
    with pytest.warns(DeprecationWarning, match="use mvcl.backends"):
        kernels = _fresh_import("mvcl.kernels")
    assert mvcl.kernels is kernels
    with pytest.warns(DeprecationWarning, match="use mvcl.backends.reductions"):
        import mvcl.kernels.reductions as old_reductions
    with pytest.warns(DeprecationWarning, match="use mvcl.backends.streaming"):
        from mvcl.kernels.streaming import streaming

    assert old_reductions.keep is backends.reductions.keep
    assert streaming is backends.streaming.streaming
    assert kernels.dense is backends.dense and kernels.precision is backends.precision
    with pytest.warns(DeprecationWarning, match="use mvcl.backends.BuiltinBackend"):
        assert kernels.Kernel is backends.BuiltinBackend
    # A loss given the old package's backend computes what it computes with the new one.
    z = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3, 4)), jnp.float32)
    old = losses.mv_infonce(z, temperature=0.5, backend=kernels.get("blockwise", tile=4))
    new = losses.mv_infonce(z, temperature=0.5, backend=backends.get("blockwise", tile=4))
    np.testing.assert_array_equal(old, new)


def test_old_function_names_warn_and_call_the_new_ones():
    pytest.importorskip("flax")
    from mvcl import data
    from mvcl.data import augment
    from mvcl.studies import outputs, plots, runner
    from mvcl.train import state

    params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))}}
    with pytest.warns(DeprecationWarning, match="use mvcl.train.state.weight_matrix_mask"):
        assert state.kernel_mask(params) == state.weight_matrix_mask(params)
    with pytest.warns(DeprecationWarning, match="mvcl.train.optim is deprecated"):
        optim = _fresh_import("mvcl.train.optim")  # the name's old module, now mvcl.train.state
    with pytest.warns(DeprecationWarning, match="mvcl.train.optim.kernel_mask is deprecated"):
        assert optim.kernel_mask(params) == state.weight_matrix_mask(params)
    for old, new in [
        (runner.test_embeddings, runner.embed_test_split),
        (augment.normalize, augment.scale_pixels),
        (data.normalize, data.scale_pixels),
        (plots.kernel_cost, plots.loss_cost),
        (outputs.kernel_rows, outputs.loss_cost_rows),
    ]:
        assert old.__wrapped__ is new
        with pytest.warns(DeprecationWarning, match=f"use {new.__module__}.{new.__name__}"):
            with pytest.raises(TypeError):  # the warning comes before the call itself
                old()


OLD_SWEEP_FIELDS = [("kernel_cost", "loss_cost")]

MY_SWEEP = """
from ml_collections import config_dict
from mvcl.configs.sweeps import common as sweeps

def get_config(arg=None):
    config = sweeps.sweep_config("mine", "digits")
    config.grid.main = sweeps.block(["mv_dhel"], views=[2], batch_sizes=[8])
    config.{old}.ns = (16, 32)  # line 8
    config.{old}.d = config.{old}.d // 2  # line 9
    return config
"""


def test_the_table_of_old_sweep_fields_is_the_tested_one():
    assert dict(OLD_SWEEP_FIELDS) == _deprecation.MOVED_SWEEP_FIELDS


@pytest.mark.parametrize("old, new", OLD_SWEEP_FIELDS)
def test_old_sweep_fields_in_a_config_file_warn_at_its_line_and_set_the_new_field(
    old, new, tmp_path
):
    """A sweep config of one's own written for 0.1.0 still runs: the old field is the new one."""
    pytest.importorskip("flax")
    from mvcl.studies import grid

    path = tmp_path / "my_sweep.py"
    path.write_text(MY_SWEEP.format(old=old))
    message = f"config.{old} is deprecated and {GOES}: use config.{new}"
    with pytest.warns(FutureWarning, match=message) as record:
        sweep = grid.load_config_file(path)
    assert {(w.filename, w.lineno) for w in record} == {(str(path), 8), (str(path), 9)}
    assert sweep[new].ns == (16, 32) and sweep[new].d == 64
    assert old not in sweep and old not in sweep.to_dict()  # only the new name is a field


@pytest.mark.parametrize("old, new", OLD_SWEEP_FIELDS)
def test_old_sweep_fields_on_the_command_line_warn_once_and_set_the_new_field(
    old, new, monkeypatch
):
    pytest.importorskip("flax")
    from absl import flags

    from mvcl import configs

    argv = ["mvcl-sweep", "--config=sweeps/digits_claims:fake=True", f"--config.{old}.ns=4"]
    argv += [f"--noconfig.{old}.enabled"]
    flag_values = flags.FlagValues()
    configs.define_flag("config", None, "a sweep config", flag_values)
    monkeypatch.setattr(sys, "argv", argv)  # where ml_collections looks for the overrides
    with pytest.warns(FutureWarning) as record:
        flag_values(argv)
    moved = [w for w in record if f"config.{old} is deprecated and" in str(w.message)]
    assert re.search(f"{GOES}: use config.{new}$", str(moved[0].message))
    lines = {(w.filename, w.lineno) for w in moved}
    assert lines == {(__file__, moved[0].lineno)}  # one line: shown once
    assert flag_values.config[new].ns == (4,) and not flag_values.config[new].enabled


def test_a_plain_config_dict_with_the_old_sweep_field_is_read_with_a_warning():
    """A sweep config of one's own built as a plain ConfigDict (not common.sweep_config)."""
    pytest.importorskip("flax")
    from ml_collections import config_dict

    from mvcl.studies import outputs

    sweep = config_dict.ConfigDict({"kernel_cost": {"enabled": False}})
    with pytest.warns(FutureWarning, match=f"config.kernel_cost is deprecated and {GOES}"):
        assert outputs.loss_cost_settings(sweep) is sweep.kernel_cost


def test_reduction_axes_argument_warns_and_reduces_the_same_axis():
    s = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 6)))
    keep = jnp.asarray(np.random.default_rng(1).random((1, 5, 6)) > 0.3)
    reduction = backends.LSE
    for old, new in [((2,), -1), ((1,), -2)]:
        with pytest.warns(DeprecationWarning, match=r"axis=-1 \(over the keys\)"):
            got = reduction.dense(s, keep, axes=old)
        np.testing.assert_allclose(got, reduction.dense(s, keep, new), rtol=1e-6)
        with pytest.warns(DeprecationWarning):
            (m, l) = reduction.update(reduction.init(got.shape, s.dtype), s, keep, axes=old)
        np.testing.assert_allclose(m + jnp.log(l), got, rtol=1e-6)
    with (
        pytest.raises(ValueError, match="last or second-last axis"),
        pytest.warns(DeprecationWarning),
    ):
        reduction.dense(s, keep, axes=(0,))


def test_the_former_trainer_module_warns_and_keeps_only_its_public_names():
    pytest.importorskip("flax")
    from mvcl.train import config_checks, inputs, state, step, workdir

    with pytest.warns(
        DeprecationWarning,
        match=f"mvcl.train.trainer is deprecated and {GOES}: use mvcl.train.config_checks "
        r"\(DTYPES, LOSS_BACKENDS, num_train_steps, validate_config\), mvcl.train.inputs",
    ) as record:
        trainer = _fresh_import("mvcl.train.trainer")
    assert record[0].filename == __file__
    assert trainer.build_model is state.build_model and trainer.AXIS is step.AXIS
    assert trainer.validate_config is config_checks.validate_config
    assert trainer.load_config is workdir.load_config
    assert trainer.fake_source is inputs.fake_source
    assert len(trainer.__all__) == 20
    with pytest.raises(AttributeError, match="trainer._mean_metrics was removed: .* are in "):
        trainer._mean_metrics  # noqa: B018
    with pytest.raises(AttributeError, match="mvcl.train.step, mvcl.train.workdir$"):
        trainer._agree  # noqa: B018
    assert "_latest_step_on_disk" not in vars(trainer)


def test_the_former_processes_module_names_where_each_name_went():
    pytest.importorskip("flax")
    from mvcl import parallel, train
    from mvcl.train import signals

    expected = (
        "mvcl.train.processes is deprecated and will be removed in 0.2.0: use mvcl.parallel "
        "(agree, announce) and mvcl.train.signals (should_stop, stop_reason)"
    )
    with pytest.warns(DeprecationWarning, match=re.escape(expected)) as record:
        processes = _fresh_import("mvcl.train.processes")
    assert record[0].filename == __file__
    assert processes.agree is parallel.agree and processes.announce is parallel.announce
    assert processes.should_stop is signals.should_stop
    assert processes.stop_reason is signals.stop_reason
    del sys.modules["mvcl.train.processes"]
    delattr(train, "processes")
    with pytest.warns(DeprecationWarning, match="use mvcl.parallel") as record:
        assert train.processes.agree(True)  # the attribute of mvcl.train, as before
    assert record[-1].filename == __file__


@pytest.mark.parametrize(
    "script, command, flag",
    [
        ("pretrain", "mvcl-pretrain", "--workdir"),
        ("evaluate", "mvcl-evaluate", "--workdir"),
        ("sweep", "mvcl-sweep", "--outdir"),
        ("import_data", "mvcl-import", "--source"),
    ],
)
def test_the_old_command_paths_run_the_commands_with_a_warning(script, command, flag):
    pytest.importorskip("flax")
    path = REPO / "experiments" / f"{script}.py"
    proc = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = f"python experiments/{script}.py is deprecated and {GOES}: use {command}"
    assert re.search(f"FutureWarning: {expected}", proc.stderr), proc.stderr
    assert flag in proc.stdout
