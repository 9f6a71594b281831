"""The processes of a run: what they agree on, and what the first one prints.

`agree` and `should_stop` give every process the same answer (a blocking collective with
several); `stop_reason` names the signal that stops the run; `announce` prints on the first
process only.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from mvcl.train import signals


def agree(flag: bool) -> bool:
    """Whether ``flag`` holds on any process (a blocking collective with several)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.int32(flag)).any())


def should_stop(step: int, every: int) -> bool:
    """Whether to stop after ``step`` because of SIGTERM/SIGINT: every process gets the same answer.

    One process stops as soon as it has the signal. Several agree on it with a blocking
    collective, so only at every ``every``-th step (where the loop syncs for logging anyway).
    """
    if jax.process_count() > 1 and step % every:
        return False
    return agree(signals.received() is not None)


def stop_reason() -> str:
    name = signals.received()
    return name if name is not None else "A signal to another process"


def announce(message: str) -> None:
    """Prints on the first process only (tqdm-safe)."""
    if jax.process_index() == 0:
        tqdm.write(message)
