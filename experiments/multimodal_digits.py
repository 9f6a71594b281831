"""Multimodal digits: one encoder per modality vs single-modality baselines, per loss.

    python experiments/multimodal_digits.py                      # 20 epochs, mv_dhel + mv_infonce
    python experiments/multimodal_digits.py --epochs=100         # the config's full budget

For every loss, `configs/digits_multimodal.py` is pretrained

* with ``modality=all``: V = 3 views, the image, its gradient field and its 1-D projection
  profile, each through its own encoder and projection head into one D;
* with ``modality=<m>`` for each of the three modalities: the single-modality baseline, V = 3
  augmented views of that modality through one shared encoder of the same architecture;

and evaluated (`mvcl.evaluation.multimodal`): linear probe and kNN of every modality's encoder
features, the probe on the raw modality input, and for the multimodal run the top-1 cross-modal
retrieval accuracy of every ordered pair of modalities over the 360 test images.

Writes ``results.json`` (every number, the wall times, the setup) and ``README.md`` (tables) to
``--outdir``. Runs live in ``--workdir/<run name>``; a finished run (``result.json`` there) is
read back instead of rerun, an unfinished one resumes from its checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mvcl import train
from mvcl.configs import digits_multimodal
from mvcl.data.digits import NUM_TEST

MODALITIES = digits_multimodal.MODALITIES


def run(arg: str, args: argparse.Namespace) -> dict:
    """Pretrains and evaluates ``configs/digits_multimodal.py:<arg>`` (or reads its result)."""
    config = digits_multimodal.get_config(arg)
    config.num_epochs = args.epochs
    config.seed = args.seed
    config.progress_bar = False
    if args.data_dir:
        config.dataset.data_dir = args.data_dir
    workdir = os.path.join(args.workdir, config.name)
    result_file = os.path.join(workdir, "result.json")
    if os.path.exists(result_file):
        with open(result_file, encoding="utf-8") as f:
            return json.load(f)
    start = time.perf_counter()
    out = train.train_and_evaluate(config, workdir)
    result = {
        "config": arg,
        "name": config.name,
        "steps": out["step"],
        "seconds": round(time.perf_counter() - start, 1),
        "eval": out["eval"],
    }
    with open(result_file, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def markdown(results: dict) -> str:
    """The write-up: setup, per-modality probe table, retrieval tables."""
    setup, runs = results["setup"], results["runs"]
    lines = [
        "# Multimodal digits: one encoder per modality, the same losses",
        "",
        f"Produced by `{setup['command']}` ({setup['epochs']} epochs = {setup['steps']} steps at "
        f"batch {setup['batch_size']}, seed {setup['seed']}; the {len(runs)} runs took "
        f"{setup['run_minutes']:.1f} min, pretraining and evaluation, on a 2-core CPU shared "
        "with other jobs).",
        "",
        "Each 8x8 digit gives three aligned *modalities* of its augmented crops: the image "
        "(small CNN), its x/y gradient field (small CNN) and its 16-value row/column projection "
        "profile (MLP), each with its own projection head into D = 128 "
        "(`configs/digits_multimodal.py`). *Multimodal*: V = 3, one view per modality. "
        "*Single-modality*: V = 3 augmented views of one modality through one shared encoder of "
        "the same architecture. *Raw input*: the probe on the flattened modality input.",
        "",
        "## Linear probe test accuracy per modality (kNN in brackets)",
        "",
    ]
    losses = setup["losses"]
    header = ["modality", "raw input"]
    for loss in losses:
        header += [f"{loss} single-modality", f"{loss} multimodal"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in MODALITIES:
        raw = runs[f"{losses[0]}/{m}"]["eval"][f"{m}/raw_linear_probe"]
        row = [m, f"{raw:.1%}"]
        for loss in losses:
            for key in (f"{loss}/{m}", f"{loss}/all"):
                e = runs[key]["eval"]
                row.append(f"{e[f'{m}/linear_probe']:.1%} ({e[f'{m}/knn']:.1%})")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Top-1 cross-modal retrieval over the test set (row: query, column: retrieved)",
        "",
        f"Chance is 1/{setup['test_size']} = {1 / setup['test_size']:.2%}.",
        "",
    ]
    for loss in losses:
        e = runs[f"{loss}/all"]["eval"]
        lines += [
            f"**{loss}** (mean over the 6 ordered pairs: {e['retrieval/mean']:.1%})",
            "",
            "| query \\ key | " + " | ".join(MODALITIES) + " |",
            "|" + "---|" * (len(MODALITIES) + 1),
        ]
        for a in MODALITIES:
            cells = ["—" if a == b else f"{e[f'retrieval/{a}->{b}']:.1%}" for b in MODALITIES]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--losses", default="mv_dhel,mv_infonce")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="workdirs/multimodal_digits")
    parser.add_argument("--outdir", default="experiments/results/multimodal_digits")
    parser.add_argument("--data_dir", default=None, help="default: the config's")
    args = parser.parse_args()
    losses = [name for name in args.losses.split(",") if name]

    start = time.perf_counter()
    runs = {}
    for loss in losses:
        for modality in ("all", *MODALITIES):
            runs[f"{loss}/{modality}"] = run(f"loss={loss},modality={modality}", args)
            print(f"{loss}/{modality}: {json.dumps(runs[f'{loss}/{modality}']['eval'])}")
    config = digits_multimodal.get_config()
    command = "python experiments/multimodal_digits.py" + (
        f" --epochs={args.epochs}" if args.epochs != 20 else ""
    )
    results = {
        "setup": {
            "command": command,
            "epochs": args.epochs,
            "steps": runs[f"{losses[0]}/all"]["steps"],
            "batch_size": config.batch_size,
            "seed": args.seed,
            "losses": losses,
            "temperature": config.loss.temperature,
            "proj_dim": config.model.proj_dim,
            "test_size": NUM_TEST,
            "wall_minutes": (time.perf_counter() - start) / 60,
            "run_minutes": sum(r["seconds"] for r in runs.values()) / 60,
        },
        "runs": runs,
    }
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.outdir, "README.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
