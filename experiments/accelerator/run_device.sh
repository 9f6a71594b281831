#!/usr/bin/env bash
# The accelerator run, on the device machine, from the repository root (the copied tree): installs
# the carried wheels (.whl/, made by download_wheels.sh) offline into /tmp/site, prints the
# versions it runs with, then runs experiments/bench_accelerator.py under a timeout, its JSON
# (<device kind>.json) and its log written to $OUT (what comes back). Extra arguments go to the
# benchmark (e.g. --sections exactness,loss_speed). The exact device call is in
# experiments/results/accelerator/README.md.
#
#   bash experiments/accelerator/run_device.sh [benchmark arguments]
#
# LIMIT (seconds, default 540) bounds the benchmark; its own budget is 420 s (--budget), and it
# rewrites the JSON before every row, so a run stopped at LIMIT keeps what it measured.
set -uo pipefail
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/bench_accelerator_out}
LIMIT=${LIMIT:-540}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "run_device.sh: no wheels in $WHEELS/: run experiments/accelerator/download_wheels.sh here and carry .whl" >&2
    exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { echo "run_device.sh: installing the wheels failed" >&2; exit 3; }
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import importlib.metadata as m, platform
names = ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "chex",
         "numpy", "protobuf", "torch", "torchvision", "grain", "tensorflow-datasets")
print("python", platform.python_version())
for name in names:
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "missing")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv \
    2>&1 | tee -a "$OUT/versions.txt"
timeout -k 15 "$LIMIT" "$PYTHON" experiments/bench_accelerator.py --out-dir "$OUT" "$@" 2>&1 \
    | tee "$OUT/bench_accelerator.log"
rc=${PIPESTATUS[0]}
ls -l "$OUT"
exit "$rc"
