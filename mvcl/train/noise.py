"""Quiet the messages a user sees on every run that say nothing about the run.

Dropped (and only these, matched by their exact openings; every other warning stays):

* tfds's "OpenCV is not installed. We recommend using OpenCV ..." (PIL decodes the images);
* tfds's "Variant folder ... has no dataset_info.json", "Downloading and preparing dataset ...",
  "Dataset ... downloaded and prepared to ..." and its progress bars while mvcl opens a data set
  (`quiet_data_preparation`): mvcl downloads nothing; the only data set it prepares is the bundled
  one, in well under a second;
* orbax's "CheckpointManagerOptions.read_only=True, setting ..." and "Given directory is read
  only" when a run is evaluated (the checkpointer is read-only on purpose).
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
