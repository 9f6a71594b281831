"""experiments/bench_accelerator.py: its ``--quick`` run on the CPU (the code the accelerator runs,
at tiny sizes), so that the script cannot rot between device runs; and its argument checks."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mvcl.losses import registry

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "bench_accelerator.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_accelerator", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_accelerator"] = module
    spec.loader.exec_module(module)
    return module


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run (every section), its JSON and its printed tables."""
    out = tmp_path_factory.mktemp("accelerator") / "quick.json"
    # A budget no loaded CI machine reaches: every row is measured, none skipped for time.
    command = [sys.executable, str(SCRIPT), "--quick", "--budget", "1500", "--out", str(out)]
    done = subprocess.run(
        command, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def _torch_available():
    return importlib.util.find_spec("torch") is not None


@pytest.mark.slow
def test_quick_run_covers_every_section(quick):
    report, printed = quick
    assert report["quick"] is True
    assert report["device"]["platform"] == "cpu" and report["device"]["kind"] == "cpu"
    assert report["device"]["tile_defaults"]["min_tile"] == 384  # the CPU's rule
    for name in ("exactness", "loss_speed", "train_step", "grad_cache", "torch_reference"):
        section = report["sections"][name]
        assert section["status"] in ("ok", "skipped"), (name, section)
        assert not any("error" in r for r in section["rows"]), name
        assert not any(r.get("skipped") == "time budget" for r in section["rows"]), name
        assert f"## {name}" in printed
    for rate in report["matmul_gflops"].values():
        assert rate["gflops"] > 0


@pytest.mark.slow
def test_quick_exactness_every_case_within_goal(quick):
    section = quick[0]["sections"]["exactness"]
    rows = section["rows"]
    default = [r for r in rows if r["precision"] == "library default"]
    assert {r["case"] for r in default} == {case.id for _, case in registry.CASES}
    assert {r["backend"] for r in default} == {"dense", "blockwise", "gather", "ring"}
    for r in default:  # float32 at HIGHEST against float64: far below the 1e-5 goal on the CPU
        assert r["finite"], r
        assert 0 <= r["loss_rel_err"] < 1e-5 and 0 < r["grad_rel_err"] < 1e-5, r
        assert r["value_f64"] == pytest.approx(r["value"], rel=1e-5, abs=1e-5)
    assert any(r["tile"] for r in default)  # several tiles per group
    assert {r["loss"] for r in rows if r["precision"] == "default"} == {"mv_infonce", "mv_dhel"}
    assert section["goal_met"] is True
    assert section["worst_rel_err_default_precision"] < 1e-5


@pytest.mark.slow
def test_quick_loss_speed_rows_against_their_floors(quick):
    import mvcl

    report = quick[0]
    section = report["sections"]["loss_speed"]
    plan = report["plan"]
    main = [r for r in section["rows"] if not r.get("sweep")]
    expected = {
        (loss, backend, precision, nv)
        for loss in ("mv_infonce", "mv_dhel")
        for backend in ("dense", "blockwise")
        for precision in ("highest", "default")
        for nv in plan["speed_nv"]
    }
    assert {(r["loss"], r["backend"], r["precision"], r["nv"]) for r in main} == expected
    rates = report["matmul_gflops"]
    for r in section["rows"]:
        assert r["time_s"] > 0 and r["finite"] and r["temp_bytes"] is not None
        assert r["flops"] == mvcl.losses.spec(r["loss"]).flops(r["n"], r["v"], r["d"])
        rate = rates["float32_highest" if r["precision"] == "highest" else "float32_default"]
        assert r["floor_s"] == pytest.approx(r["flops"] / (rate["gflops"] * 1e9))
        assert r["x_floor"] == pytest.approx(r["time_s"] / r["floor_s"])
        if r["backend"] == "blockwise":
            assert r["tile"] >= 1
    sweep = [r for r in section["rows"] if r.get("sweep")]
    assert {r["tile"] for r in sweep} == set(plan["sweep_tiles"]) | {
        t for t, _ in plan["sweep_unroll"]
    }
    assert any(r["unroll_tiles"] for r in sweep)
    assert section["goal_met"] is None  # no row at N·V >= 32,768 in the quick run


@pytest.mark.slow
def test_quick_torch_reference_and_headline(quick):
    report = quick[0]
    section = report["sections"]["torch_reference"]
    if not _torch_available():
        assert section["status"] == "skipped" and "torch" in section["why"]
        assert report["headline"]["rows"] == []
        return
    rows = section["rows"]
    assert {(r["loss"], r["mode"]) for r in rows} == {
        (loss, mode) for loss in ("mv_infonce", "mv_dhel") for mode in ("float32", "tf32")
    }
    for r in rows:
        assert r["time_s"] > 0
        # the straightforward PyTorch loss is the loss mvcl computes (float64, same input)
        assert r["loss_rel_err"] < 1e-5, r
    head = report["headline"]["rows"]
    assert len(head) == len(rows) and report["headline"]["goal_met"] is None
    for h in head:
        assert h["speedup"] == pytest.approx(h["torch_s"] / h["mvcl_s"])
        assert h["mvcl_precision"] == ("highest" if h["torch_mode"] == "float32" else "default")


@pytest.mark.slow
def test_quick_train_step_and_grad_cache(quick):
    report = quick[0]
    plan = report["plan"]
    rows = report["sections"]["train_step"]["rows"]
    mine = [r for r in rows if r["framework"].startswith("mvcl")]
    assert [r["views"] for r in mine] == list(plan["train_views"])
    for r in mine:
        assert r["config"] == "imagenet1k" and r["dtype"] == "bfloat16"
        assert r["loss"] == "mv_dhel" and isinstance(r["loss_value"], float)
        assert r["batch_size"] == plan["train_batch"] and r["xla_flops"] > 0
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / r["median_step_s"])
        assert r["view_images_per_s"] == pytest.approx(r["images_per_s"] * r["views"])
        assert 0 < r["mfu_measured_bf16_matmul"]
    theirs = [r for r in rows if r["framework"].startswith("torchvision")]
    # measured, or skipped naming what is missing (torchvision, or torch itself as on CI)
    assert theirs and all("images_per_s" in r or "torch" in r["skipped"] for r in theirs)

    cache = report["sections"]["grad_cache"]["rows"]
    one, cached = cache
    assert one["mode"] == "one pass" and one["micro_batch"] is None
    assert cached["mode"] == "gradient-cached" and cached["batch_size"] == 4 * one["batch_size"]
    assert cached["batch_size"] % cached["micro_batch"] == 0
    assert cached["batch_size"] // cached["micro_batch"] == plan["cache_chunks"]
    for r in cache:
        assert r["median_step_s"] > 0 and r["total_bytes"] > 0 and r["views"] == 4


def test_bad_arguments_fail_in_one_line(tmp_path):
    for args, message in (
        (["--sections", "exactness,nope"], "unknown section(s) nope"),
        (["--budget", "0"], "--budget must be > 0"),
        (["--out", "a.json", "--out-dir", "b"], "not both"),
    ):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1], done


def test_device_file_names_and_render():
    bench = _module()
    assert bench.device_file_name("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
    assert bench.device_file_name("TPU v5 lite") == "TPU_v5_lite"
    assert bench.device_file_name("cpu") == "cpu"
    assert bench.device_file_name("  /?") == "device"
    assert bench.bf16_peak("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert bench.bf16_peak("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert bench.bf16_peak("cpu") is None
    report = {
        "device": {"kind": "x", "platform": "gpu", "jax": "0"},
        "budget_s": 420,
        "sections": {
            "loss_speed": {
                "status": "partial",
                "seconds": 1.0,
                "rows": [
                    dict(loss="mv_dhel", nv=32768, backend="dense", precision="highest"),
                    dict(loss="mv_dhel", nv=32768, backend="blockwise", precision="highest"),
                ],
            }
        },
    }
    report["sections"]["loss_speed"]["rows"][0].update(skipped="too big")
    report["sections"]["loss_speed"]["rows"][1].update(
        tile=8192, time_s=0.5, floor_s=0.25, x_floor=2.0, temp_bytes=2**20
    )
    text = bench.tables(report)
    assert "| mv_dhel | 32,768 | dense |" in text and "too big" in text
    assert "| 0.5 | 0.25 | 2.00 | 1 |" in text
    # a run killed mid-section left it "running", without its seconds: it still renders
    report["sections"]["loss_speed"] = {"status": "running", "rows": []}
    assert "## loss_speed: running (0 s of 0)" in bench.tables(report)


FAKE_TORCHVISION = '''
"""A stand-in for torchvision: models.resnet50 is a tiny convnet with an ``fc`` (the test's)."""
import torch

__version__ = "0.0-test"


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class models:
    @staticmethod
    def resnet50(weights=None):
        assert weights is None
        return _Net()
'''


@pytest.mark.slow
@pytest.mark.skipif(not _torch_available(), reason="torch is not installed")
def test_quick_torchvision_step_runs_beside_the_jax_step(tmp_path):
    """The torchvision part of the train-step section (the device has torchvision, CI may not):
    its step (projection head, channels_last, bf16 autocast, SGD, the PyTorch loss) runs on a
    stand-in ResNet-50, and its images/s is set beside mvcl's."""
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "torchvision.py").write_text(FAKE_TORCHVISION)
    out = tmp_path / "train.json"
    env = dict(_env(), PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path / 'fake'}")
    command = [sys.executable, str(SCRIPT), "--quick", "--sections", "train_step"]
    done = subprocess.run(
        command + ["--budget", "1500", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["sections"]) == {"train_step"}
    rows = report["sections"]["train_step"]["rows"]
    theirs = [r for r in rows if r["framework"].startswith("torchvision")]
    mine = {r["views"]: r for r in rows if r["framework"].startswith("mvcl")}
    assert [r["views"] for r in theirs] == report["plan"]["train_views"]
    for r in theirs:
        assert "error" not in r, r
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / r["median_step_s"])
        assert r["view_images_per_s"] == pytest.approx(r["images_per_s"] * r["views"])
        ratio = mine[r["views"]]["images_per_s"] / r["images_per_s"]
        assert r["mvcl_images_per_s_ratio"] == pytest.approx(ratio)


def test_one_pass_batch_estimate():
    bench = _module()
    gib = 2**30
    probe = dict(
        batch_size=256, argument_bytes=gib, output_bytes=gib, alias_bytes=gib, temp_bytes=64 * gib
    )  # 1 GiB of state, 0.25 GiB of temporaries per image
    batch, fit = bench.one_pass_batch(probe, 80 * gib, fallback=4)
    assert fit["fixed_bytes"] == gib and fit["temp_bytes_per_image"] == gib / 4
    assert batch == 288 == fit["one_pass_batch"]  # (0.92 * 80 - 1) * 4 = 290.4 -> 288
    assert bench.one_pass_batch(probe, None, fallback=4)[0] == 4
    assert bench.one_pass_batch(probe, gib // 2, fallback=4)[0] == 0  # not even the state fits
