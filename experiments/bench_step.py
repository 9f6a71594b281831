r"""Time the training step of a config (random images of its shape), to size a run's budget.

    python experiments/bench_step.py --config=fashion_mnist --steps=5
    python experiments/bench_step.py --config=fashion_mnist:views=8 \
        --out=experiments/results/bench_step_fashion_mnist.json

Builds the model, optimiser and jitted step of ``--config`` exactly as a run does, feeds random
uint8 images of ``config.dataset.fake_shape`` (the data set is not read), compiles once, runs one
warm-up step, then times ``--steps`` steps (each waited for:
`mvcl.train.memory_plan.time_train_step`). Prints a table (compile time, median and min seconds
per step, the implied minutes per epoch of ``--epoch_size`` images and for the config's steps)
and appends the row to ``--out`` as JSON.
On a shared machine take the median of several runs. Like the commands, it first tells glibc's
malloc to keep freed memory (`mvcl.train.cli.keep_freed_memory`); ``MVCL_SYSTEM_MALLOC=1``
measures with glibc's defaults (the row's ``malloc`` field says which).
"""

import json
import os

from mvcl.train import cli

KEPT = cli.keep_freed_memory()  # before jax starts its backend, as the commands do

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mvcl import configs  # noqa: E402
from mvcl.train import memory_plan  # noqa: E402
from mvcl.train.config_checks import num_train_steps  # noqa: E402

_CONFIG = configs.define_flag(
    "config", None, "Config name[:args], e.g. fashion_mnist:views=8 (mvcl.configs), or a .py file."
)
_STEPS = flags.DEFINE_integer(
    "steps", 5, "Timed steps after the compiling one (0: only compile and count FLOPs)."
)
_EPOCH = flags.DEFINE_integer("epoch_size", 60000, "Training images per epoch (for the table).")
_OUT = flags.DEFINE_string("out", None, "JSON file to append the row to (a list of rows).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    kept = "keeps freed memory (mvcl.train.cli.keep_freed_memory)"
    print(f"malloc: {kept if KEPT else 'system defaults'}")
    config = _CONFIG.value
    steps_per_epoch = _EPOCH.value // config.batch_size
    num_steps = num_train_steps(config, steps_per_epoch)
    timing = memory_plan.time_train_step(
        config, steps=_STEPS.value, steps_per_epoch=steps_per_epoch
    )
    compile_s, flops = timing["compile_s"], timing["xla_flops"]
    times = timing.get("step_s", [])
    median = float(np.median(times)) if times else float("nan")
    fastest = min(times, default=float("nan"))
    row = {
        "config": config.name,
        "model": config.model.name,
        "model_kwargs": config.model.kwargs.to_dict(),
        "loss": config.loss.name,
        "views": config.num_views,
        "batch_size": config.batch_size,
        "crop_size": config.augment.crop_size,
        "devices": timing["devices"],
        "compile_s": compile_s,
        "first_step_s": timing.get("first_step_s"),
        "xla_gflops_per_step": flops / 1e9,
        "step_s": times,
        "median_step_s": median,
        "steps_per_epoch": steps_per_epoch,
        "run_steps": num_steps,
        "minutes_per_epoch": median * steps_per_epoch / 60,
        "run_minutes": median * num_steps / 60,
        "load_average": os.getloadavg()[0],
        "malloc": "kept" if KEPT else "system",  # mvcl.train.cli.keep_freed_memory
    }
    print(
        f"{'config':<32} {'compile s':>9} {'median s/step':>13} {'min s/step':>10} "
        f"{'min/epoch':>9} {'run steps':>9} {'run min':>8} {'XLA GFLOP/step':>14}"
    )
    print(
        f"{config.name:<32} {compile_s:>9.1f} {median:>13.3f} {fastest:>10.3f} "
        f"{row['minutes_per_epoch']:>9.1f} {num_steps:>9d} {row['run_minutes']:>8.1f} "
        f"{flops / 1e9:>14.1f}"
    )
    print(f"(1-minute load average {row['load_average']:.1f} on {os.cpu_count()} CPUs)")
    if _OUT.value:
        rows = []
        if os.path.exists(_OUT.value):
            with open(_OUT.value, encoding="utf-8") as f:
                rows = json.load(f)
        rows.append(row)
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        with open(_OUT.value, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    app.run(main)
