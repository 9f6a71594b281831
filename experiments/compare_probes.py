r"""Linear probe by minibatch Adam (the default) against full-batch L-BFGS, on one checkpoint.

    mvcl-pretrain --config=digits --workdir=/tmp/digits
    python experiments/compare_probes.py --workdir=/tmp/digits --config=digits

Features of the run's train and test splits are extracted once (streamed, as `evaluate` does),
in float32 and in float16; then, for the backbone features, the projections and the raw pixels,
the test accuracy of

* ``lbfgs``: full-batch L-BFGS, ``--lbfgs_steps`` iterations, on float32 features (the probe
  mvcl used before evaluation streamed);
* ``minibatch``: minibatch Adam with ``config.eval``'s settings (``--config``, else the run's)
  on the float16 bank (what `mvcl.evaluation.evaluate` reports), and on float32 features.

Prints a table and writes ``experiments/results/probe_comparison.json``.
"""

import json
import os
import time

import numpy as np
from absl import app, flags

from mvcl import configs, data, evaluation, parallel, train

_WORKDIR = flags.DEFINE_string("workdir", None, "A pretraining run's directory.")
_CONFIG = configs.define_flag(
    "config", None, "Config whose data and eval settings to use (default: the run's)."
)
_LBFGS_STEPS = flags.DEFINE_integer("lbfgs_steps", 300, "L-BFGS iterations.")
_OUTPUT = flags.DEFINE_string(
    "output",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "probe_comparison.json"),
    "JSON output.",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    config = _CONFIG.value or train.load_config(_WORKDIR.value)
    step, variables = train.restore_variables(_WORKDIR.value, config)
    ds, ev = config.dataset, evaluation.eval_settings(config)
    mesh = parallel.make_mesh()
    model = train.build_model(config)
    banks = {}
    for dtype in ("float32", "float16"):
        for split, name in (("train", ds.train_split), ("test", ds.test_split)):
            source = data.load_split(ds.name, name, ds.data_dir)
            ids = (
                evaluation.train_subset(len(source), ev.train_examples)
                if split == "train"
                else np.arange(len(source))
            )
            banks[dtype, split] = evaluation.extract_features(
                model,
                variables,
                source,
                ids,
                mesh=mesh,
                crop_size=config.augment.crop_size,
                batch_size=ev.batch_size,
                image_size=ds.image_size,
                with_pixels=True,
                dtype=dtype,
            )
    (_, train_y), (_, test_y) = banks["float32", "train"], banks["float32", "test"]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    rows = []
    for features in evaluation.FEATURE_SETS:
        row = {"features": features}
        for method, dtype in (
            ("lbfgs", "float32"),
            ("minibatch", "float16"),
            ("minibatch", "float32"),
        ):
            train_x, test_x = banks[dtype, "train"][0][features], banks[dtype, "test"][0][features]
            start = time.perf_counter()
            if method == "lbfgs":
                acc = evaluation.linear_probe_accuracy(
                    train_x,
                    train_y,
                    test_x,
                    test_y,
                    num_classes=num_classes,
                    weight_decay=ev.probe_weight_decay,
                    steps=_LBFGS_STEPS.value,
                )
            else:
                acc = evaluation.minibatch_probe_accuracy(
                    train_x,
                    train_y,
                    test_x,
                    test_y,
                    num_classes=num_classes,
                    weight_decay=ev.probe_weight_decay,
                    epochs=ev.probe_epochs,
                    batch_size=ev.probe_batch_size,
                    learning_rate=ev.probe_lr,
                    mesh=mesh,
                )
            row[f"{method}_{dtype}"] = acc
            row[f"{method}_{dtype}_seconds"] = time.perf_counter() - start
        row["difference_points"] = 100 * (row["minibatch_float16"] - row["lbfgs_float32"])
        rows.append(row)

    print(f"{config.name} at step {step}: {len(train_y)} train / {len(test_y)} test examples")
    print(f"{'features':<12}{'L-BFGS f32':>12}{'Adam f16':>12}{'Adam f32':>12}{'diff (pts)':>12}")
    for row in rows:
        print(
            f"{row['features']:<12}{row['lbfgs_float32']:>12.2%}{row['minibatch_float16']:>12.2%}"
            f"{row['minibatch_float32']:>12.2%}{row['difference_points']:>12.2f}"
        )
    result = {
        "run": config.name,
        "step": step,
        "train_examples": len(train_y),
        "test_examples": len(test_y),
        "lbfgs_steps": _LBFGS_STEPS.value,
        "probe": {
            "epochs": ev.probe_epochs,
            "batch_size": ev.probe_batch_size,
            "lr": ev.probe_lr,
            "weight_decay": ev.probe_weight_decay,
        },
        "rows": rows,
    }
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"Wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
