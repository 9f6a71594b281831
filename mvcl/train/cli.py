"""The start every command-line entry point (``experiments/*.py``) shares."""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging

from mvcl import parallel


def start(argv: Sequence[str]) -> None:
    """Rejects stray arguments, quiets orbax's INFO logs and starts ``jax.distributed`` if asked.

    Call first in an ``absl.app`` main, before anything touches a device: several processes are
    joined by `mvcl.parallel.initialize` (``MVCL_COORDINATOR``, ``MVCL_NUM_PROCESSES``,
    ``MVCL_PROCESS_ID``); one process without them. ``--verbosity`` given on the command line wins.
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO
        logging.set_verbosity(logging.WARNING)
    parallel.initialize()
