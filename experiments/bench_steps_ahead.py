r"""What bounding the host's lead over the devices costs: training throughput by steps_ahead.

    python experiments/bench_steps_ahead.py --config=digits --steps=150 --repeats=3 \
        --out=experiments/results/steps_ahead/bench_steps_ahead.json

The training loop lets the host dispatch at most ``config.train.steps_ahead`` steps beyond the
last completed one (`mvcl.train.loop`), so that signals, the progress line, the divergence guard
and failed saves act within a step or two of what the devices have done. This runs the same
short training (evaluation off, no checkpoint but the last) with each ``--ahead`` value, the
settings interleaved ``--repeats`` times (A B C A B C ...) so that a change in the machine's load
hits them alike, and reports the steps per second of the logged windows after the first (which
holds the compilation): the median over windows and repeats, and each setting's ratio to the
largest one (1000: effectively unbounded, the old behaviour).
"""

import json
import os
import statistics
import tempfile
import time

from absl import app, flags

from mvcl import configs
from mvcl.train import loop

_CONFIG = configs.define_flag("config", None, "Config name[:args] (mvcl.configs).")
_STEPS = flags.DEFINE_integer("steps", 150, "Training steps per run.")
_LOG = flags.DEFINE_integer("log_every", 25, "Steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per setting, interleaved.")
_AHEAD = flags.DEFINE_list("ahead", ["1", "2", "1000"], "steps_ahead values to compare.")
_OUT = flags.DEFINE_string("out", None, "JSON file to write the rows and the summary to.")
flags.mark_flags_as_required(["config"])


def run_once(ahead: int) -> list[float]:
    config = _CONFIG.value.copy_and_resolve_references()
    config.num_steps = _STEPS.value
    config.log_every_steps = _LOG.value
    config.checkpoint_every_steps = 10**9
    config.eval.enabled = False
    config.progress_bar = False
    config.train.steps_ahead = ahead
    with tempfile.TemporaryDirectory() as workdir:
        loop.train_and_evaluate(config, workdir, allow_config_change=[])
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            rates = [json.loads(line).get("train/steps_per_second") for line in f]
    return [r for r in rates if r is not None][1:]  # the first window holds the compilation


def main(argv):
    del argv
    settings = [int(a) for a in _AHEAD.value]
    windows: dict[int, list[float]] = {a: [] for a in settings}
    started = time.time()
    for repeat in range(_REPEATS.value):
        for ahead in settings:
            rates = run_once(ahead)
            windows[ahead].extend(rates)
            print(f"repeat {repeat} steps_ahead={ahead}: {', '.join(f'{r:.2f}' for r in rates)}")
    reference = statistics.median(windows[max(settings)])
    rows = []
    print(f"\n{'steps_ahead':>11} {'median steps/s':>14} {'vs ' + str(max(settings)):>8}")
    for ahead in settings:
        median = statistics.median(windows[ahead])
        rows.append(
            {
                "steps_ahead": ahead,
                "median_steps_per_second": median,
                "ratio_to_unbounded": median / reference,
                "window_steps_per_second": windows[ahead],
            }
        )
        print(f"{ahead:>11} {median:>14.3f} {median / reference:>8.3f}")
    load = os.getloadavg()[0]
    print(f"(1-minute load average {load:.1f} on {os.cpu_count()} CPUs)")
    if _OUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        result = {
            "config": _CONFIG.value.name,
            "steps": _STEPS.value,
            "log_every_steps": _LOG.value,
            "repeats": _REPEATS.value,
            "rows": rows,
            "seconds": time.time() - started,
            "load_average_end": load,
            "cpus": os.cpu_count(),
        }
        with open(_OUT.value, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
