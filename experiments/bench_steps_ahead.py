r"""What bounding the host's lead over the devices costs: training throughput by steps_ahead.

    python experiments/bench_steps_ahead.py --config=digits --steps=150 --repeats=3 \
        --out=experiments/results/steps_ahead/bench_steps_ahead.json

The training loop lets the host dispatch at most ``config.train.steps_ahead`` steps beyond the
last completed one (`mvcl.train.loop`), so that signals, the progress line, the divergence guard
and failed saves act within a step or two of what the devices have done. This runs the same
short training (evaluation off, no checkpoint but the last) with each ``--ahead`` value, the
settings interleaved ``--repeats`` times (A B C A B C ...) so that a change in the machine's load
hits them alike, and reports each run's wall time (set-up and compilation included: the same
program for every setting) and its median per setting, with the ratio to the largest setting
(1000: effectively unbounded, the old behaviour). The logged ``train/steps_per_second`` cannot
be compared here: with an unbounded lead every step completes only at the end, which is the
reason for the bound.
"""

import json
import os
import statistics
import tempfile
import time

from absl import app, flags, logging

from mvcl import configs
from mvcl.train import loop

_CONFIG = configs.define_flag("config", None, "Config name[:args] (mvcl.configs).")
_STEPS = flags.DEFINE_integer("steps", 150, "Training steps per run.")
_LOG = flags.DEFINE_integer("log_every", 25, "Steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per setting, interleaved.")
_AHEAD = flags.DEFINE_list("ahead", ["1", "2", "1000"], "steps_ahead values to compare.")
_OUT = flags.DEFINE_string("out", None, "JSON file to write the rows and the summary to.")
flags.mark_flags_as_required(["config"])


def run_once(ahead: int) -> float:
    """Seconds of one training run with ``config.train.steps_ahead = ahead``."""
    config = _CONFIG.value.copy_and_resolve_references()
    config.num_steps = _STEPS.value
    config.log_every_steps = _LOG.value
    config.checkpoint_every_steps = 10**9
    config.eval.enabled = False
    config.progress_bar = False
    config.train.steps_ahead = ahead
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        loop.train_and_evaluate(config, workdir, allow_config_change=[])
        return time.perf_counter() - start


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    settings = [int(a) for a in _AHEAD.value]
    seconds: dict[int, list[float]] = {a: [] for a in settings}
    started = time.time()
    loads = []
    for repeat in range(_REPEATS.value):
        for ahead in settings:
            seconds[ahead].append(run_once(ahead))
            loads.append(os.getloadavg()[0])
            print(f"repeat {repeat} steps_ahead={ahead}: {seconds[ahead][-1]:.1f} s", flush=True)
    reference = statistics.median(seconds[max(settings)])
    rows = []
    print(f"\n{'steps_ahead':>11} {'median s/run':>12} {'vs ' + str(max(settings)):>8}")
    for ahead in settings:
        median = statistics.median(seconds[ahead])
        rows.append(
            {
                "steps_ahead": ahead,
                "median_run_seconds": median,
                "ratio_to_unbounded": median / reference,
                "run_seconds": seconds[ahead],
            }
        )
        print(f"{ahead:>11} {median:>12.1f} {median / reference:>8.3f}")
    print(f"(1-minute load averages {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs)")
    if _OUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        result = {
            "config": _CONFIG.value.name,
            "steps": _STEPS.value,
            "log_every_steps": _LOG.value,
            "repeats": _REPEATS.value,
            "rows": rows,
            "seconds": time.time() - started,
            "load_averages": loads,
            "cpus": os.cpu_count(),
        }
        with open(_OUT.value, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
