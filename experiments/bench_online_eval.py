r"""Time one online evaluation against one training step, for the digits and Fashion-MNIST defaults.

    python experiments/bench_online_eval.py --out=experiments/results/bench_online_eval.json
    python experiments/bench_online_eval.py --configs=digits --steps=3 --evals=2

For each config: the model, optimiser and jitted step as a run builds them (`bench_step.py`),
``--steps`` timed training steps on random uint8 images of the config's shape after a compiling
one, then an `mvcl.train.online_eval.OnlineEvaluator` on the config's subsets, one compiling
evaluation and ``--evals`` timed ones. Digits reads the bundled data set (written to
``--data_dir`` on first use); Fashion-MNIST reads its IDX files if ``config.dataset.source_dir``
has them, else fake images of its shape, as many as the subsets ask for (the row's ``data``
field says which). Prints a table with the fraction of training time the evaluation costs at
the config's ``config.eval.every_steps``, ``eval_s / (every_steps * step_s)`` (and at every
epoch of the data set's ``TRAIN_EXAMPLES`` in the row's ``fraction_at_every_epoch``), and writes the
rows and the first evaluation's metrics (at initialisation and after the timed steps) to
``--out`` as JSON. Single measurements on a shared machine: the row records the load average.
"""

import importlib
import json
import os
import time

from mvcl.train import cli

KEPT = cli.keep_freed_memory()  # before jax starts its backend, as the commands do

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mvcl import configs, parallel  # noqa: E402
from mvcl.train import inputs, online_eval  # noqa: E402
from mvcl.train.memory_plan import step_on_random_images  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["digits", "fashion_mnist"], "Config names (mvcl.configs).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed training steps after the compiling one.")
_EVALS = flags.DEFINE_integer("evals", 3, "Timed online evaluations after the compiling one.")
_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/mvcl_bench_data", "config.dataset.data_dir.")
_OUT = flags.DEFINE_string("out", None, "JSON file to write ({'rows': [...]}).")


def _data(config) -> str:
    """Points ``config`` at its data, or at fake images of its shape; says which."""
    config.dataset.data_dir = _DATA_DIR.value
    try:
        inputs.open_split(config, "test_split")
        return "real"
    except Exception:  # noqa: BLE001 - no data here: fake images of the data set's shape
        config.dataset.fake = True
        config.dataset.fake_num_examples = max(
            config.eval.online_train_examples, config.eval.online_test_examples
        )
        return "fake"


def bench(name: str) -> dict:
    config = configs.load(name)
    data = _data(config)
    mesh = parallel.make_mesh(None if config.num_devices == -1 else config.num_devices)
    model, state, step, batch = step_on_random_images(config, mesh)

    start = time.perf_counter()
    evaluator = online_eval.OnlineEvaluator(config, model, mesh)
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    at_init = evaluator.evaluate(state.variables())
    eval_compile_s = time.perf_counter() - start

    state, metrics = step(state, batch())
    jax.block_until_ready(metrics)
    step_times = []
    for _ in range(_STEPS.value):
        images = batch()
        start = time.perf_counter()
        state, metrics = step(state, images)
        jax.block_until_ready(metrics)
        step_times.append(time.perf_counter() - start)

    eval_times, results = [], {}
    for _ in range(_EVALS.value):
        start = time.perf_counter()
        results = evaluator.evaluate(state.variables())
        eval_times.append(time.perf_counter() - start)
    step_s, eval_s = float(np.median(step_times)), float(np.median(eval_times))
    every = int(config.eval.every_steps)
    train_examples = importlib.import_module(f"mvcl.configs.{name}").TRAIN_EXAMPLES
    steps_per_epoch = train_examples // config.batch_size
    return {
        "config": config.name,
        "data": data,
        "model": config.model.name,
        "views": config.num_views,
        "batch_size": config.batch_size,
        "devices": mesh.size,
        "online_train_examples": len(evaluator.train_labels),
        "online_test_examples": len(evaluator.test_labels),
        "every_steps": every,
        "setup_s": setup_s,
        "eval_first_s": eval_compile_s,
        "eval_s": eval_times,
        "median_eval_s": eval_s,
        "step_s": step_times,
        "median_step_s": step_s,
        "eval_over_step": eval_s / step_s,
        "fraction_of_training": eval_s / (every * step_s) if every else None,
        "steps_per_epoch": steps_per_epoch,
        "fraction_at_every_epoch": eval_s / (steps_per_epoch * step_s),
        "metrics_at_init": at_init,
        "metrics_after_steps": results,
        "load_average": os.getloadavg()[0],
        "malloc": "kept" if KEPT else "system",
    }


def main(argv):
    del argv
    rows = [bench(name) for name in _CONFIGS.value]
    print(
        f"{'config':<28} {'data':>5} {'step s':>7} {'eval s':>7} {'eval/step':>9} "
        f"{'every':>6} {'fraction':>9} {'per epoch':>9} {'1st eval s':>10}"
    )
    for r in rows:
        share = r["fraction_of_training"]
        fraction = "off" if share is None else f"{share:.1%}"
        print(
            f"{r['config']:<28} {r['data']:>5} {r['median_step_s']:>7.3f} "
            f"{r['median_eval_s']:>7.3f} {r['eval_over_step']:>9.2f} {r['every_steps']:>6d} "
            f"{fraction:>9} {r['fraction_at_every_epoch']:>9.1%} {r['eval_first_s']:>10.1f}"
        )
    print(f"(1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if _OUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        with open(_OUT.value, "w", encoding="utf-8") as f:
            json.dump({"rows": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
