"""One accelerator run: exactness, loss speed against the FLOP floor, a PyTorch reference, the
train step and gradient caching, in one command of at most 7 minutes on one H100.

Sections (each timed and guarded: a section that fails records its error in the JSON and the
others still run; a global budget, ``--budget`` seconds, is shared out among the sections and a
section that reaches its share skips its remaining rows with a note):

a. ``exactness``: every loss case of the registry (`mvcl.losses.registry.CASES`) on every
   backend (``gather`` and ``ring`` inside a 1-device ``shard_map``), float32 on the device at
   the library's default precision (HIGHEST for float32), against float64 on the host CPU (the
   ``dense`` backend under x64): relative error of the loss (absolute below 1) and of the
   gradient (‖Δg‖ / ‖g‖); MV-InfoNCE and MV-DHEL also at ``precision="default"`` (the
   platform's native passes: TF32 on recent GPUs), to show what the HIGHEST default buys.
b. ``loss_speed``: MV-InfoNCE and MV-DHEL forward+backward at N·V = 16,384, 32,768 and 65,536
   (V = 4, D = 128), ``dense`` and ``blockwise``, HIGHEST and default precision, each against
   its FLOP floor (`mvcl.losses.LossSpec.flops`) at the matmul rate measured in this run for
   that precision (`mvcl.timing.matmul_rate`), with the compiled temporary bytes; and a tile
   sweep of ``blockwise`` at N·V = 32,768 (tiles of 1,024 to 16,384 rows, two unrolling
   bounds), from which the platform's default tiles are chosen
   (`mvcl.backends.streaming.TILE_DEFAULTS`).
c. ``torch_reference`` (when torch imports): MV-InfoNCE and MV-DHEL written the straightforward
   way a PyTorch user would (one full similarity matrix, autograd), from docs/losses.md, in
   float32 and TF32: time and peak memory, and its loss checked against mvcl's float64 loss of
   the same input. The mvcl / PyTorch speed ratio at N·V = 32,768 is the headline.
d. ``train_step``: the ``imagenet1k`` config (ResNet-50, 224 px) in bfloat16 at batch 256, V = 2
   and 4 (`mvcl.train.memory_plan.time_train_step`): images/s, view-images/s, compile time and
   MFU from XLA's FLOP count against the device's bf16 peak (datasheet where known, and the
   bf16 matmul rate measured here); beside it a torchvision ResNet-50 step of the same shape
   (bf16 autocast, channels_last, SGD, the same projection head and loss) on ready-made views,
   or "skipped" where torchvision is missing.
e. ``grad_cache``: at V = 4, the largest batch one pass fits (estimated from the V = 4 train
   step's compiled memory, then compiled and run), and 4 times that batch gradient-cached
   (``config.train.micro_batch``): memory and time of both.

The PyTorch parts (c and d's torchvision step) run first, in a child process, so that JAX has not
yet taken the device's memory (and the two CUDA stacks never share a process).

Usage::

    python experiments/bench_accelerator.py                 # on the accelerator (about 7 min)
    python experiments/bench_accelerator.py --quick         # tiny sizes, on the CPU, < 1 min
    python experiments/bench_accelerator.py --sections exactness,loss_speed
    python experiments/bench_accelerator.py --render experiments/results/accelerator/X.json

The JSON goes to ``--out`` (default ``experiments/results/accelerator/<device kind>.json``, the
device kind of ``jax.devices()[0]`` with every character but letters, digits, '.', '_' and '-'
replaced by '_'; with ``--quick`` a scratch file in the temporary directory) and is rewritten
before every row, so a run cut short keeps what it measured. ``--out-dir DIR`` writes
``DIR/<device kind>.json`` instead. How the device run is prepared and carried:
``experiments/results/accelerator/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "accelerator"
SECTIONS = ("torch_reference", "exactness", "loss_speed", "train_step", "grad_cache")
# The share of the budget each section may use (the PyTorch child runs c and d's torchvision
# part); time a section leaves unused goes to the ones after it.
SHARES = {
    "torch_reference": 0.10,
    "exactness": 0.20,
    "loss_speed": 0.28,
    "train_step": 0.25,
    "grad_cache": 0.17,
}
TEMPERATURE = 0.1  # the imagenet1k config's; small temperatures are the hard case for float32
EXACT_GOAL = 1e-5
FLOOR_GOAL = 1.3
TORCH_GOAL = 10.0
BF16_PEAK_TFLOPS = (  # dense bf16 datasheet peaks (no sparsity), matched in order on device_kind
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L4", 121.0),
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of one mode: the device run and ``--quick``."""

    exact_multi: tuple[int, int]  # (N, V) of the multi-view cases
    exact_two: int  # N of the two-view cases (V = 2)
    exact_d: int
    exact_tile: int  # an extra blockwise/ring row with this many rows per tile (several tiles)
    exact_all_backends: bool  # every case on every backend (else one backend per case, in turn)
    speed_nv: tuple[int, ...]
    speed_v: int
    speed_d: int
    sweep_nv: int
    sweep_tiles: tuple[int, ...]
    sweep_unroll: tuple[tuple[int, int], ...]  # (tile, unroll_tiles) rows
    sweep_losses: tuple[str, ...]
    speed_calls: int  # calls per timed value (back to back)
    matmul_shapes: tuple[str, ...]
    train_batch: int
    train_views: tuple[int, ...]
    train_steps: int
    train_overrides: dict[str, Any]
    cache_views: int
    cache_cpu_batch: int  # one-pass batch where the platform reports no memory limit
    cache_steps: int
    cache_chunks: int  # the gradient-cached batch (4x the one-pass batch) in this many chunks


FULL = Plan(
    exact_multi=(1024, 4),
    exact_two=2048,
    exact_d=128,
    exact_tile=768,
    exact_all_backends=True,
    speed_nv=(16384, 32768, 65536),
    speed_v=4,
    speed_d=128,
    sweep_nv=32768,
    sweep_tiles=(2048, 4096, 8192, 16384),
    sweep_unroll=((4096, 8),),
    sweep_losses=("mv_infonce", "mv_dhel"),
    speed_calls=3,
    matmul_shapes=("square_8192", "rows_8192_d128"),
    train_batch=256,
    train_views=(2, 4),
    train_steps=5,
    train_overrides={},
    cache_views=4,
    cache_cpu_batch=64,
    cache_steps=2,
    cache_chunks=8,
)
QUICK = Plan(
    exact_multi=(12, 3),
    exact_two=16,
    exact_d=16,
    exact_tile=16,
    exact_all_backends=False,
    speed_nv=(64,),
    speed_v=4,
    speed_d=16,
    sweep_nv=32,
    sweep_tiles=(8,),
    sweep_unroll=((8, 1),),
    sweep_losses=("mv_infonce",),
    speed_calls=2,
    matmul_shapes=("square_1024",),
    train_batch=4,
    train_views=(4,),
    train_steps=1,
    # the same config and code at a size a 2-core CPU compiles in seconds
    train_overrides={
        "model.name": "small_cnn",
        "model.kwargs": {"width": 0.25},
        "model.proj_hidden_dim": 32,
        "augment.crop_size": 16,
        "dataset.fake_shape": (16, 16, 3),
    },
    cache_views=4,
    cache_cpu_batch=4,
    cache_steps=1,
    cache_chunks=4,
)


# ------------------------------------------------------------------------------------------------
# Budget, guards and the report.


class Budget:
    """The run's deadline, shared out among the sections by `SHARES`."""

    def __init__(self, seconds: float, sections: tuple[str, ...]):
        self.start = time.perf_counter()
        self.end = self.start + seconds
        self.pending = list(sections)

    def left(self) -> float:
        return self.end - time.perf_counter()

    def section_deadline(self, name: str) -> float:
        """Now plus this section's share of the time left (shares of the sections still to run)."""
        if name in self.pending:
            self.pending.remove(name)
        share = SHARES[name] / (SHARES[name] + sum(SHARES[s] for s in self.pending))
        return time.perf_counter() + max(0.0, self.left()) * share


class Section:
    """Rows of one section, with its deadline; `run` guards and times the whole section."""

    def __init__(self, name: str, deadline: float):
        self.name = name
        self.deadline = deadline
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def out_of_time(self, what: str, reserve: float = 0.0) -> bool:
        """True (and a note) when less than ``reserve`` seconds of the section's share are left."""
        if self.time_left() > reserve:
            return False
        self.notes.append(f"skipped for the time budget: {what}")
        return True

    save = staticmethod(lambda: None)
    """Called before each new row: writes the report so far (a run killed mid-section keeps it)."""

    def row(self, **fields: Any) -> dict:
        """Appends a row; `guard` fills in its error if its body raises."""
        self.save()
        self.rows.append(fields)
        return fields


@contextlib.contextmanager
def guard(row: dict):
    """Records an exception of one row as ``row["error"]`` and goes on."""
    try:
        yield
    except Exception as e:  # noqa: BLE001  (a failing row is recorded, the others still run)
        row["error"] = f"{type(e).__name__}: {e}"[:600]


def run_section(report: dict, name: str, deadline: float, body, *args, out=None) -> None:
    """Runs ``body(section, *args)`` until ``deadline`` (a ``time.perf_counter()`` value); with
    ``out``, the report is written there before every row and at the end."""
    section = Section(name, deadline)
    start = time.perf_counter()
    entry: dict[str, Any] = {"status": "running", "rows": section.rows}
    report["sections"][name] = entry
    if out is not None:
        section.save = lambda: write_report(report, out)
    entry["status"] = "ok"
    try:
        extra = body(section, *args) or {}
        entry.update(extra)
    except Exception as e:  # noqa: BLE001  (one failing section must not stop the others)
        entry["status"] = "error"
        entry["error"] = f"{type(e).__name__}: {e}"[:1000]
        entry["traceback"] = traceback.format_exc()[-3000:]
    entry["seconds"] = time.perf_counter() - start
    entry["budget_s"] = section.deadline - start
    entry["rows"] = section.rows
    if section.notes:
        entry["notes"] = section.notes
    if any("error" in r for r in section.rows) and entry["status"] == "ok":
        entry["status"] = "partial"
    report["sections"][name] = entry
    section.save()
    print(f"[{name}] {entry['status']} in {entry['seconds']:.1f} s", file=sys.stderr, flush=True)


def device_file_name(kind: str) -> str:
    """The device kind as a file name: letters, digits, '.', '_' and '-' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", kind).strip("._-")
    return name or "device"


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(out)


# ------------------------------------------------------------------------------------------------
# The PyTorch reference (child process): docs/losses.md's definitions written the straightforward
# way, one full similarity matrix and autograd.


def torch_mv_infonce(z, temperature):
    """L = 1/N Σ_i [ LSE_{l, (j,m) ≠ (i,l)} s(u_il, u_jm) − LSE_{l ≠ m} s(u_il, u_im) ]."""
    import torch
    import torch.nn.functional as F

    n, v, d = z.shape
    u = F.normalize(z, dim=-1)
    flat = u.reshape(n * v, d)  # instance-major: rows i·V .. i·V + V − 1 are instance i's views
    sim = flat @ flat.T / temperature
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    anchors = torch.logsumexp(sim.reshape(n, v * n * v), dim=1)
    pos = torch.einsum("ivd,iwd->ivw", u, u) / temperature
    pos = pos.masked_fill(torch.eye(v, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.logsumexp(pos.reshape(n, v * v), dim=1)
    return (anchors - positives).mean()


def torch_mv_dhel(z, temperature):
    """L = 1/N Σ_i [ Σ_l LSE_{j ≠ i} s(u_il, u_jl) − LSE_{l < m} s(u_il, u_im) ]."""
    import torch
    import torch.nn.functional as F

    n, v, _ = z.shape
    u = F.normalize(z, dim=-1)
    sim = torch.einsum("ivd,jvd->vij", u, u) / temperature  # (V, N, N): each view against itself
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    uniformity = torch.logsumexp(sim, dim=2).sum(dim=0)
    pos = torch.einsum("ivd,iwd->ivw", u, u) / temperature
    first, second = torch.triu_indices(v, v, offset=1, device=z.device)
    alignment = torch.logsumexp(pos[:, first, second], dim=1)
    return (uniformity - alignment).mean()


TORCH_LOSSES = {"mv_infonce": torch_mv_infonce, "mv_dhel": torch_mv_dhel}


def _torch_sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _torch_time(torch, device, fn, calls, repeats, deadline):
    fn()  # warm-up
    _torch_sync(torch, device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _torch_sync(torch, device)
        times.append((time.perf_counter() - start) / calls)
        if time.perf_counter() > deadline:
            break
    return times


def _loss_z(n: int, v: int, d: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).standard_normal((n, v, d)).astype(np.float32)


def torch_worker() -> None:
    """Reads the job (JSON) on stdin, prints the results (JSON) on stdout."""
    job = json.load(sys.stdin)
    deadline = time.perf_counter() + job["budget_s"]
    out: dict[str, Any] = {"loss_rows": [], "train_rows": [], "notes": []}
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"skipped": f"torch does not import: {e}"}))
        return
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    out["torch"] = torch.__version__
    out["device"] = torch.cuda.get_device_name(0) if cuda else "cpu"
    modes = {"float32": "highest", "tf32": "high"}  # torch.set_float32_matmul_precision

    def peak_reset():
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak():
        return int(torch.cuda.max_memory_allocated()) if cuda else None

    # c. the losses
    for nv in job["sizes"]:
        for name in ("mv_infonce", "mv_dhel"):
            for mode, matmul in modes.items():
                v = job["v"]
                row = {"loss": name, "n": nv // v, "v": v, "d": job["d"], "nv": nv, "mode": mode}
                out["loss_rows"].append(row)
                if time.perf_counter() > deadline:
                    row["skipped"] = "time budget"
                    continue
                try:
                    torch.set_float32_matmul_precision(matmul)
                    z = torch.tensor(_loss_z(nv // v, v, job["d"]), device=device)
                    z.requires_grad_(True)
                    loss_fn = TORCH_LOSSES[name]

                    def step(z=z, loss_fn=loss_fn):
                        loss = loss_fn(z, job["temperature"])
                        (grad,) = torch.autograd.grad(loss, z)
                        return loss, grad

                    peak_reset()
                    times = _torch_time(torch, device, step, job["calls"], 5, deadline)
                    loss, _ = step()
                    row.update(
                        time_s=float(sorted(times)[len(times) // 2]),
                        times_s=times,
                        peak_bytes=peak(),
                        loss_value=float(loss),
                    )
                except Exception as e:  # noqa: BLE001  (out of memory, mostly)
                    row["error"] = f"{type(e).__name__}: {e}"[:400]
                finally:
                    z = None
                    if cuda:
                        torch.cuda.empty_cache()
    torch.set_float32_matmul_precision("highest")
    # d. the torchvision ResNet-50 step on ready-made views
    try:
        import torchvision
    except ImportError as e:
        out["train_skipped"] = f"torchvision does not import: {e}"
        print(json.dumps(out))
        return
    out["torchvision"] = torchvision.__version__
    train = job["train"]
    for v in train["views"]:
        row = {"views": v, "batch_size": train["batch"], "crop_size": train["crop"]}
        out["train_rows"].append(row)
        if time.perf_counter() > deadline:
            row["skipped"] = "time budget"
            continue
        try:
            row.update(_torchvision_step(torch, torchvision, device, train, v, deadline))
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:400]
        finally:
            if cuda:
                torch.cuda.empty_cache()
    print(json.dumps(out))


def _torchvision_step(torch, torchvision, device, train, v, deadline) -> dict:
    """ResNet-50 + the SimCLR projection head, bf16 autocast, channels_last, SGD, on (B·V) views."""
    nn = torch.nn
    torch.backends.cudnn.benchmark = True
    model = torchvision.models.resnet50(weights=None)
    features = model.fc.in_features
    model.fc = nn.Sequential(  # as mvcl.models.heads.ProjectionHead
        nn.Linear(features, features, bias=False),
        nn.BatchNorm1d(features),
        nn.ReLU(inplace=True),
        nn.Linear(features, train["proj_dim"], bias=False),
        nn.BatchNorm1d(train["proj_dim"], affine=False),
    )
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)
    b, s = train["batch"], train["crop"]
    views = torch.randn(b * v, 3, s, s, device=device).to(memory_format=torch.channels_last)
    loss_fn = TORCH_LOSSES[train["loss"]]
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def step():
        with autocast:
            z = model(views)
        loss = loss_fn(z.float().reshape(b, v, -1), train["temperature"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    _torch_sync(torch, device)
    first = time.perf_counter() - start
    times = _torch_time(torch, device, step, 1, train["steps"], deadline)
    median = float(sorted(times)[len(times) // 2])
    return {
        "first_step_s": first,
        "step_s": times,
        "median_step_s": median,
        "images_per_s": b / median,
        "view_images_per_s": b * v / median,
        "peak_bytes": int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None,
    }


def run_torch_child(job: dict, timeout: float) -> dict:
    """The PyTorch parts in a child process (its own CUDA context, freed when it exits)."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--torch-worker"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the PyTorch child ran past {timeout:.0f} s and was stopped"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": f"the PyTorch child exited with {done.returncode}: {done.stderr[-800:]}"}
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------
# The JAX sections (this process).


@contextlib.contextmanager
def x64():
    """float64 in JAX inside the block (the config switch the test suite's ``x64`` fixture uses)."""
    import jax

    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def loss_fn(spec, case_kwargs: dict, backend: str, precision, tile: int | None, mesh):
    """The loss as a function of z: ``gather`` and ``ring`` inside a shard_map over ``mesh``."""
    import mvcl

    kernel = backend
    if tile is not None:
        kernel = mvcl.backends.get(backend, tile=tile)
    kwargs = spec.kwargs(TEMPERATURE, **case_kwargs)
    if backend in ("gather", "ring"):
        return mvcl.parallel.shard_loss(
            spec.fn, mesh, backend=kernel, precision=precision, **kwargs
        )
    return lambda z: spec.fn(z, backend=kernel, precision=precision, **kwargs)


def relative_errors(value, grad, ref_value, ref_grad) -> dict:
    import numpy as np

    value, grad = float(value), np.asarray(grad, np.float64)
    ref_grad = np.asarray(ref_grad, np.float64)
    return {
        "value": value,
        "value_f64": float(ref_value),
        # relative above 1, absolute below (docs/losses.md, "Float32")
        "loss_rel_err": abs(value - ref_value) / max(abs(ref_value), 1.0),
        "grad_rel_err": float(np.linalg.norm(grad - ref_grad) / np.linalg.norm(ref_grad)),
        "finite": bool(np.isfinite(value) and np.all(np.isfinite(grad))),
    }


def values_and_grads(fns: list, inputs: list) -> list:
    """``jax.value_and_grad`` of every ``fns[i]`` at ``inputs[i]``, compiled as one program (one
    compilation instead of one per loss); if that fails, each alone, so that a failing loss costs
    only its own row. Returns ``(value, grad)`` or the exception, per function."""
    import jax

    def one(f, z):
        return jax.jit(jax.value_and_grad(f))(z)

    try:
        return list(
            jax.jit(lambda *zs: [jax.value_and_grad(f)(z) for f, z in zip(fns, zs)])(*inputs)
        )
    except Exception:  # noqa: BLE001  (find the failing ones)
        results = []
        for f, z in zip(fns, inputs):
            try:
                results.append(one(f, z))
            except Exception as e:  # noqa: BLE001
                results.append(e)
        return results


def exactness_variants(
    plan: Plan, spec, case, index: int
) -> list[tuple[str, int | None, str | None]]:
    """(backend, tile, precision) of the rows of one case: every backend at the library's default
    (with ``plan.exact_all_backends``; else one backend per case, in turn), and for MV-InfoNCE and
    MV-DHEL also several tiles and ``precision="default"``."""
    backends = ("dense", "blockwise", "gather", "ring")
    if plan.exact_all_backends:
        variants = [(b, None, None) for b in backends]
    else:
        variants = [(backends[index % len(backends)], None, None)]
    if spec.name in ("mv_infonce", "mv_dhel") and case.id == spec.name:
        variants += [("blockwise", plan.exact_tile, None), ("ring", plan.exact_tile, None)]
        chosen = backends if plan.exact_all_backends else backends[index % 2 :: 2]
        variants += [(b, None, "default") for b in chosen]
    return variants


def exactness_section(section: Section, plan: Plan, mesh) -> dict:
    import jax
    import numpy as np

    import mvcl
    from mvcl.losses import registry

    cpu = jax.devices("cpu")[0]
    inputs, refs, planned = {}, {}, []
    for index, (spec, case) in enumerate(registry.CASES):
        n, v = (plan.exact_two, 2) if spec.two_view else plan.exact_multi
        inputs[case.id] = np.random.default_rng(index).standard_normal((n, v, plan.exact_d))
        for backend, tile, precision in exactness_variants(plan, spec, case, index):
            row = section.row(case=case.id, loss=spec.name, backend=backend, n=n, v=v)
            row.update(d=plan.exact_d, tile=tile, precision=precision or "library default")
            planned.append((row, spec, case, backend, tile, precision))
    # float64 references on the host CPU: the dense backend under x64, one program
    start = time.perf_counter()
    cases = [(spec, case) for spec, case in registry.CASES]
    with x64():
        fns = [loss_fn(spec, case.kwargs, "dense", None, None, None) for spec, case in cases]
        zs = [jax.device_put(inputs[case.id], cpu) for _, case in cases]
        for (_, case), result in zip(cases, values_and_grads(fns, zs)):
            if not isinstance(result, Exception):
                refs[case.id] = (float(result[0]), np.asarray(result[1], np.float64))
            else:
                refs[case.id] = result
    section.notes.append(f"float64 references: {time.perf_counter() - start:.1f} s")
    # float32 on the device: one program per (backend, tile, precision) variant
    groups: dict[tuple, list] = {}
    for item in planned:
        groups.setdefault(item[3:], []).append(item)
    # the goal's rows (every case at the default tile and precision) first, then what the HIGHEST
    # default buys (two losses per program: quick), then the several-tile rows
    groups = dict(sorted(groups.items(), key=lambda g: (g[0][1] is not None, g[0][2] is not None)))
    sharding = mvcl.parallel.batch_sharding(mesh)
    for (backend, tile, precision), items in groups.items():
        if section.out_of_time(f"{backend} tile={tile} precision={precision}"):
            for row, *_ in items:
                row["skipped"] = "time budget"
            continue
        start = time.perf_counter()
        fns, zs = [], []
        for _, spec, case, *_ in items:
            fns.append(loss_fn(spec, case.kwargs, backend, precision, tile, mesh))
            z = jax.device_put(inputs[case.id].astype(np.float32))
            zs.append(jax.device_put(z, sharding) if backend in ("gather", "ring") else z)
        for (row, _, case, *_), result in zip(items, values_and_grads(fns, zs)):
            ref = refs[case.id]
            if isinstance(ref, Exception):
                row["error"] = f"float64 reference: {type(ref).__name__}: {ref}"[:600]
            elif isinstance(result, Exception):
                row["error"] = f"{type(result).__name__}: {result}"[:600]
            else:
                row.update(relative_errors(result[0], result[1], *ref))
        section.notes.append(
            f"{backend} tile={tile} precision={precision}: {len(items)} losses in "
            f"{time.perf_counter() - start:.1f} s"
        )
    default = [r for r in section.rows if r["precision"] == "library default"]
    measured = [r for r in default if "grad_rel_err" in r]
    worst = max((max(r["loss_rel_err"], r["grad_rel_err"]) for r in measured), default=float("nan"))
    all_cases = {c.id for _, c in registry.CASES}
    return {
        "temperature": TEMPERATURE,
        "reference": "float64 on the host CPU (dense backend under x64)",
        "worst_rel_err_default_precision": worst,
        "goal": f"every case's float32 error <= {EXACT_GOAL:g} at the default precision",
        "goal_met": bool(
            len(measured) == len(default)
            and {r["case"] for r in measured} == all_cases
            and worst <= EXACT_GOAL
        ),
    }


def matmul_rates(plan: Plan, calls: int) -> dict:
    import jax
    import jax.numpy as jnp

    from mvcl.timing import matmul_rate

    highest = jax.lax.Precision.HIGHEST
    return {
        "float32_highest": matmul_rate(3, plan.matmul_shapes, precision=highest, calls=calls),
        "float32_default": matmul_rate(3, plan.matmul_shapes, precision=None, calls=calls),
        "bfloat16": matmul_rate(3, plan.matmul_shapes, dtype=jnp.bfloat16, calls=calls),
    }


@contextlib.contextmanager
def unroll_bound(unroll: int | None):
    """The platform's `unroll_tiles` replaced while a row is traced (the tile-sweep rows)."""
    from mvcl.backends import streaming

    if unroll is None:
        yield
        return
    import jax

    platform_ = jax.default_backend()
    previous = streaming.TILE_DEFAULTS.get(platform_)
    base = streaming.tile_defaults(platform_)
    streaming.TILE_DEFAULTS[platform_] = dataclasses.replace(base, unroll_tiles=unroll)
    try:
        yield
    finally:
        if previous is None:
            del streaming.TILE_DEFAULTS[platform_]
        else:
            streaming.TILE_DEFAULTS[platform_] = previous


def speed_row(section, plan, rates, loss, nv, backend, precision, tile=None, unroll=None):
    import jax
    import numpy as np

    import mvcl
    from mvcl.backends import streaming
    from mvcl.timing import time_value_and_grad

    spec = mvcl.losses.spec(loss)
    v, d = plan.speed_v, plan.speed_d
    n = nv // v
    groups, rows = spec.energy(n, v)
    used_tile = tile
    if backend == "blockwise" and tile is None:
        used_tile = min(streaming.default_tile(groups), rows)
    row = section.row(loss=loss, backend=backend, precision=precision, n=n, v=v, d=d, nv=nv)
    row.update(tile=used_tile, unroll_tiles=unroll, flops=spec.flops(n, v, d))
    rate = rates["float32_highest" if precision == "highest" else "float32_default"]["gflops"]
    row["floor_s"] = row["flops"] / (rate * 1e9)
    if section.out_of_time(f"{loss} {backend} {precision} N·V={nv} tile={tile}"):
        row["skipped"] = "time budget"
        return row
    limit = device_memory_limit()
    if backend == "dense" and limit and 3 * 4 * spec.similarity_entries(n, v) > 0.9 * limit:
        row["skipped"] = "its similarity matrices would not fit the device's memory"
        return row
    with guard(row):
        z = jax.device_put(_loss_z(n, v, d))
        fn = loss_fn(spec, {}, backend, precision, tile, None)
        with unroll_bound(unroll):
            budget = max(0.5, min(3.0, section.time_left() / 10))
            timing = time_value_and_grad(fn, z, repeats=5, budget_s=budget, calls=plan.speed_calls)
        value, grad = timing.compiled(z)
        row.update(
            compile_s=timing.compile_s,
            first_call_s=timing.first_call_s,
            times_s=list(timing.times_s),
            time_s=timing.median_s,
            x_floor=timing.median_s / row["floor_s"],
            temp_bytes=timing.temp_bytes,
            finite=bool(np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))),
        )
        del timing, value, grad, z
    return row


def loss_speed_section(section: Section, plan: Plan, rates: dict) -> dict:
    losses = ("mv_infonce", "mv_dhel")
    for nv in plan.speed_nv:  # the goal's rows first
        for loss in losses:
            for precision in ("highest", "default"):
                for backend in ("dense", "blockwise"):
                    speed_row(section, plan, rates, loss, nv, backend, precision)
    # the tile sweep: which tiles and unrolling suit this platform
    for precision in ("highest", "default"):
        for loss in plan.sweep_losses:
            for tile, unroll in [(t, None) for t in plan.sweep_tiles] + list(plan.sweep_unroll):
                r = speed_row(
                    section, plan, rates, loss, plan.sweep_nv, "blockwise", precision, tile, unroll
                )
                r["sweep"] = True
    timed = [r for r in section.rows if "time_s" in r and not r.get("sweep")]
    big = [r for r in timed if r["nv"] >= 32768 and r["precision"] == "highest"]
    return {
        "matmul_gflops": {k: v["gflops"] for k, v in rates.items()},
        "floor": "6·G·R²·D FLOPs (mvcl.losses.LossSpec.flops) at the matmul rate measured in "
        "this run for the row's precision",
        "goal": f"each backend <= {FLOOR_GOAL}x its floor at N·V >= 32,768 (HIGHEST)",
        "goal_met": all(r["x_floor"] <= FLOOR_GOAL for r in big) if big else None,
    }


def device_memory_limit() -> int | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def train_config(plan: Plan, views: int, batch: int, micro_batch: int | None = None):
    from mvcl.configs import imagenet1k

    config = imagenet1k.get_config(f"views={views}")
    config.model.dtype = "bfloat16"
    config.batch_size = batch
    config.num_devices = 1
    for key, value in plan.train_overrides.items():
        *parents, last = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        if isinstance(value, dict):
            from ml_collections import config_dict

            value = config_dict.ConfigDict(value)
        node[last] = value
    config.train.micro_batch = micro_batch
    return config


def step_row(config, steps: int) -> dict:
    """`mvcl.train.memory_plan.time_train_step`, its last loss as ``loss_value``."""
    from mvcl.train.memory_plan import time_train_step

    row = time_train_step(config, steps=steps)
    if "loss" in row:
        row["loss_value"] = row.pop("loss")
    return row


def bf16_peak(kind: str) -> float | None:
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in kind.lower():
            return tflops * 1e12
    return None


def train_step_section(section: Section, plan: Plan, rates: dict, kind: str, torch_out: dict):
    peak = bf16_peak(kind)
    measured_peak = rates["bfloat16"]["gflops"] * 1e9
    for v in plan.train_views:
        row = section.row(framework="mvcl (JAX)", views=v, batch_size=plan.train_batch)
        if section.out_of_time(f"the JAX train step at V = {v}", reserve=5.0):
            row["skipped"] = "time budget"
            continue
        with guard(row):
            config = train_config(plan, v, plan.train_batch)
            row.update(config="imagenet1k", run_name=config.name, model=config.model.name)
            row["dtype"] = config.model.dtype
            row.update(loss=config.loss.name, backend=config.loss.backend)
            row["crop_size"] = config.augment.crop_size
            row.update(step_row(config, plan.train_steps))
            per_step = row["median_step_s"]
            row["images_per_s"] = plan.train_batch / per_step
            row["view_images_per_s"] = plan.train_batch * v / per_step
            flops_s = row["xla_flops"] / per_step
            row["xla_tflops_per_s"] = flops_s / 1e12
            row["mfu_datasheet"] = flops_s / peak if peak else None
            row["mfu_measured_bf16_matmul"] = flops_s / measured_peak
    torch_rows = [
        dict(r, framework="torchvision (PyTorch)") for r in torch_out.get("train_rows", [])
    ]
    skipped = torch_out.get("train_skipped") or torch_out.get("skipped") or torch_out.get("error")
    section.rows += torch_rows
    if not torch_rows:
        section.rows.append({"framework": "torchvision (PyTorch)", "skipped": skipped})
    jax_rows = {r["views"]: r for r in section.rows if r["framework"].startswith("mvcl")}
    ok = []
    for r in torch_rows:
        mine = jax_rows.get(r["views"], {})
        if "images_per_s" in mine and "images_per_s" in r:
            r["mvcl_images_per_s_ratio"] = mine["images_per_s"] / r["images_per_s"]
            ok.append(r["mvcl_images_per_s_ratio"] >= 1.0)
    return {
        "bf16_peak_tflops_datasheet": None if peak is None else peak / 1e12,
        "bf16_matmul_tflops_measured": measured_peak / 1e12,
        "input": "random uint8 images of config.dataset.fake_shape; mvcl makes the views on the "
        "device, torchvision gets ready-made views",
        "goal": "the train step's images/s >= the torchvision step's",
        "goal_met": all(ok) if ok else None,
    }


def one_pass_batch(probe: dict, limit: int | None, fallback: int) -> tuple[int, dict]:
    """The largest one-pass batch, a multiple of 32, whose compiled memory fits 92 % of ``limit``,
    from one compiled step (``probe``: its batch and ``memory_analysis()`` bytes): the state's
    arguments and outputs stay, the temporaries grow in proportion to the batch. Without a
    limit (the CPU reports none), ``fallback``. Returns it and the estimate's figures."""
    fixed = probe["argument_bytes"] + probe["output_bytes"] - probe["alias_bytes"]
    per_image = probe["temp_bytes"] / probe["batch_size"]
    fit = {"probe_batch": probe["batch_size"], "fixed_bytes": fixed}
    fit["temp_bytes_per_image"] = per_image
    if limit:
        batch = max(0, int((0.92 * limit - fixed) // per_image) // 32 * 32)
    else:
        batch = fallback
        fit["note"] = "no device memory limit reported: the plan's batch"
    fit["one_pass_batch"] = batch
    return batch, fit


def grad_cache_section(section: Section, plan: Plan, report: dict) -> dict:
    from mvcl.train.memory_plan import time_train_step

    v = plan.cache_views
    limit = device_memory_limit()
    probe = next(
        (
            r
            for r in report["sections"].get("train_step", {}).get("rows", [])
            if r.get("views") == v and r.get("temp_bytes") and r["framework"].startswith("mvcl")
        ),
        None,
    )
    estimate: dict[str, Any] = {"device_bytes_limit": limit}
    if probe is None:  # no V = 4 train step measured: compile one (no run) for the estimate
        probe = time_train_step(train_config(plan, v, plan.train_batch), steps=0)
        probe["batch_size"] = plan.train_batch
    batch, fit = one_pass_batch(probe, limit, plan.cache_cpu_batch)
    estimate.update(fit)
    tries = [batch, int(batch * 0.8) // 32 * 32] if limit else [batch]
    one = None
    for b in tries:
        if b < 2:
            section.notes.append(f"no one-pass batch: the estimate gave {b}")
            break
        row = section.row(mode="one pass", views=v, batch_size=b, micro_batch=None)
        if section.out_of_time(f"one pass at batch {b}", reserve=10.0):
            row["skipped"] = "time budget"
            break
        with guard(row):
            row.update(step_row(train_config(plan, v, b), plan.cache_steps))
        if "error" not in row:
            one = row
            break
    if one is None:
        return {"estimate": estimate}
    b = one["batch_size"]
    micro = max(1, 4 * b // plan.cache_chunks)
    row = section.row(mode="gradient-cached", views=v, batch_size=4 * b, micro_batch=micro)
    if section.out_of_time(f"gradient-cached at batch {4 * b}", reserve=5.0):
        row["skipped"] = "time budget"
    else:
        with guard(row):
            row.update(step_row(train_config(plan, v, 4 * b, micro), plan.cache_steps))
    for r in section.rows:
        if "median_step_s" in r:
            r["images_per_s"] = r["batch_size"] / r["median_step_s"]
            r["total_bytes"] = (
                r["argument_bytes"] + r["output_bytes"] - r["alias_bytes"] + r["temp_bytes"]
            )
    return {"estimate": estimate}


def torch_reference_section(section: Section, torch_out: dict, report: dict) -> dict:
    """The PyTorch loss rows, checked against mvcl's float64 loss of the same input, and the
    headline ratios against loss_speed's rows (filled in by `headline` once those ran)."""
    import jax
    import numpy as np

    import mvcl

    if "loss_rows" not in torch_out:
        why = torch_out.get("skipped") or torch_out.get("error") or "no PyTorch results"
        section.notes.append(why)
        return {"status": "skipped" if "skipped" in torch_out else "error", "why": why}
    cpu = jax.devices("cpu")[0]
    refs: dict[tuple, float] = {}
    smallest = min((r["nv"] for r in torch_out["loss_rows"]), default=0)
    for r in torch_out["loss_rows"]:
        row = section.row(**r)
        if "loss_value" not in row or row["nv"] != smallest:  # float64 on the host: the smallest
            continue
        key = (row["loss"], row["n"], row["v"], row["d"])
        with guard(row):
            if key not in refs and not section.out_of_time(f"the float64 check of {key}"):
                z = _loss_z(row["n"], row["v"], row["d"]).astype(np.float64)
                with x64():
                    fn = mvcl.losses.spec(row["loss"]).bind(temperature=TEMPERATURE)
                    refs[key] = float(jax.jit(fn)(jax.device_put(z, cpu)))
            if key in refs:
                row["loss_f64_mvcl"] = refs[key]
                row["loss_rel_err"] = abs(row["loss_value"] - refs[key]) / max(abs(refs[key]), 1)
    return {
        "torch": torch_out.get("torch"),
        "device": torch_out.get("device"),
        "modes": "float32: set_float32_matmul_precision('highest'); tf32: ('high')",
    }


def headline(report: dict) -> dict:
    """mvcl / PyTorch speed ratios: PyTorch float32 against mvcl at HIGHEST, PyTorch TF32 against
    mvcl at the default precision; mvcl's faster backend of the row."""
    sections = report["sections"]
    mine = [r for r in sections.get("loss_speed", {}).get("rows", []) if "time_s" in r]
    theirs = [r for r in sections.get("torch_reference", {}).get("rows", []) if "time_s" in r]
    out = []
    for t in theirs:
        precision = "highest" if t["mode"] == "float32" else "default"
        candidates = [
            r
            for r in mine
            if (r["loss"], r["nv"], r["precision"]) == (t["loss"], t["nv"], precision)
            and not r.get("sweep")
        ]
        if not candidates:
            continue
        best = min(candidates, key=lambda r: r["time_s"])
        out.append(
            {
                "loss": t["loss"],
                "nv": t["nv"],
                "torch_mode": t["mode"],
                "mvcl_precision": precision,
                "mvcl_backend": best["backend"],
                "mvcl_s": best["time_s"],
                "torch_s": t["time_s"],
                "speedup": t["time_s"] / best["time_s"],
                "torch_peak_bytes": t.get("peak_bytes"),
                "mvcl_temp_bytes": best.get("temp_bytes"),
            }
        )
    at_goal = [r for r in out if r["nv"] == 32768]
    return {
        "rows": out,
        "goal": f">= {TORCH_GOAL:g}x the straightforward PyTorch loss at N·V = 32,768",
        "goal_met": all(r["speedup"] >= TORCH_GOAL for r in at_goal) if at_goal else None,
    }


# ------------------------------------------------------------------------------------------------
# Tables.


def _f(x, fmt=".3g"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return format(x, fmt)


def _mib(x):
    return "—" if x is None else f"{x / 2**20:,.0f}"


def _md(rows: list[dict], columns: list[tuple[str, Any]], measured: str, ident: int) -> list[str]:
    """A markdown table: one line per row; a row without ``measured`` shows its first ``ident``
    columns and why (skipped or error)."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|---" * len(columns) + "|"]
    for r in rows:
        cells = []
        for _, get in columns[: len(columns) if measured in r else ident]:
            try:
                cells.append(str(get(r)))
            except (KeyError, TypeError, ValueError):
                cells.append("")
        if measured not in r:
            cells.append(str(r.get("skipped") or r.get("error") or "not measured")[:160])
            cells += [""] * (len(columns) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "NOT met")


def _tile(r):
    return f"{r['tile']:,}" if r.get("tile") else "default"


EXACT_COLUMNS = [
    ("case", lambda r: r["case"]),
    ("backend", lambda r: r["backend"]),
    ("tile", _tile),
    ("precision", lambda r: r["precision"]),
    ("loss rel err", lambda r: _f(r["loss_rel_err"], ".1e")),
    ("grad rel err", lambda r: _f(r["grad_rel_err"], ".1e")),
]
SPEED_COLUMNS = [
    ("loss", lambda r: r["loss"]),
    ("N·V", lambda r: f"{r['nv']:,}"),
    ("backend", lambda r: r["backend"]),
    ("tile", _tile),
    ("unroll", lambda r: r.get("unroll_tiles") or "default"),
    ("precision", lambda r: r["precision"]),
    ("time s", lambda r: f"{r['time_s']:.4g}"),
    ("floor s", lambda r: f"{r['floor_s']:.3g}"),
    ("× floor", lambda r: f"{r['x_floor']:.2f}"),
    ("temp MiB", lambda r: _mib(r["temp_bytes"])),
]
TORCH_COLUMNS = [
    ("loss", lambda r: r["loss"]),
    ("N·V", lambda r: f"{r['nv']:,}"),
    ("mode", lambda r: r["mode"]),
    ("time s", lambda r: f"{r['time_s']:.4g}"),
    ("peak MiB", lambda r: _mib(r["peak_bytes"])),
    ("loss rel err vs mvcl float64", lambda r: _f(r.get("loss_rel_err"), ".1e")),
]
TRAIN_COLUMNS = [
    ("framework", lambda r: r["framework"]),
    ("V", lambda r: r["views"]),
    ("batch", lambda r: r["batch_size"]),
    ("images/s", lambda r: f"{r['images_per_s']:,.0f}"),
    ("view-images/s", lambda r: f"{r['view_images_per_s']:,.0f}"),
    ("compile s", lambda r: _f(r.get("compile_s"), ".1f")),
    ("MFU datasheet", lambda r: _f(r.get("mfu_datasheet"), ".1%")),
    ("MFU measured bf16", lambda r: _f(r.get("mfu_measured_bf16_matmul"), ".1%")),
]
CACHE_COLUMNS = [
    ("mode", lambda r: r["mode"]),
    ("batch", lambda r: r["batch_size"]),
    ("micro_batch", lambda r: r["micro_batch"] or "—"),
    ("total MiB", lambda r: _mib(r["total_bytes"])),
    ("temp MiB", lambda r: _mib(r["temp_bytes"])),
    ("step s", lambda r: f"{r['median_step_s']:.3g}"),
    ("images/s", lambda r: f"{r['images_per_s']:,.0f}"),
]
HEADLINE_COLUMNS = [
    ("loss", lambda r: r["loss"]),
    ("N·V", lambda r: f"{r['nv']:,}"),
    ("PyTorch", lambda r: r["torch_mode"]),
    ("mvcl", lambda r: f"{r['mvcl_backend']}, {r['mvcl_precision']}"),
    ("PyTorch s", lambda r: f"{r['torch_s']:.4g}"),
    ("mvcl s", lambda r: f"{r['mvcl_s']:.4g}"),
    ("speed-up", lambda r: f"{r['speedup']:.1f}x"),
]
TABLES = {  # columns, the field a measured row has, the columns that name a row
    "exactness": (EXACT_COLUMNS, "grad_rel_err", 4),
    "loss_speed": (SPEED_COLUMNS, "time_s", 6),
    "torch_reference": (TORCH_COLUMNS, "time_s", 3),
    "train_step": (TRAIN_COLUMNS, "images_per_s", 3),
    "grad_cache": (CACHE_COLUMNS, "median_step_s", 3),
}


def tables(report: dict) -> str:
    """The report as markdown tables, one per section, and the headline."""
    device = report.get("device", {})
    lines = [
        f"device: {device.get('kind')} ({device.get('platform')}), jax {device.get('jax')}; "
        f"wall {report.get('wall_s', 0):.0f} s of a {report.get('budget_s', 0):.0f} s budget"
    ]
    rates = report.get("matmul_gflops")
    if rates:
        lines.append(
            "matmul GFLOP/s: "
            + ", ".join(f"{k} {_f(v['gflops'], ',.0f')}" for k, v in rates.items())
        )
    for name in SECTIONS:
        sec = report["sections"].get(name)
        if sec is None:
            continue
        spent, share = sec.get("seconds", 0), sec.get("budget_s", 0)
        lines.append(f"\n## {name}: {sec['status']} ({spent:.0f} s of {share:.0f})")
        if sec.get("error"):
            lines.append(f"error: {sec['error']}")
        lines += [f"note: {note}" for note in sec.get("notes", [])[:5]]
        if "goal" in sec:
            lines.append(f"goal: {sec['goal']}: {_verdict(sec.get('goal_met'))}")
        lines += _md(sec.get("rows", []), *TABLES[name])
    head = report.get("headline")
    if head and head["rows"]:
        met = _verdict(head["goal_met"])
        lines.append(f"\n## headline: mvcl / PyTorch ({head['goal']}: {met})")
        lines += _md(head["rows"], HEADLINE_COLUMNS, "speedup", 3)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    parser.add_argument("--out", help="JSON file (default: results/accelerator/<kind>.json)")
    parser.add_argument("--out-dir", help="write <dir>/<device kind>.json")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds (default 420; quick 120)"
    )
    parser.add_argument(
        "--sections", help=f"comma-separated, of {', '.join(SECTIONS)} (default all)"
    )
    parser.add_argument("--render", metavar="JSON", help="print the tables of an earlier run")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 120.0 if args.quick else 420.0
    if args.budget <= 0:
        parser.error(f"--budget must be > 0 seconds, got {args.budget:g}")
    chosen = tuple(SECTIONS) if not args.sections else tuple(args.sections.split(","))
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    args.sections = tuple(s for s in SECTIONS if s in chosen)
    if args.out and args.out_dir:
        parser.error("give --out or --out-dir, not both")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.torch_worker:
        return torch_worker()
    if args.render:
        print(tables(json.loads(Path(args.render).read_text(encoding="utf-8"))))
        return
    # Before JAX starts: let the allocator take most of the device (the PyTorch child is done by
    # the time JAX allocates), so the largest one-pass batch is the device's.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    plan = QUICK if args.quick else FULL
    budget = Budget(args.budget, args.sections)
    report: dict[str, Any] = {
        "benchmark": "bench_accelerator",
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "budget_s": args.budget,
        "plan": dataclasses.asdict(plan),
        "temperature": TEMPERATURE,
        "device": {},
        "sections": {},
    }
    torch_out: dict = {}
    torch_deadline = time.perf_counter()
    if "torch_reference" in args.sections or "train_step" in args.sections:
        torch_deadline = budget.section_deadline("torch_reference")
        share = torch_deadline - time.perf_counter()
        job = {
            "budget_s": share,
            "sizes": list(plan.speed_nv),
            "v": plan.speed_v,
            "d": plan.speed_d,
            "temperature": TEMPERATURE,
            "calls": plan.speed_calls,
            "train": {
                "views": list(plan.train_views) if "train_step" in args.sections else [],
                "batch": plan.train_batch,
                "crop": plan.train_overrides.get("augment.crop_size", 224),
                "steps": plan.train_steps,
                "proj_dim": 128,
                "loss": "mv_dhel",  # the imagenet1k config's
                "temperature": TEMPERATURE,
            },
        }
        if "torch_reference" not in args.sections:
            job["sizes"] = []
        start = time.perf_counter()
        torch_out = run_torch_child(job, timeout=share + 120)
        report["torch_child_s"] = time.perf_counter() - start

    import jax

    import mvcl

    device = jax.devices()[0]
    kind = device.device_kind
    report["device"] = {
        "kind": kind,
        "platform": device.platform,
        "default_backend": jax.default_backend(),
        "count": jax.device_count(),
        "bytes_limit": device_memory_limit(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "tile_defaults": dataclasses.asdict(mvcl.backends.streaming.tile_defaults()),
    }
    if args.out:
        out = Path(args.out)
    elif args.out_dir:
        out = Path(args.out_dir) / f"{device_file_name(kind)}.json"
    elif args.quick:
        out = Path(tempfile.gettempdir()) / f"bench_accelerator-quick-{os.getpid()}.json"
    else:
        out = RESULTS / f"{device_file_name(kind)}.json"
    write_report(report, out)
    accelerator = device.platform != "cpu"
    calls = 10 if accelerator else 1
    start = time.perf_counter()
    try:
        rates = matmul_rates(plan, calls)
    except Exception as e:  # noqa: BLE001
        rates = {
            k: {"gflops": float("nan")} for k in ("float32_highest", "float32_default", "bfloat16")
        }
        report["matmul_error"] = f"{type(e).__name__}: {e}"
    report["matmul_gflops"] = rates
    report["matmul_s"] = time.perf_counter() - start
    mesh = mvcl.parallel.make_mesh(1)
    if "torch_reference" in args.sections:
        # the float64 check of its smallest rows: a few seconds past the child's share at most
        deadline = max(torch_deadline, time.perf_counter() + 30)
        run_section(
            report, "torch_reference", deadline, torch_reference_section, torch_out, report, out=out
        )
        write_report(report, out)
    jobs = {
        "exactness": (exactness_section, plan, mesh),
        "loss_speed": (loss_speed_section, plan, rates),
        "train_step": (train_step_section, plan, rates, kind, torch_out),
        "grad_cache": (grad_cache_section, plan, report),
    }
    for name, (body, *body_args) in jobs.items():
        if name in args.sections:
            run_section(report, name, budget.section_deadline(name), body, *body_args, out=out)
    report["headline"] = headline(report)
    report["wall_s"] = time.perf_counter() - budget.start
    write_report(report, out)
    print(tables(report))
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
