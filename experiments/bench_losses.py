"""Loss benchmark: forward+backward time and memory of every loss and backend, against a floor.

For each loss of the registry, backend and size (N instances, V views, D features, float32), the
time of ``jax.jit(jax.value_and_grad(loss))`` (median of repeats after a warm-up call) is compared
with its *FLOP floor*: the matmul FLOPs the loss cannot avoid (its record's
:meth:`mvcl.losses.LossSpec.flops`) divided by this machine's float32 matmul rate. The rate is
measured in the same run, at the start and again just before every row; the floor uses the
fastest of these (the strictest floor), and each row also reports its multiple of the floor at
the rate measured just before it, which follows the load on a shared machine. Memory is the
compiled temporary bytes per device (``memory_analysis()``) and the peak resident memory of the
process running the row.

On a shared or virtual machine the speed of the same code drifts by up to 2x over seconds to
minutes (the matmul rate measured before each row shows it), so one pass can land a row in a
slow spell. ``--rounds R`` (default 2) runs the whole grid R times, one pass after the other,
and keeps each row's fastest pass (its median); every pass's median is in the JSON
(``round_times_s``), and the floor stays at the fastest matmul rate of all passes.

Every (loss, backend) group runs in its own worker process, rows in increasing size, so each
row's peak RSS is its own (the high-water mark is reset before each row where Linux allows it;
it includes the JAX runtime and memory the allocator kept from the group's earlier rows).
Workers run with glibc's malloc told to keep freed memory (``GLIBC_TUNABLES``, see
:data:`MALLOC_TUNABLES`): XLA allocates its temporaries afresh on every call, and on this machine
first-touching fresh pages costs more than the arithmetic of a large dense loss. Pass
``--system-malloc`` to measure without it. The setting is worth using for training runs too.

Usage::

    python experiments/bench_losses.py                  # default grid, 2 passes, ~11 min
    python experiments/bench_losses.py --quick          # small smoke grid
    python experiments/bench_losses.py --losses mv_infonce,mv_dhel --n 2048 --v 4
    python experiments/bench_losses.py --devices 4      # adds gather and ring on 4 CPU devices
    python experiments/bench_losses.py --large          # mv_infonce at N·V = 65,536 and 262,144
    python experiments/bench_losses.py --large --n 16384  # only N·V = 65,536 (V = 4)

The tables go to stdout and the JSON to ``--out``. Without ``--out`` the JSON goes to a scratch
file in the temporary directory (its path is printed): the committed results in
``experiments/results/`` are only rewritten when named, e.g. the default grid with
``--out experiments/results/bench_losses.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Freed memory stays with the process (no munmap/trim), so XLA's per-call temporaries reuse pages
# that are already mapped instead of page-faulting fresh ones on every call.
MALLOC_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=4294967295"
    ":glibc.malloc.trim_threshold=68719476736"
)

D = 128
TEMPERATURE = 0.5
DEFAULT_N = (256, 1024, 4096)
DEFAULT_V = (2, 4, 8)
EXTRA_ROWS = (("mv_infonce", 2048, 4), ("mv_dhel", 2048, 4))  # every backend at N = 2048, V = 4
LARGE_ROWS = (16384, 65536)  # N at V = 4: N·V = 65,536 and 262,144
NO_WARMUP_FLOPS = 1e13  # rows above this (a minute or more per call) are timed once, cold
MAX_MATRIX_BYTES = 1 << 29  # materialising backends: skip rows whose similarity matrices exceed it
BASE_TIME = 3.0  # seconds of timed calls per row (at least one call, at most MAX_REPEATS)
MAX_REPEATS = 5


# ------------------------------------------------------------------------------------------------
# FLOP floors and similarity sizes come from each loss's record (mvcl.losses.LossSpec): an energy
# of G groups of R rows against R keys needs the similarity matmul (2·R²·D per group) forward and,
# backward, dQ = P·K and dK = Pᵀ·Q (2·R²·D each): 6·G·R²·D. The O(N·V²·D) alignment terms are
# left out.


def flops(loss: str, n: int, v: int, d: int) -> int:
    """The FLOP floor of ``loss`` at (N, V, D): :meth:`mvcl.losses.LossSpec.flops`."""
    import mvcl

    return mvcl.losses.spec(loss).flops(n, v, d)


def matrix_bytes(loss: str, n: int, v: int, devices: int) -> int:
    """Bytes of the float32 similarity matrices a materialising backend holds per device."""
    import mvcl

    return 4 * mvcl.losses.spec(loss).similarity_entries(n, v) // devices


# ------------------------------------------------------------------------------------------------
# Measurements (run inside the worker processes and, for the matmul rate, in the parent).


def matmul_rate(repeats: int = 9, shapes=("square_2048", "rows_8192_d128")) -> dict:
    """float32 matmul GFLOP/s (median of repeats) of a 2048³ product and of a loss-shaped
    (8192×128)·(128×8192) one; ``gflops`` is the faster (the stricter floor):
    :func:`mvcl.timing.matmul_rate` at the platform's default precision."""
    from mvcl.timing import matmul_rate as rate

    return rate(repeats, tuple(shapes))


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_row(row: dict, mesh_cache: dict) -> dict:
    """Compiles and times one row in this process; returns the measurements."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mvcl
    from mvcl import parallel
    from mvcl.timing import time_value_and_grad

    loss = mvcl.losses.spec(row["loss"])
    backend = row["backend"]
    if row.get("tile") and backend in ("blockwise", "ring"):
        backend = mvcl.backends.get(backend, tile=row["tile"])
    shape = (row["n"], row["v"], row["d"])
    local_rate = matmul_rate(repeats=3, shapes=("square_2048",))["gflops"]
    clean = _reset_peak_rss()
    z = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if row["devices"] > 1:
        mesh = mesh_cache.setdefault(row["devices"], parallel.make_mesh(row["devices"]))
        kwargs = loss.kwargs(temperature=TEMPERATURE)
        fn = parallel.shard_loss(loss.fn, mesh, backend=backend, **kwargs)
        z = jax.device_put(z, parallel.batch_sharding(mesh))
    else:
        fn = loss.bind(temperature=TEMPERATURE, backend=backend)
        z = jnp.asarray(z)
    timing = time_value_and_grad(
        fn, z, repeats=MAX_REPEATS, budget_s=BASE_TIME, warmup=not row.get("no_warmup")
    )
    out = dict(row, compile_s=timing.compile_s, local_gflops=local_rate)
    out["temp_bytes"] = timing.temp_bytes
    loss_value, grad = timing.compiled(z)
    out.update(
        first_call_s=timing.first_call_s,
        times_s=list(timing.times_s),
        time_s=timing.median_s,
        peak_rss_bytes=_peak_rss_bytes(),
        peak_rss_clean=clean,
        finite=bool(np.isfinite(float(loss_value)) and jnp.all(jnp.isfinite(grad))),
    )
    return out


def worker() -> None:
    """Reads rows (JSON) from stdin, prints one JSON line per row."""
    spec = json.load(sys.stdin)
    mesh_cache: dict = {}
    for row in spec["rows"]:
        try:
            result = run_row(row, mesh_cache)
        except Exception as e:  # a failing row is reported, the others still run
            result = dict(row, error=f"{type(e).__name__}: {e}"[:500])
        print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------
# The parent: plans the rows, starts the workers, prints and writes the results.


def plan(args) -> list[dict]:
    import mvcl

    losses = args.losses.split(",") if args.losses else list(mvcl.losses.NAMES)
    for name in losses:
        if name not in mvcl.losses.NAMES:
            raise SystemExit(f"unknown loss {name!r}; known: {', '.join(mvcl.losses.NAMES)}")
    if args.large:
        backends = [("blockwise", 1)] + ([("ring", args.devices)] if args.devices > 1 else [])
        chosen_n = [int(x) for x in args.n.split(",")] if args.n else LARGE_ROWS
        sizes = [("mv_infonce", n, 4) for n in chosen_n]
    else:
        single = ["dense", "blockwise"]
        multi = ["gather", "ring"] if args.devices > 1 else []
        chosen = args.backends.split(",") if args.backends else single + multi
        backends = [(b, 1 if b in single else args.devices) for b in chosen]
        ns = [int(x) for x in args.n.split(",")] if args.n else list(DEFAULT_N)
        vs = [int(x) for x in args.v.split(",")] if args.v else list(DEFAULT_V)
        if args.quick:
            ns, vs = [256, 1024], [2, 4]
        sizes = [(name, n, v) for name in losses for n in ns for v in vs]
        if not (args.n or args.v or args.quick):
            sizes += [s for s in EXTRA_ROWS if s[0] in losses]
    rows = []
    for name, n, v in sizes:
        if not mvcl.losses.spec(name).accepts_views(v):
            continue
        for backend, devices in backends:
            row = dict(loss=name, backend=backend, devices=devices, n=n, v=v, d=D, tile=args.tile)
            row["flops"] = flops(name, n, v, D)
            if row["flops"] > NO_WARMUP_FLOPS:
                row["no_warmup"] = True  # minutes per call: time the first call only
            if n % devices:
                row["skipped"] = f"N = {n} does not divide over {devices} devices"
            elif backend in ("dense", "gather"):
                size = matrix_bytes(name, n, v, devices)
                if size > args.max_matrix_bytes:
                    row["skipped"] = f"would materialise {size / 2**30:.1f} GiB of similarities"
            rows.append(row)
    return rows


def _worker_env(args) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if not args.system_malloc:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    if args.devices > 1:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
        ).strip()
    return env


def run_workers(groups: list[list[dict]], args, rate: float) -> list[dict]:
    results = []
    for rows in groups:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_worker_env(args),
        )
        proc.stdin.write(json.dumps({"rows": rows}))
        proc.stdin.close()
        for line in proc.stdout:
            result = json.loads(line)
            finish(result, rate)
            results.append(result)
            print(progress(result), file=sys.stderr, flush=True)
            if "local_gflops" in result:
                rate = max(rate, result["local_gflops"])
        proc.wait()
        done = {(r["loss"], r["backend"], r["n"], r["v"]) for r in results}
        for row in rows:  # a worker that died takes its remaining rows with it
            if (row["loss"], row["backend"], row["n"], row["v"]) not in done:
                results.append(dict(row, error=f"worker exited with {proc.returncode}"))
    return results


def best_of(passes: list[list[dict]]) -> list[dict]:
    """Each row's fastest pass (lowest median) with every pass's median as ``round_times_s``;
    a row that failed in every pass keeps its first error."""
    runs: dict = {}
    for results in passes:
        for r in results:
            runs.setdefault((r["loss"], r["backend"], r["n"], r["v"]), []).append(r)
    best = []
    for tries in runs.values():
        timed = [r for r in tries if "time_s" in r]
        if not timed:
            best.append(tries[0])
            continue
        fastest = min(timed, key=lambda r: r["time_s"])
        best.append(dict(fastest, round_times_s=[r["time_s"] for r in timed]))
    return best


def finish(result: dict, rate: float) -> None:
    """Floor and multiple of it at the run's reference rate (and at the rate measured just
    before the row, which follows the load of a shared machine)."""
    result["floor_s"] = result["flops"] / (rate * 1e9)
    if "time_s" in result:
        result["x_floor"] = result["time_s"] / result["floor_s"]
        result["x_floor_local"] = result["time_s"] * result["local_gflops"] * 1e9 / result["flops"]


def progress(r: dict) -> str:
    head = f"{r['loss']:>16} {r['backend']:>9} P={r['devices']} N={r['n']:>5} V={r['v']}"
    if "time_s" in r:
        return (
            f"{head}  {r['time_s']:8.3f} s  {r['x_floor_local']:5.2f}x floor at "
            f"{r['local_gflops']:.0f} GFLOP/s"
        )
    return f"{head}  {r.get('skipped') or r.get('error')}"


def _mib(x):
    return "" if x is None else f"{x / 2**20:,.0f}"


def table(results: list[dict]) -> str:
    lines = [
        "| loss | backend | devices | N | V | N·V | floor GFLOP | floor (s) | time (s) | × floor "
        "| × floor at row's rate | temp MiB/device | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [
            r["loss"],
            r["backend"],
            str(r["devices"]),
            str(r["n"]),
            str(r["v"]),
            f"{r['n'] * r['v']:,}",
            f"{r['flops'] / 1e9:,.1f}",
            f"{r['floor_s']:.3f}",
        ]
        if "time_s" in r:
            cells += [
                f"{r['time_s']:.3f}",
                f"{r['x_floor']:.2f}",
                f"{r['x_floor_local']:.2f}",
                _mib(r["temp_bytes"]),
                _mib(r["peak_rss_bytes"]),
            ]
        else:
            cells += ["—", "—", "—", "—", f"skipped: {r.get('skipped') or r.get('error')}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(results: list[dict]) -> str:
    """One line per (loss, N, V): each backend's time and its multiple of the floor, at the run's
    reference rate / at the rate measured just before the row."""
    backends = list(
        dict.fromkeys(
            f"{r['backend']}" + (f" ×{r['devices']}" if r["devices"] > 1 else "") for r in results
        )
    )
    cells: dict = {}
    for r in results:
        name = r["backend"] + (f" ×{r['devices']}" if r["devices"] > 1 else "")
        key = (r["loss"], r["n"], r["v"])
        cells.setdefault(key, {"floor": r["floor_s"]})[name] = (
            f"{r['time_s']:.3f} s ({r['x_floor']:.2f}× / {r['x_floor_local']:.2f}×)"
            if "time_s" in r
            else "skipped"
        )
    head = "| loss | N | V | N·V | floor (s) | " + " | ".join(backends) + " |"
    lines = [head, "|---" * (5 + len(backends)) + "|"]
    for (loss, n, v), c in cells.items():
        row = [loss, str(n), str(v), f"{n * v:,}", f"{c['floor']:.3f}"]
        lines.append("| " + " | ".join(row + [c.get(b, "") for b in backends]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", help="comma-separated registry names (default: all)")
    parser.add_argument("--backends", help="comma-separated: dense, blockwise, gather, ring")
    parser.add_argument("--n", help=f"comma-separated N (default {DEFAULT_N} + issue sizes)")
    parser.add_argument("--v", help=f"comma-separated V (default {DEFAULT_V})")
    parser.add_argument("--devices", type=int, default=1, help="simulated CPU devices for ring")
    parser.add_argument("--tile", type=int, default=None, help="tile rows of blockwise/ring")
    parser.add_argument("--quick", action="store_true", help="N in {256, 1024}, V in {2, 4}")
    parser.add_argument("--large", action="store_true", help="mv_infonce at N·V = 65,536, 262,144")
    parser.add_argument("--max-matrix-bytes", type=float, default=MAX_MATRIX_BYTES)
    parser.add_argument("--system-malloc", action="store_true", help="no GLIBC_TUNABLES")
    parser.add_argument(
        "--rounds", type=int, default=2, help="passes over the grid; each row keeps its fastest"
    )
    parser.add_argument(
        "--out", help="JSON results file (default: a scratch file in the temporary directory)"
    )
    parser.add_argument("--render", metavar="JSON", help="print the tables of an earlier run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    if args.render:
        report = json.loads(Path(args.render).read_text())
        print(f"float32 matmul rate: {report['matmul_gflops']['gflops']:.1f} GFLOP/s\n")
        print(summary(report["rows"]) + "\n\n" + table(report["rows"]))
        return

    import jax

    start = time.perf_counter()
    rows = plan(args)
    rate = matmul_rate()
    rate["gflops_start"] = rate["gflops"]
    print(
        f"float32 matmul: {rate['square_2048']:.1f} GFLOP/s (2048³), "
        f"{rate['rows_8192_d128']:.1f} GFLOP/s ((8192×128)·(128×8192)); floor at "
        f"{rate['gflops']:.1f} GFLOP/s",
        file=sys.stderr,
        flush=True,
    )
    todo = [r for r in rows if "skipped" not in r]
    groups: dict = {}
    for r in sorted(todo, key=lambda r: r["flops"]):
        key = (r["loss"], r["backend"], r["devices"])
        if args.large:
            key += (r["n"],)  # each large row alone: its own clean peak
        groups.setdefault(key, []).append(r)
    # The reference rate: the fastest the machine multiplied during the run (at the start or
    # just before any row of any pass), so every floor is as strict as this machine allows.
    passes = []
    for _ in range(args.rounds):
        passes.append(run_workers(list(groups.values()), args, rate["gflops"]))
        rate["gflops"] = max([rate["gflops"]] + [r.get("local_gflops", 0.0) for r in passes[-1]])
    results = best_of(passes)
    results += [r for r in rows if "skipped" in r]
    for r in results:
        finish(r, rate["gflops"])
    order = {k: i for i, k in enumerate((r["loss"], r["backend"], r["n"], r["v"]) for r in rows)}
    results.sort(key=lambda r: order[(r["loss"], r["backend"], r["n"], r["v"])])
    report = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "matmul_gflops": rate,
        "d": D,
        "temperature": TEMPERATURE,
        "dtype": "float32",
        "malloc": "system" if args.system_malloc else f"GLIBC_TUNABLES={MALLOC_TUNABLES}",
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "wall_s": time.perf_counter() - start,
        "rows": results,
    }
    scratch = args.out is None
    if scratch:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(tempfile.gettempdir()) / f"bench_losses-{stamp}-{os.getpid()}.json"
    else:
        out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nfloat32 matmul rate: {rate['gflops']:.1f} GFLOP/s; wall {report['wall_s']:.0f} s\n")
    print(summary(results))
    print()
    print(table(results))
    if scratch:
        print(
            f"\nwritten to the scratch file {out}; pass --out to write elsewhere (e.g. "
            "--out experiments/results/bench_losses.json replaces the committed results)",
            file=sys.stderr,
        )
    else:
        print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
