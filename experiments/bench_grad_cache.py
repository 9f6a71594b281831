"""Gradient-caching benchmark: memory and time of a ResNet-18 train step, with and without caching.

The real train step (`mvcl.train.make_train_step`: views made on the device, ResNet-18 with the
CIFAR stem at 32x32 px, the global-batch loss, SGD) on one device, for N·V from 512 to 16,384
(V views of N images), once in one pass (``micro_batch = None``) and once gradient-cached
(``config.train.micro_batch``, images per chunk). For every row:

* ``temp_bytes``: the compiled step's temporary bytes per device
  (``jax.jit(step).lower(...).compile().memory_analysis()``); compiling allocates nothing, so
  every row is cheap to measure whatever its size;
* ``peak_rss_bytes`` and ``step_seconds`` (median of ``--repeats`` timed steps after a warm-up
  step) for the rows up to ``--time-max`` views (``--time-max 0``: none), each in a fresh process
  so its peak resident memory is its own (the JAX runtime and the compiler's memory included).

The loss is ``mv_infonce`` on the ``ring`` backend, which on one device streams tiles of the
similarity matrix, so its memory is linear in N·V and the encoder's activations are what the
one-pass step grows with. ``--width`` narrows the ResNet (channel multiplier) so the timed rows
run on a small CPU.

Usage::

    python experiments/bench_grad_cache.py                    # default grid
    python experiments/bench_grad_cache.py --width 1.0 --time-max 0   # full width, memory only
    python experiments/bench_grad_cache.py --quick            # smoke grid (N·V 512 and 1,024)
    python experiments/bench_grad_cache.py --sizes 512,4096,16384 --time-max 512
    python experiments/bench_grad_cache.py --render experiments/results/bench_grad_cache.json

Results go to ``experiments/results/bench_grad_cache.json`` (``--out``) and a markdown table to
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SIZES = (512, 1024, 2048, 4096, 8192, 16384)  # N·V


def run_row(args: argparse.Namespace) -> dict:
    """One (N, V, micro_batch) row in this process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mvcl import parallel
    from mvcl.configs import cifar10
    from mvcl.train.config_checks import validate_config
    from mvcl.train.state import (
        build_model,
        create_train_state,
        learning_rate_schedule,
        make_optimizer,
    )
    from mvcl.train.step import AXIS, make_train_step

    config = cifar10.get_config(f"fake=True,loss=mv_infonce,views={args.v},backend=ring")
    config.model.kwargs.width = args.width
    config.batch_size = config.dataset.fake_num_examples = args.n
    config.train.micro_batch = args.micro_batch
    validate_config(config, device_count=1, process_count=1)
    mesh = parallel.make_mesh(1)
    model = build_model(config, axis_name=AXIS)
    tx, schedule = make_optimizer(config, 100), learning_rate_schedule(config, 100)
    state = create_train_state(config, model, tx, mesh, channels=3)
    sharding = parallel.batch_sharding(mesh, AXIS)
    spec = jax.ShapeDtypeStruct((args.n, 32, 32, 3), jnp.uint8, sharding=sharding)
    step = make_train_step(config, model, tx, schedule, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, spec).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    row = {
        "n": args.n,
        "v": args.v,
        "nv": args.n * args.v,
        "micro_batch": args.micro_batch,
        "width": args.width,
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
        "compile_seconds": compile_seconds,
        "peak_rss_bytes": None,
        "step_seconds": None,
    }
    if args.time:
        rng = np.random.default_rng(0)
        images = jax.device_put(rng.integers(0, 256, (args.n, 32, 32, 3), np.uint8), sharding)
        state, metrics = compiled(state, images)  # warm-up
        jax.block_until_ready(metrics)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            state, metrics = compiled(state, images)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        row["step_seconds"] = float(np.median(times))
        row["step_seconds_all"] = times
        row["loss"] = float(metrics["loss"])
        row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return row


def worker_command(n: int, v: int, micro_batch: int | None, args, timed: bool) -> list[str]:
    command = [sys.executable, __file__, "--row", f"--n={n}", f"--v={v}", f"--width={args.width}"]
    command += [f"--repeats={args.repeats}"]
    if micro_batch is not None:
        command.append(f"--micro-batch={micro_batch}")
    if timed:
        command.append("--time")
    return command


def table(rows: list[dict]) -> str:
    """Markdown: one line per N·V, one-pass and cached side by side."""
    by_size: dict[int, dict] = {}
    for row in rows:
        by_size.setdefault(row["nv"], {})["cached" if row["micro_batch"] else "one_pass"] = row
    first = min(by_size)
    lines = [
        "| N·V | N | temp MiB one-pass | temp MiB cached | cached / smallest cached | "
        "step s one-pass | step s cached | time ratio | peak RSS MiB one-pass / cached |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mib = 2**20

    def fmt(value, scale=1.0, digits=1):
        return "–" if value is None else f"{value / scale:.{digits}f}"

    for nv in sorted(by_size):
        one, cached = by_size[nv].get("one_pass"), by_size[nv].get("cached")
        base = by_size[first].get("cached")
        growth = cached["temp_bytes"] / base["temp_bytes"] if cached and base else None
        t1 = one and one["step_seconds"]
        t2 = cached and cached["step_seconds"]
        ratio = t2 / t1 if t1 and t2 else None
        rss = f"{fmt(one and one['peak_rss_bytes'], mib, 0)} / "
        rss += fmt(cached and cached["peak_rss_bytes"], mib, 0)
        n = (one or cached)["n"]
        lines.append(
            f"| {nv:,} | {n:,} | {fmt(one and one['temp_bytes'], mib)} | "
            f"{fmt(cached and cached['temp_bytes'], mib)} | {fmt(growth, digits=2)} | "
            f"{fmt(t1, digits=2)} | {fmt(t2, digits=2)} | {fmt(ratio, digits=2)} | {rss} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", action="store_true", help="(internal) run one row and print it")
    parser.add_argument("--n", type=int)
    parser.add_argument("--v", type=int, default=4, help="views per image (default 4)")
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--time", action="store_true")
    parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 channel multiplier")
    parser.add_argument("--micro", type=int, default=32, help="micro_batch of the cached rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--time-max", type=int, default=1024, help="time rows up to this N·V (0: none)"
    )
    parser.add_argument("--quick", action="store_true", help="N·V 512 and 1,024 only")
    parser.add_argument("--sizes", default=None, help="comma-separated N·V (default: all)")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_grad_cache.json"))
    parser.add_argument("--render", metavar="FILE", help="print the table of a results file")
    args = parser.parse_args()
    if args.render:
        print(table(json.loads(Path(args.render).read_text(encoding="utf-8"))["rows"]))
        return
    if args.row:
        print(json.dumps(run_row(args)))
        return

    sizes = SIZES[:2] if args.quick else SIZES
    if args.sizes:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    rows = []
    load_before = os.getloadavg()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for nv in sizes:
        n = nv // args.v
        for micro_batch in (None, args.micro):
            timed = nv <= args.time_max
            done = subprocess.run(
                worker_command(n, args.v, micro_batch, args, timed),
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode:
                raise SystemExit(f"row N·V={nv} micro_batch={micro_batch} failed:\n{done.stderr}")
            row = json.loads(done.stdout.splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "benchmark": "bench_grad_cache",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": f"resnet18 (cifar stem) width {args.width}, 32x32x3",
        "loss": "mv_infonce, ring backend, D = 128",
        "views": args.v,
        "micro_batch": args.micro,
        "devices": 1,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(rows))


if __name__ == "__main__":
    main()
