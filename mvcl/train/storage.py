"""Where a run's files live: a local directory, or a Google Cloud Storage bucket (``gs://``).

Every file a run writes or reads (config, history, metrics, TensorBoard events, checkpoints,
evaluation results, a sweep's cells and done markers) goes through ``etils.epath`` (Python's
path API over local files and, with ``gcsfs``, over ``gs://``) and orbax/tensorstore (the
checkpoints). This module holds the few things the two kinds of place do differently:

* `resolve` checks the scheme and makes a local path absolute. A scheme other than ``gs://``
  (``s3://``, ``http://``, ``ftp://``, ...) is refused with one line (`WorkdirError`) before
  anything starts: ``gs://`` is the one remote scheme whose checkpoints orbax commits
  atomically (a ``commit_success.txt`` marker; elsewhere orbax renames a temporary directory,
  which an object store does as a copy) and that the tests check (against a storage emulator,
  tests/test_object_storage.py).
* `write_text` / `write_bytes` replace a file as a whole: locally through a temporary file
  renamed over it (a crash leaves the old or the new file), remotely as one object upload,
  which is atomic by nature.
* `append_text`: a local file is appended to; an object cannot be, so it is rewritten whole
  (the workdir's lock, `mvcl.train.lock`, keeps a second writer out).

``etils.epath`` reaches ``gs://`` through ``gcsfs`` when TensorFlow is not installed (mvcl does
not need it): ``pip install mvcl[gcs]``. A bucket path without it is refused with that advice.

**Data sets in a bucket** (`check_data_dir`): ``config.dataset.data_dir`` may be ``gs://`` too.
tfds stores mvcl's data sets as ArrayRecord files, which array_record's reader (C++) opens from
local files only, so each host reads a local copy of the data set that `mvcl.data.mirror` makes
and keeps current (``$MVCL_DATA_CACHE``, default ``~/.cache/mvcl/data``); the bucket is read
through ``etils.epath`` (gcsfs), never the local file API. Other schemes are refused with one line.
"""

from __future__ import annotations

import os
import re

from etils import epath

from mvcl.train.errors import WorkdirError

REMOTE_SCHEMES = ("gs",)

try:  # gcsfs caches directory listings per process, but tensorstore (orbax's arrays) and other
    # hosts write to the bucket behind its back: a cached listing can miss a new checkpoint.
    # mvcl lists little, so the cache is off for gs:// (fsspec's per-protocol defaults).
    import fsspec

    fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)
except ImportError:  # (then there is no gcsfs either: `resolve` says so for a bucket path)
    pass
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(path: str | os.PathLike) -> str | None:
    """``"gs"`` for ``gs://bucket/x``; None for a local path."""
    match = _SCHEME.match(os.fspath(path))
    return match.group(1).lower() if match else None


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is in object storage (``gs://...``)."""
    return scheme(path) is not None


def check_scheme(path: str | os.PathLike, what: str = "--workdir") -> None:
    """Refuses a path of a scheme mvcl cannot write to, as one line naming ``what``.

    Raises:
      WorkdirError: ``path`` has a scheme other than ``gs://`` (``file://`` included: give the
        local path itself).
    """
    found = scheme(path)
    if found is not None and found not in REMOTE_SCHEMES:
        supported = ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        raise WorkdirError(
            f"{what} {os.fspath(path)}: the scheme {found}:// is not supported; give a local "
            f"path or a bucket path ({supported}bucket/path)"
        )
    if found is not None and not re.match(r"^[^/]+://[^/]+", os.fspath(path)):
        raise WorkdirError(f"{what} {os.fspath(path)}: no bucket name after {found}://")


def check_data_dir(path: str | os.PathLike | None) -> None:
    """Refuses a ``config.dataset.data_dir`` mvcl cannot read (module docstring): a scheme other
    than ``gs://``, or a bucket path without ``gcsfs``.

    Raises:
      WorkdirError: as `resolve`.
    """
    if path is not None and is_remote(path):
        resolve(path, "config.dataset.data_dir")


def resolve(path: str | os.PathLike, what: str = "--workdir") -> epath.Path:
    """``path`` as an ``epath.Path``: absolute if local, as given if in a bucket.

    Raises:
      WorkdirError: an unsupported scheme (`check_scheme`), or a bucket path without ``gcsfs``.
    """
    check_scheme(path, what)
    if is_remote(path):
        try:
            import gcsfs  # noqa: F401  (epath's gs:// file system without TensorFlow)
        except ImportError:
            raise WorkdirError(
                f"{what} {os.fspath(path)}: a bucket path needs gcsfs (pip install 'mvcl[gcs]')"
            ) from None
        return epath.Path(os.fspath(path).rstrip("/"))
    return epath.Path(os.path.abspath(path))


def join(path: str | os.PathLike, *parts: str) -> str:
    """``path/part/...`` as a string (``os.path.join`` keeps a ``gs://`` prefix intact too; this
    one says that it is meant to)."""
    return os.fspath(epath.Path(os.fspath(path), *parts))


def write_bytes(path: epath.Path, data: bytes) -> None:
    """Replaces the file ``path`` with ``data`` as a whole (module docstring)."""
    path = epath.Path(path)
    if is_remote(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text(path: epath.Path, text: str) -> None:
    """Replaces the file ``path`` with ``text`` (UTF-8) as a whole (module docstring)."""
    write_bytes(path, text.encode("utf-8"))


def append_text(path: epath.Path, text: str) -> None:
    """Appends ``text`` to the file ``path`` (a remote one is rewritten whole)."""
    path = epath.Path(path)
    if is_remote(path):
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        path.write_text(old + text, encoding="utf-8")
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
