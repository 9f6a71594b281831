r"""Host input benchmark: images per second the grain pipeline delivers, and what training eats.

In one run, on one synthetic ImageNet-format data set (`mvcl.data.synthetic`: JPEGs of sides
uniform in [--min_side, --max_side], written once into --data_dir; nothing is downloaded):

1. **Reference**: a plain loop in this process over the same JPEGs (bytes read into memory first):
   PIL decode + resize, both as the ImageNet training layout does it (longer side to
   --whole_image_size, padded; `mvcl.data.fit_whole`) and as evaluation does it (shorter side to
   224, centre square). Images per second on one core.
2. **Pipeline**: `mvcl.data.BatchIterator` with the training layout and 0, 1, 2, ... grain worker
   processes (--workers): source images per second delivered to the training loop, after a
   warm-up batch (worker start-up is not counted). Its speed-up from 1 to 2 workers is the
   scaling figure; the per-worker rate is compared with the reference.
3. **Consumption**: the jitted train step of --config (`mvcl.train.make_train_step`, random
   images of the pipeline's layout on this machine's devices) in images per second, and the
   device cost of the whole-image layout: `mvcl.data.make_views` on padded 320 px images with
   their extents against 224 px centre squares, per image.

It prints a table and the host cores one accelerator needs: ``--accelerator_rate`` (the images
per second an accelerator trains ResNet-50 at 224 px; 2,000 by default, the order of one current
GPU/TPU chip) divided by the per-worker rate. Load averages before and after are recorded; on a
shared machine the figures are not a measurement.

Usage::

    python experiments/bench_input.py                    # 2,000 images of 300-500 px
    python experiments/bench_input.py --quick            # smoke test (seconds; not a measurement;
                                                         # JSON to the temporary directory)
    python experiments/bench_input.py --workers 0,1,2,4 --accelerator_rate 3000

Results go to ``experiments/results/bench_input.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from mvcl import configs

HERE = Path(__file__).resolve().parent


def reference_rates(jpegs: list[bytes], whole_size: int, square_size: int) -> dict[str, float]:
    """Images per second of plain PIL decode + resize loops (this process, one core)."""
    from PIL import Image

    from mvcl.data import input_pipeline

    def decode(b: bytes):
        return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))

    rates = {}
    for name, resize in (
        ("pil_decode_fit_whole", lambda im: input_pipeline.fit_whole(im, whole_size)),
        ("pil_decode_fit_square", lambda im: input_pipeline._fit_square(im, square_size)),
        ("pil_decode_only", lambda im: im),
    ):
        start = time.perf_counter()
        for b in jpegs:
            resize(decode(b))
        rates[name] = len(jpegs) / (time.perf_counter() - start)
    return rates


def pipeline_rate(source, workers: int, batch: int, images: int, whole_size: int) -> float:
    """Source images per second `BatchIterator` delivers with `workers` worker processes."""
    from mvcl import data

    it = data.BatchIterator(
        source, batch, seed=0, whole_image_size=whole_size, num_workers=workers, prefetch=2
    )
    next(it)  # start-up (worker processes, first batch)
    steps = max(1, images // batch)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    elapsed = time.perf_counter() - start
    it.close()
    return steps * batch / elapsed


def _time(fn, repeats: int) -> float:
    """Median seconds of `fn()` (blocked until ready) after one warm-up call."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def consumption(config, repeats: int) -> dict[str, float]:
    """Images per second of the config's train step on random images, on this backend."""
    from mvcl import parallel
    from mvcl.train import inputs
    from mvcl.train.config_checks import validate_config
    from mvcl.train.state import (
        build_model,
        create_train_state,
        learning_rate_schedule,
        make_optimizer,
    )
    from mvcl.train.step import AXIS, make_train_step

    config.dataset.fake = True
    whole = config.dataset.get("whole_image_size")
    side = whole or config.dataset.image_size or config.dataset.fake_shape[0]
    channels = config.dataset.fake_shape[-1]
    mesh = parallel.make_mesh()
    validate_config(config)
    tx = make_optimizer(config, 1000)
    schedule = learning_rate_schedule(config, 1000)
    model = build_model(config, axis_name=AXIS)
    state = create_train_state(config, model, tx, mesh, channels)
    step = make_train_step(config, model, tx, schedule, mesh)
    rng = np.random.default_rng(0)
    host = {"image": rng.integers(0, 256, (config.batch_size, side, side, channels), np.uint8)}
    if whole:
        host["valid"] = np.tile(np.int32([side * 3 // 4, side]), (config.batch_size, 1))
    batch = inputs.put_batch(host, parallel.batch_sharding(mesh, AXIS), config.batch_size)
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], batch)
        return metrics["loss"]

    seconds = _time(run, repeats)
    return {
        "train_step_seconds": seconds,
        "train_images_per_second": config.batch_size / seconds,
        "batch_size": config.batch_size,
        "devices": mesh.size,
        "image_side": side,
    }


def view_cost(views: int, batch: int, repeats: int, whole: int, square: int) -> dict[str, float]:
    """Seconds per image of `make_views` on padded `whole` px images vs `square` px squares."""
    import jax
    import jax.numpy as jnp

    from mvcl import data

    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    kwargs = dict(crop_size=224, jitter_strength=1.0, p_blur=0.5)
    padded = jnp.asarray(rng.integers(0, 256, (batch, whole, whole, 3), np.uint8))
    valid = jnp.tile(jnp.int32([whole * 3 // 4, whole]), (batch, 1))
    squares = jnp.asarray(rng.integers(0, 256, (batch, square, square, 3), np.uint8))
    t_whole = _time(lambda: data.make_views(key, padded, views, valid=valid, **kwargs), repeats)
    t_square = _time(lambda: data.make_views(key, squares, views, **kwargs), repeats)
    return {
        "views": views,
        "whole_seconds_per_image": t_whole / batch,
        "square_seconds_per_image": t_square / batch,
        "host_to_device_bytes_whole": whole * whole * 3,
        "host_to_device_bytes_square": square * square * 3,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data_dir",
        default=os.path.join(os.environ.get("TFDS_DATA_DIR", "./data"), "bench_input"),
        help="where the synthetic data set is written once (reused if there)",
    )
    p.add_argument("--num_images", type=int, default=2000)
    p.add_argument("--min_side", type=int, default=300)
    p.add_argument("--max_side", type=int, default=500)
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    p.add_argument("--batch_size", type=int, default=64, help="images per pipeline batch")
    p.add_argument("--images", type=int, default=2000, help="images timed per worker count")
    p.add_argument("--whole_image_size", type=int, default=320)
    p.add_argument("--config", default="imagenet100:width=0.25")
    p.add_argument("--train_batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--accelerator_rate", type=float, default=2000.0)
    p.add_argument("--quick", action="store_true", help="tiny smoke setting (not a measurement)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_input.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.num_images, args.images, args.batch_size = 64, 64, 16
        args.config, args.train_batch_size, args.repeats = "digits", 16, 1
        if args.out == str(HERE / "results" / "bench_input.json"):  # never over a measurement
            args.out = str(Path(tempfile.gettempdir()) / "bench_input_quick.json")
        args.data_dir += "_quick"

    from mvcl import data
    from mvcl.data import synthetic

    load_before = os.getloadavg()
    settings = synthetic.Settings(
        num_train=args.num_images, num_validation=1, min_side=args.min_side, max_side=args.max_side
    )
    synthetic.prepare_synthetic_jpeg(args.data_dir, settings)
    source = data.load_split(synthetic.SYNTHETIC_NAME, "train", args.data_dir)
    import tensorflow_datasets as tfds

    raw = tfds.data_source(
        synthetic.SYNTHETIC_NAME,
        split="train",
        data_dir=args.data_dir,
        download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    jpegs = [raw[i]["image"] for i in range(min(len(raw), args.images))]
    mean_bytes = float(np.mean([len(b) for b in jpegs]))

    results: dict = {
        "smoke": args.quick,
        "machine": {
            "platform": platform.platform(),
            "cpu_cores": data.input_pipeline.available_cores(),
            "load_average_before": load_before,
        },
        "data": {
            "images": len(source),
            "sides": [args.min_side, args.max_side],
            "mean_jpeg_bytes": mean_bytes,
            "whole_image_size": args.whole_image_size,
            "pipeline_batch_size": args.batch_size,
        },
    }
    results["reference"] = reference_rates(jpegs, args.whole_image_size, 224)
    workers = [int(w) for w in args.workers.split(",")]
    rates = {
        w: pipeline_rate(source, w, args.batch_size, args.images, args.whole_image_size)
        for w in workers
    }
    results["pipeline_images_per_second"] = {str(w): r for w, r in rates.items()}
    if 1 in rates and 2 in rates:
        results["speedup_1_to_2_workers"] = rates[2] / rates[1]
    per_worker = max(rates[w] / w for w in workers if w) if any(workers) else rates[0]
    results["per_worker_images_per_second"] = per_worker
    results["per_worker_vs_pil_reference"] = (
        per_worker / results["reference"]["pil_decode_fit_whole"]
    )
    results["accelerator_rate"] = args.accelerator_rate
    results["host_cores_per_accelerator"] = args.accelerator_rate / per_worker

    config = configs.load(args.config)
    config.batch_size = args.train_batch_size
    results["consumption"] = {"config": args.config, **consumption(config, args.repeats)}
    results["view_cost"] = view_cost(2, 8, args.repeats, args.whole_image_size, 224)
    results["machine"]["load_average_after"] = os.getloadavg()

    print(markdown(results))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"Wrote {args.out}")
    return results


def markdown(r: dict) -> str:
    """The README table of a results dict."""
    ref = r["reference"]
    lines = [
        "| what | images/s |",
        "|---|---:|",
        f"| PIL decode only, 1 core (reference) | {ref['pil_decode_only']:.0f} |",
        f"| PIL decode + whole image to {r['data']['whole_image_size']} px, 1 core (reference) "
        f"| {ref['pil_decode_fit_whole']:.0f} |",
        f"| PIL decode + 224 px centre square, 1 core | {ref['pil_decode_fit_square']:.0f} |",
    ]
    for w, rate in r["pipeline_images_per_second"].items():
        lines.append(f"| grain pipeline, {w} worker(s) | {rate:.0f} |")
    c = r["consumption"]
    lines.append(
        f"| train step of `{c['config']}` (batch {c['batch_size']}, "
        f"{c['image_side']} px input, {c['devices']} device(s)) | "
        f"{c['train_images_per_second']:.1f} |"
    )
    v = r["view_cost"]
    notes = [
        f"speed-up from 1 to 2 workers: {r.get('speedup_1_to_2_workers', float('nan')):.2f}x; "
        f"per worker {r['per_worker_images_per_second']:.0f} images/s = "
        f"{r['per_worker_vs_pil_reference']:.2f}x the PIL reference",
        f"host cores per accelerator at {r['accelerator_rate']:.0f} images/s (ResNet-50, 224 px): "
        f"{r['host_cores_per_accelerator']:.1f}",
        f"device views (V={v['views']}) per image: whole {v['whole_seconds_per_image'] * 1e3:.2f} "
        f"ms vs 224 px square {v['square_seconds_per_image'] * 1e3:.2f} ms; host-to-device "
        f"{v['host_to_device_bytes_whole']} vs {v['host_to_device_bytes_square']} bytes per image",
        f"load average before/after: {r['machine']['load_average_before'][0]:.1f} / "
        f"{r['machine']['load_average_after'][0]:.1f} on {r['machine']['cpu_cores']} cores"
        + ("; SMOKE RUN, not a measurement" if r["smoke"] else ""),
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


if __name__ == "__main__":
    main()
