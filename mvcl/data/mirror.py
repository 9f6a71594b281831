"""A data set kept in a Google Cloud Storage bucket, read through a local copy on each host.

``config.dataset.data_dir`` may be a bucket path, ``gs://bucket/path``. tfds stores mvcl's data
sets as ArrayRecord files, and array_record's reader and writer (C++) open local files only, so
tfds never reads the bucket itself: `local_data_dir` first copies ``<data_dir>/<base>/`` (every
version and config of the data set ``<base>``, the name before ``/`` or ``:``, e.g. ``cifar10``
of ``cifar10:3.0.2``) to a local directory on this host, and tfds then reads that copy as an
ordinary ``data_dir``. The copy lives under

    $MVCL_DATA_CACHE/gs/<bucket>/<path>/<base>/      (default ~/.cache/mvcl/data/gs/...)

and needs as much local disk as the data set takes in the bucket. Later calls bring it up to
date and nothing more:

* **What is compared.** The bucket directory is listed once (one listing request per 1,000
  objects, through the ``gcsfs`` file system that ``etils.epath`` uses for ``gs://``), giving
  each object's size and its MD5 (``md5Hash``; ``crc32c`` for composite objects without one).
  The copy keeps a manifest (``.mvcl_mirror/<base>.json`` next to it) of the size, hash and
  local modification time of every file it copied. A file whose entry still matches is kept
  without being read; a file present but not (or no longer) matching is hashed and kept if its
  MD5 equals the object's; anything else is copied. Files no longer in the bucket are removed.
  A current copy costs one listing and prints nothing; a copy that changed prints one line
  (files and bytes copied, from where to where).
* **Atomic and shared.** Every file is downloaded to a temporary name, checked (size, MD5) and
  renamed into place, so a crash never leaves a half file that is later trusted, and dataset
  info files come last. The processes of one host (``mpirun -np 2`` on one machine) share the
  copy: a lock file (``.mvcl_mirror/<base>.lock``, ``flock``) lets one of them copy while the
  others wait, then find the copy current.
* **Data sets mvcl prepares itself** (the bundled digits, Fashion-MNIST from its source files)
  are prepared on first use when the bucket does not hold them: written locally (``prepare``),
  uploaded object by object with the dataset info files last (a data set counts as present in
  the bucket once its ``dataset_info.json`` is), and kept as the local copy. Several hosts that
  find them absent at once each prepare and upload them; the files are byte-identical and every
  object is replaced whole, so the bucket ends up with one valid copy whoever uploads last, and
  no host has to wait for another.
* **Any other data set** must be put in the bucket first: prepare it in a local ``data_dir``
  (``tfds build``, ``mvcl-import``) and copy ``<local data_dir>/<base>/`` there, e.g. with
  ``gcloud storage cp -r``; or import it straight into the bucket with
  ``mvcl-import --data_dir=gs://...`` (`publish`). A data set the bucket lacks is refused with
  one line that says this.

Reading a bucket needs ``gcsfs`` (``pip install 'mvcl[gcs]'``). Other schemes (``s3://``, ...)
are refused with one line.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from typing import Any

from etils import epath

CACHE_ENV = "MVCL_DATA_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "mvcl", "data")
STATE_DIR = ".mvcl_mirror"  # manifests, locks and temporary files, next to the copies
INFO_FILE = "dataset_info.json"  # tfds: a data set version is prepared once this file exists
SCHEMES = ("gs",)
COPY_THREADS = 8
MANIFEST_SECONDS = 10  # a long copy records its progress this often (and when it ends)
_CHUNK = 8 * 1024 * 1024
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# A listing of the bucket's objects: relative path -> (size, content marker).
Listing = dict[str, tuple[int, str]]


def is_remote(data_dir: str | os.PathLike | None) -> bool:
    """Whether ``data_dir`` is a path with a scheme (``gs://bucket/path``, ...)."""
    return data_dir is not None and _SCHEME.match(os.fspath(data_dir)) is not None


def check(data_dir: str | os.PathLike) -> str:
    """``data_dir`` as ``gs://bucket/path`` (no trailing ``/``), checked.

    Raises:
      ValueError: a scheme other than ``gs://``, no bucket name, a ``.`` or ``..`` component,
        or ``gcsfs`` is not installed.
    """
    path = os.fspath(data_dir)
    what = f"config.dataset.data_dir {path}"
    if not is_remote(path):
        raise ValueError(f"{what}: not a bucket path (gs://bucket/path)")
    scheme = _SCHEME.match(path).group(1).lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"{what}: the scheme {scheme}:// is not supported; give a local path or a bucket "
            f"path (gs://bucket/path)"
        )
    parts = path[len(scheme) + 3 :].strip("/").split("/")
    if not parts[0]:
        raise ValueError(f"{what}: no bucket name after {scheme}://")
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{what}: '.' and '..' are not allowed in a bucket path")
    try:
        import gcsfs  # noqa: F401  (epath's gs:// file system without TensorFlow)
    except ImportError:
        raise ValueError(f"{what}: a bucket path needs gcsfs (pip install 'mvcl[gcs]')") from None
    return f"{scheme}://" + "/".join(p for p in parts if p)


def base_name(name: str) -> str:
    """The directory of the tfds data set ``name``: ``cifar10`` of ``cifar10:3.0.2``, ``x`` of
    ``x/config``."""
    return name.split("/")[0].split(":")[0]


def cache_root() -> str:
    """``$MVCL_DATA_CACHE``, else ``~/.cache/mvcl/data``, absolute."""
    return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE))


def mirror_dir(data_dir: str | os.PathLike) -> str:
    """The local ``data_dir`` that holds this host's copies of the bucket's ``data_dir``:
    ``<cache_root()>/gs/<bucket>/<path>``."""
    path = check(data_dir)
    scheme, rest = path.split("://", 1)
    return os.path.join(cache_root(), scheme, *rest.split("/"))


def _filesystem() -> Any:
    import fsspec  # (with gcsfs, which `check` requires)

    return fsspec.filesystem("gs")


def _marker(info: Mapping[str, Any]) -> str:
    """What tells one version of an object from another: its MD5 (its CRC32C for a composite
    object, which has no MD5; else its generation)."""
    for key in ("md5Hash", "crc32c", "generation", "updated"):
        if info.get(key):
            return f"{key}:{info[key]}"
    return ""


def _relative(rel: str, where: str) -> str:
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{where}: object name {rel!r} cannot be copied to a local file")
    return rel


def list_remote(data_dir: str | os.PathLike, name: str) -> Listing:
    """The objects under ``<data_dir>/<base>/``: relative path -> (size, content marker).

    One listing (gcsfs's ``find``; its listing cache is bypassed: other hosts write the bucket).
    """
    remote = f"{check(data_dir)}/{base_name(name)}"
    prefix = remote.removeprefix("gs://")
    fs = _filesystem()
    fs.invalidate_cache(prefix)
    try:
        found = fs.find(prefix, detail=True)
    except FileNotFoundError:
        return {}
    listing = {}
    for key, info in found.items():
        key = key.removeprefix("gs://")
        if info.get("type") == "directory" or key.endswith("/"):
            continue  # (a folder placeholder object)
        if not key.startswith(prefix + "/"):
            continue
        rel = _relative(key[len(prefix) + 1 :], remote)
        listing[rel] = (int(info["size"]), _marker(info))
    return listing


def is_complete(listing: Mapping[str, Any]) -> bool:
    """Whether a listing holds a prepared data set (some version's ``dataset_info.json``)."""
    return any(rel.split("/")[-1] == INFO_FILE for rel in listing)


def in_bucket(data_dir: str | os.PathLike, name: str) -> bool:
    """Whether the bucket's ``data_dir`` holds the data set ``name`` prepared."""
    return is_complete(list_remote(data_dir, name))


def _info_last(rel: str) -> tuple[bool, str]:
    return rel.split("/")[-1] == INFO_FILE, rel


def _size(count: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError


def _plural(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def _local_files(root: str) -> list[str]:
    """Files under ``root``, as relative paths with ``/``."""
    found = []
    for directory, _, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        for f in files:
            rel = f if rel_dir == "." else os.path.join(rel_dir, f)
            found.append(rel.replace(os.sep, "/"))
    return sorted(found)


@dataclasses.dataclass
class _Copy:
    """One data set's local copy: its directory, manifest, lock and temporary directory."""

    data_dir: str  # gs://bucket/path
    base: str  # the data set's folder there

    @property
    def remote(self) -> str:
        return f"{self.data_dir}/{self.base}"

    @property
    def local(self) -> str:
        return os.path.join(mirror_dir(self.data_dir), self.base)

    @property
    def state(self) -> str:
        return os.path.join(mirror_dir(self.data_dir), STATE_DIR)

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.state, f"{self.base}.json")

    @property
    def tmp(self) -> str:
        return os.path.join(self.state, "tmp", self.base)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds this data set's lock file; starts with an empty temporary directory (whatever
        is there was left by a process that died while holding the lock)."""
        os.makedirs(self.state, exist_ok=True)
        with open(os.path.join(self.state, f"{self.base}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                shutil.rmtree(self.tmp, ignore_errors=True)
                os.makedirs(self.tmp)
                yield
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_manifest(self) -> dict[str, list]:
        try:
            with open(self.manifest_path, encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    def write_manifest(self, manifest: Mapping[str, list]) -> None:
        tmp = f"{self.manifest_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(manifest.items())), f)
        os.replace(tmp, self.manifest_path)

    def download(self, rel: str, size: int, marker: str) -> int:
        """Copies the object ``rel`` to its local file, through a checked temporary file."""
        target = os.path.join(self.local, *rel.split("/"))
        fd, tmp = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out, epath.Path(f"{self.remote}/{rel}").open("rb") as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
            got = os.path.getsize(tmp)
            md5 = base64.b64encode(digest.digest()).decode()
            if got != size or (marker.startswith("md5Hash:") and md5 != marker[8:]):
                raise OSError(
                    f"{self.remote}/{rel}: the copy ({got} bytes, MD5 {md5}) does not match the "
                    f"object ({size} bytes, {marker}); it changed while being copied: run again"
                )
            os.chmod(tmp, 0o644)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        return size

    def sync(self, listing: Listing) -> tuple[int, int, int]:
        """Makes the local copy equal the bucket's ``listing``: (files copied, bytes, removed)."""
        manifest = self.read_manifest()
        kept: dict[str, list] = {}
        todo = []
        for rel, (size, marker) in listing.items():
            path = os.path.join(self.local, *rel.split("/"))
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                todo.append(rel)
                continue
            entry = [size, marker, stat.st_mtime_ns]
            if stat.st_size == size and (
                manifest.get(rel) == entry
                or (marker.startswith("md5Hash:") and _md5(path) == marker[8:])
            ):
                kept[rel] = entry
            else:
                todo.append(rel)
        removed = [rel for rel in _local_files(self.local) if rel not in listing]
        for rel in removed:
            os.remove(os.path.join(self.local, *rel.split("/")))
        for directory, _, _ in os.walk(self.local, topdown=False):
            if directory != self.local:
                with contextlib.suppress(OSError):  # (only an empty folder goes)
                    os.rmdir(directory)
        copied, written = 0, time.monotonic()
        data = [rel for rel in todo if not _info_last(rel)[0]]
        info = [rel for rel in todo if _info_last(rel)[0]]
        try:
            for group in (data, info):  # dataset info files last
                with futures.ThreadPoolExecutor(COPY_THREADS) as pool:
                    jobs = {pool.submit(self.download, rel, *listing[rel]): rel for rel in group}
                    try:
                        for job in futures.as_completed(jobs):
                            copied += job.result()
                            rel = jobs[job]
                            path = os.path.join(self.local, *rel.split("/"))
                            kept[rel] = [*listing[rel], os.stat(path).st_mtime_ns]
                            if time.monotonic() - written > MANIFEST_SECONDS:
                                self.write_manifest(kept)
                                written = time.monotonic()
                    except BaseException:
                        pool.shutdown(cancel_futures=True)  # (the running copies finish)
                        raise
        finally:
            if kept != manifest:  # what was copied stays trusted if the rest fails
                self.write_manifest(kept)
        return len(todo), copied, len(removed)

    def upload(self, prepared: str, *, replace: bool) -> tuple[int, int]:
        """Uploads the prepared data set directory ``prepared`` to the bucket, object by object
        (dataset info files last); with ``replace``, then deletes the objects it does not hold.
        Returns (files, bytes)."""
        files = sorted(_local_files(prepared), key=_info_last)
        total = 0
        for rel in files:
            source = os.path.join(prepared, *rel.split("/"))
            with open(source, "rb") as src, epath.Path(f"{self.remote}/{rel}").open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            total += os.path.getsize(source)
        if replace:
            for rel in sorted(set(list_remote(self.data_dir, self.base)) - set(files)):
                epath.Path(f"{self.remote}/{rel}").unlink()
        return len(files), total

    def put_in_place(self, prepared: str) -> None:
        """Makes the local directory ``prepared`` the copy (replacing the old one)."""
        if os.path.exists(self.local):
            shutil.rmtree(self.local)
        os.makedirs(os.path.dirname(self.local), exist_ok=True)
        os.replace(prepared, self.local)
        self.write_manifest({})


def _not_in_bucket(copy: _Copy, listing: Listing) -> str:
    found = "no files" if not listing else f"{len(listing)} files but no {INFO_FILE}"
    base = copy.base
    return (
        f"Data set {base!r} is not in the bucket: {copy.remote}/ holds {found}. Prepare it in a "
        f"local data_dir (tfds build {base} --data_dir=./data --file_format=array_record, or "
        f"mvcl-import for your own images), then copy it there: gcloud storage cp -r "
        f"./data/{base} {copy.data_dir}/ (or import straight into the bucket: "
        f"mvcl-import --data_dir={copy.data_dir} ...)"
    )


def _prepare(copy: _Copy, write: Callable[[str], object]) -> str:
    """Runs ``write(local data_dir)`` in the temporary directory; returns the data set's folder."""
    data_dir = os.path.join(copy.tmp, "data_dir")
    write(data_dir)
    prepared = os.path.join(data_dir, copy.base)
    if not is_complete(dict.fromkeys(_local_files(prepared))):
        raise RuntimeError(f"preparing {copy.base!r} wrote no {INFO_FILE} in {prepared}")
    return prepared


def local_data_dir(
    data_dir: str | os.PathLike,
    name: str,
    *,
    prepare: Callable[[str], object] | None = None,
) -> str:
    """The local ``data_dir`` whose ``<base>/`` is a current copy of the bucket's (module doc).

    Args:
      data_dir: a bucket path, ``gs://bucket/path``.
      name: the tfds data set name (``cifar10``, ``cifar10:3.0.2``, ``mvcl_digits``, ...).
      prepare: for a data set mvcl writes itself: called with a local ``data_dir`` to write the
        data set there when the bucket does not hold it; the result is uploaded to the bucket.

    Returns:
      The local data directory (`mirror_dir`), for ``tfds``'s ``data_dir``.

    Raises:
      FileNotFoundError: the bucket does not hold the data set and ``prepare`` is None (one line
        saying how to put it there).
      ValueError: an unsupported path, or ``gcsfs`` is not installed (`check`).
    """
    data_dir = check(data_dir)
    copy = _Copy(data_dir, base_name(name))
    uploaded = None
    with copy.locked():
        listing = list_remote(data_dir, name)
        if not is_complete(listing):
            if prepare is None:
                raise FileNotFoundError(_not_in_bucket(copy, listing))
            prepared = _prepare(copy, prepare)
            if not in_bucket(data_dir, name):  # (another host may have uploaded it meanwhile)
                uploaded = copy.upload(prepared, replace=False)
            copy.put_in_place(prepared)
            listing = list_remote(data_dir, name)
        files, copied, removed = copy.sync(listing)
    if uploaded:
        print(
            f"Prepared {copy.base} in {copy.local} and uploaded it to {copy.remote}: "
            f"{_plural(uploaded[0], 'file')}, {_size(uploaded[1])}",
            flush=True,
        )
    if files or removed:
        gone = f"; removed {_plural(removed, 'file')} no longer in the bucket" if removed else ""
        print(
            f"Copied {_plural(files, 'file')} ({_size(copied)}) of {copy.base} from "
            f"{copy.remote} to {copy.local}{gone}",
            flush=True,
        )
    return mirror_dir(data_dir)


def publish(
    data_dir: str | os.PathLike,
    name: str,
    write: Callable[[str], object],
    *,
    replace: bool = False,
) -> str:
    """Writes a data set locally with ``write(local data_dir)`` and uploads it to the bucket.

    For ``mvcl-import --data_dir=gs://...``: the data set is written in this host's cache, uploaded
    to ``<data_dir>/<base>/`` object by object (dataset info files last) and kept as the local
    copy. With ``replace``, objects of an earlier data set of that name that the new one does not
    hold are deleted afterwards. Returns the local data directory (`mirror_dir`).
    """
    data_dir = check(data_dir)
    copy = _Copy(data_dir, base_name(name))
    with copy.locked():
        prepared = _prepare(copy, write)
        files, total = copy.upload(prepared, replace=replace)
        copy.put_in_place(prepared)
        copy.sync(list_remote(data_dir, name))
    print(
        f"Uploaded {copy.base} to {copy.remote}: {_plural(files, 'file')}, {_size(total)} "
        f"(a copy is kept in {copy.local})",
        flush=True,
    )
    return mirror_dir(data_dir)
