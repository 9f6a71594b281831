"""Does gradient caching learn the same? Digits pretraining with and without ``micro_batch``.

Two comparisons on the bundled digits data set (`--config=digits`, small CNN, mv_dhel):

* **same learning**: batch 256, V = 4, one pass vs ``micro_batch = 32`` (8 chunks); the goal is
  the cached run's backbone linear-probe accuracy within 1 point of the one-pass run's;
* **memory**: batch 1,024, V = 8, one pass vs ``micro_batch = 64``: the measured peak resident
  memory of each run's process, side by side (plus their linear probes).

Every run is ``mvcl-pretrain`` (``python -m mvcl.pretrain``) in a fresh process (its peak RSS
is read with ``os.wait4``), in ``--workdir-root/<name>``; a run whose workdir already has a final
evaluation is read back, not rerun. With ``--seeds 0,1,2`` each comparison is repeated per seed.

Usage::

    python experiments/grad_cache_digits.py                       # full runs (100 epochs each)
    python experiments/grad_cache_digits.py --seeds 0,1,2
    python experiments/grad_cache_digits.py --smoke               # 2 steps per run, a smoke test

Results go to ``experiments/results/grad_cache_digits.json`` (``--out``) and a markdown table to
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# (name, batch_size, views, micro_batch)
RUNS = (
    ("b256_v4_one_pass", 256, 4, None),
    ("b256_v4_micro32", 256, 4, 32),
    ("b1024_v8_one_pass", 1024, 8, None),
    ("b1024_v8_micro64", 1024, 8, 64),
)


def final_eval(workdir: Path) -> dict | None:
    """The ``eval/*`` metrics of the last line of ``metrics.jsonl`` that has them, if any."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    evals = [line for line in lines if any(k.startswith("eval/") for k in line)]
    return evals[-1] if evals else None


def run(name, batch, views, micro_batch, seed, args) -> dict:
    workdir = Path(args.workdir_root) / f"{name}_seed{seed}"
    command = [
        sys.executable,
        "-m",
        "mvcl.pretrain",
        f"--config=digits:views={views}",
        f"--workdir={workdir}",
        f"--config.batch_size={batch}",
        f"--config.seed={seed}",
        "--config.progress_bar=False",
    ]
    if micro_batch is not None:
        command.append(f"--config.train.micro_batch={micro_batch}")
    if args.smoke:
        command += ["--config.num_steps=2", "--config.eval.probe_epochs=2"]
    row = {"name": name, "batch_size": batch, "views": views, "micro_batch": micro_batch}
    row.update(seed=seed, workdir=str(workdir), peak_rss_bytes=None, seconds=None)
    if final_eval(workdir) is None:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{name} (seed {seed}) failed: {' '.join(command)}")
        row.update(peak_rss_bytes=usage.ru_maxrss * 1024, seconds=time.perf_counter() - start)
    metrics = final_eval(workdir)
    row["linear_probe"] = metrics["eval/backbone/linear_probe"]
    row["knn"] = metrics["eval/backbone/knn"]
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| run | batch | V | micro_batch | seed | linear probe | kNN | peak RSS MiB | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rss = "–" if r["peak_rss_bytes"] is None else f"{r['peak_rss_bytes'] / 2**20:.0f}"
        minutes = "–" if r["seconds"] is None else f"{r['seconds'] / 60:.1f}"
        lines.append(
            f"| {r['name']} | {r['batch_size']} | {r['views']} | {r['micro_batch'] or '–'} | "
            f"{r['seed']} | {100 * r['linear_probe']:.1f} | {100 * r['knn']:.1f} | {rss} | "
            f"{minutes} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--workdir-root", default="workdirs/grad_cache_digits")
    parser.add_argument("--smoke", action="store_true", help="2 steps per run (a smoke test)")
    parser.add_argument("--out", default=str(HERE / "results" / "grad_cache_digits.json"))
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, batch, views, micro_batch in RUNS:
            rows.append(run(name, batch, views, micro_batch, seed, args))
            print(json.dumps(rows[-1]), flush=True)
    gaps = {}
    for seed in {r["seed"] for r in rows}:
        probe = {r["name"]: r["linear_probe"] for r in rows if r["seed"] == seed}
        gaps[seed] = 100 * (probe["b256_v4_micro32"] - probe["b256_v4_one_pass"])
    result = {
        "benchmark": "grad_cache_digits",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "smoke": args.smoke,
        "probe_gap_points_b256_v4": gaps,  # cached minus one-pass, per seed
        "rows": rows,
    }
    if not args.smoke:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(rows))
    print(f"linear-probe gap, micro_batch 32 minus one pass (points): {gaps}")


if __name__ == "__main__":
    main()
