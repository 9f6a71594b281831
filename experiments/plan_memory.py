r"""Device memory a config's train step needs, from the compiler (nothing is run).

    python experiments/plan_memory.py --config=cifar10
    python experiments/plan_memory.py --config=imagenet1k:views=4 \
        --device_memory_gib=16 --output=experiments/results/plan_memory_imagenet1k.json

    # as on 8 devices, simulated on the CPU:
    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        python experiments/plan_memory.py --config=cifar10 --device_memory_gib=1

Compiles the config's real train step for abstract inputs on the current backend and device
count and prints, per device: parameters + optimiser state, inputs, outputs, temporaries and the
total (`mvcl.train.memory_plan`), at ``--batch_per_device`` (default: the config's batch over the
devices); with ``--device_memory_gib=G``, also the largest batch per device whose total fits G
GiB (a search, one compilation per probe).

Figures compiled for the CPU estimate, and do not equal, a GPU's or TPU's: each backend fuses,
lays out, pads and rematerialises its own way. Run this on the accelerator for its own figures.
"""

import json
import os

import jax
from absl import app, flags

from mvcl import configs
from mvcl.train import memory_plan

_CONFIG = configs.define_flag(
    "config", None, "Config name[:args], e.g. cifar10:views=4 (mvcl.configs), or a .py file."
)
_MEMORY = flags.DEFINE_float("device_memory_gib", None, "Device memory budget G, in GiB.")
_BATCH = flags.DEFINE_integer("batch_per_device", None, "Images per device (default: config's).")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the figures as JSON to this file.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    config = _CONFIG.value
    backend = jax.default_backend()
    print(
        f"{config.name}: {config.model.name}, V={config.num_views}, loss {config.loss.name} "
        f"({config.loss.backend}), {config.model.dtype}; compiled for {jax.device_count()} "
        f"{backend} device(s)"
    )
    if backend == "cpu":
        print(
            "NOTE: compiled for the CPU. These figures estimate, and do not equal, what a GPU or "
            "TPU needs; run on the accelerator for its own."
        )
    result = {"config": config.name, "backend": backend, "device_count": jax.device_count()}
    plan = memory_plan.plan(config, _BATCH.value)
    print(memory_plan.format_plan(plan))
    result["plan"] = plan.as_dict()
    if _MEMORY.value is not None:
        budget = int(_MEMORY.value * memory_plan.GIB)
        batch, plans = memory_plan.largest_batch(config, budget)
        print(f"\nlargest batch per device that fits {_MEMORY.value:g} GiB: {batch}")
        print(f"{'batch/device':>14}{'total MiB':>14}")
        for p in sorted(plans, key=lambda p: p.batch_per_device):
            print(f"{p.batch_per_device:>14}{p.total_bytes / 1024**2:>14.1f}")
        result["device_memory_gib"] = _MEMORY.value
        result["largest_batch_per_device"] = batch
        result["search"] = [p.as_dict() for p in plans]
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
        with open(_OUTPUT.value, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"Wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
