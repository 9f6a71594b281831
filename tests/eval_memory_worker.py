"""Streams `mvcl.evaluation.evaluate` over a large fake split; prints host memory as JSON.

    python tests/eval_memory_worker.py TRAIN_EXAMPLES TEST_EXAMPLES SIDE

Images (SIDE x SIDE x 3 uint8) are made on the fly from their index, so the split never exists
as a whole. A first evaluation of a small split compiles everything; then the resident set size
is read and the large split is evaluated. ``peak_growth_bytes`` is the process's peak resident
set size during the large evaluation (``VmHWM`` after resetting it through
``/proc/self/clear_refs``; where that is not allowed, ``ru_maxrss`` over the process's whole
life, an upper bound) minus the resident set size before it.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import psutil

from mvcl import evaluation, train
from mvcl.configs import digits


class FakeSplit:
    """``size`` records whose uint8 image and label are computed from the index when read."""

    def __init__(self, size: int, side: int):
        self.size, self.shape = size, (side, side, 3)

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices):
        idx = np.asarray(indices, np.int64)[:, None]
        pixels = np.arange(np.prod(self.shape), dtype=np.uint8)[None]
        # uint8 arithmetic (wraps modulo 256): no temporaries wider than the images
        images = (pixels * np.uint8(11) + (idx % 251).astype(np.uint8) * np.uint8(37)).reshape(
            len(idx), *self.shape
        )
        return [{"image": image, "label": int(i % 10)} for image, i in zip(images, indices)]

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]


def _reset_peak() -> bool:
    """Resets the kernel's peak resident set size of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """Peak resident set size since the last `_reset_peak` (``VmHWM``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(train_examples: int, test_examples: int, side: int) -> None:
    config = digits.get_config("views=2,width=0.0625")
    config.model.proj_dim = 8
    config.augment.crop_size = side
    config.eval.batch_size = 1024
    config.eval.pixel_baseline = False
    config.eval.probe_epochs = 1
    config.eval.probe_batch_size = 1024
    config.eval.geometry_examples = 64
    # On the CPU backend device buffers are host memory: one kNN similarity block is
    # test_examples x knn_chunk_size float32.
    config.eval.knn_chunk_size = 1024
    model = train.build_model(config)
    variables = model.init(jax.random.key(0), jnp.zeros((2, side, side, 3)), train=False)

    def run(n_train: int, n_test: int) -> dict[str, float]:
        sources = {"train": FakeSplit(n_train, side), "test": FakeSplit(n_test, side)}
        return evaluation.evaluate(config, model, variables, sources=sources)

    run(3 * config.eval.batch_size, test_examples)  # compiles the extraction and the probe
    gc.collect()
    reset = _reset_peak()
    before = psutil.Process().memory_info().rss
    results = run(train_examples, test_examples)
    peak = _peak_rss() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "rss_before_bytes": before,
                "peak_rss_bytes": peak,
                "peak_growth_bytes": peak - before,
                "train_images_bytes": train_examples * side * side * 3,
                "knn": results["backbone/knn"],
            }
        )
    )


if __name__ == "__main__":
    main(*map(int, sys.argv[1:4]))
