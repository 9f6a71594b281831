"""Quiet the messages a user sees on every run that say nothing about the run.

Dropped (and only these, matched by their exact openings; every other warning stays):

* tfds's "OpenCV is not installed. We recommend using OpenCV ..." (PIL decodes the images);
* tfds's "Variant folder ... has no dataset_info.json", "Downloading and preparing dataset ...",
  "Dataset ... downloaded and prepared to ..." and its progress bars while mvcl opens a data set
  (`quiet_data_preparation`): mvcl downloads nothing; the only data set it prepares is the bundled
  one, in well under a second;
* orbax's "CheckpointManagerOptions.read_only=True, setting ..." and "Given directory is read
  only" when a run is evaluated (the checkpointer is read-only on purpose);
* when a checkpoint save fails (`quiet_save_failures`, unless ``--verbose``): orbax's error logs
  with their tracebacks and the "RuntimeError: Event loop is closed" tracebacks its writes print
  as they are abandoned. The run reports the failure in one line (`mvcl.train.checkpoint`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

_LOG_NOISE = (
    "OpenCV is not installed. We recommend using OpenCV",
    "CheckpointManagerOptions.read_only=True, setting",
    "Given directory is read only",
)
_PREPARATION_LOG_NOISE = ("Variant folder",)
_PREPARATION_PRINTS = ("Downloading and preparing dataset", "Dataset ")


class _DropMessages(logging.Filter):
    def __init__(self, openings: tuple[str, ...]):
        super().__init__()
        self.openings = openings

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not message.startswith(self.openings)


_FILTER = _DropMessages(_LOG_NOISE)


def install() -> None:
    """Drops the always-on noise from the ``absl`` logger (tfds and orbax log through it).

    Idempotent; the filter stays for the life of the process.
    """
    logger = logging.getLogger("absl")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


class _DropPrints:
    """A stdout wrapper dropping tfds's preparation messages (and the newline print adds)."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._skip_newline = False

    def write(self, text: str) -> int:
        if any(opening in text for opening in _PREPARATION_PRINTS) and "prepar" in text:
            self._skip_newline = True
            return len(text)
        if self._skip_newline and text == "\n":
            self._skip_newline = False
            return len(text)
        self._skip_newline = False
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_data_preparation() -> Iterator[None]:
    """Opens data sets without tfds's preparation messages and progress bars (see above)."""
    from tensorflow_datasets.core.utils import tqdm_utils  # heavy import

    install()
    logger = logging.getLogger("absl")
    preparation = _DropMessages(_PREPARATION_LOG_NOISE)
    logger.addFilter(preparation)
    bars = getattr(tqdm_utils, "_active", True)
    tqdm_utils.display_progress_bar(False)
    stdout = sys.stdout
    sys.stdout = _DropPrints(stdout)
    try:
        yield
    finally:
        sys.stdout = stdout
        tqdm_utils.display_progress_bar(bars)
        logger.removeFilter(preparation)


class _DropOrbaxErrors(logging.Filter):
    """Drops orbax's ERROR records (a failed save's tracebacks, reported by mvcl in one line),
    and asyncio's "Task exception was never retrieved" for orbax's abandoned writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if "/orbax/" in record.pathname:
            return False
        try:
            return "/orbax/" not in record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True


_ABANDONED = "RuntimeError: Event loop is closed"


class _DropAbandonedWrites:
    """A stderr wrapper dropping the traceback blocks that end in ``_ABANDONED``: tensorstore's
    write callbacks of a failed orbax save, printed after its event loop closed."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._block: list[str] | None = None
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._line(line + "\n")
        if self._block is None and self._partial and not self._partial.startswith("Traceback"):
            self._stream.write(self._partial)  # (a progress bar's line without its newline)
            self._partial = ""
        return len(text)

    def _line(self, line: str) -> None:
        if self._block is None:
            if line.startswith("Traceback (most recent call last):"):
                self._block = [line]
            else:
                self._stream.write(line)
            return
        self._block.append(line)
        if line[:1] not in (" ", "\t"):  # the exception's own line ends the block
            if not line.startswith(_ABANDONED):
                self._stream.write("".join(self._block))
            self._block = None

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def quiet_save_failures() -> None:
    """Installs the filters of a failed save's noise (module docstring), for the process."""
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropOrbaxErrors) for f in logger.filters):
            logger.addFilter(_DropOrbaxErrors())
    if not isinstance(sys.stderr, _DropAbandonedWrites):
        sys.stderr = _DropAbandonedWrites(sys.stderr)
