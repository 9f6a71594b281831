"""glibc's malloc told to keep the memory it frees: every command-line program does this first.

XLA's CPU backend allocates its temporaries afresh on every call. With glibc's defaults, large
blocks are mapped from the kernel and unmapped on free, and the heap is trimmed, so every
training step touches fresh pages by the gigabyte (``time_v.txt`` of the Fashion-MNIST default
run). `keep_freed_memory` sets, through ``mallopt``: one arena, no mmap below 2 GiB, no
trimming. The process then reuses the memory of the previous step; its resident size stays at
its peak instead of rising and falling.

What it changed, measured: ``experiments/results/fashion_mnist_default/README.md``. The
settings must come before the XLA backend starts its threads (later, they made no difference);
`mvcl.train.cli.run` applies them before parsing flags. ``MVCL_SYSTEM_MALLOC=1`` keeps glibc's
defaults; on other C libraries nothing happens. Accelerator memory is XLA's own allocator's
and is not affected.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
KEEP = 2**31 - 1  # bytes: no trimming, and blocks up to 2 GiB come from the heap
OPT_OUT = "MVCL_SYSTEM_MALLOC"


def keep_freed_memory() -> bool:
    """Applies the settings of the module docstring; True if glibc took all of them."""
    if os.environ.get(OPT_OUT, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, KEEP), (M_TRIM_THRESHOLD, KEEP))
    return all([mallopt(param, value) == 1 for param, value in settings])
