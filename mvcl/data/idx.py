"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST (optionally gzipped).

An IDX file is a 4-byte magic number ``00 00 TT NN``, then ``NN`` big-endian uint32 dimension
sizes, then the ``prod(sizes)`` values in C order, big-endian. ``TT`` is the element type:

    0x08 uint8   0x09 int8   0x0B int16   0x0C int32   0x0D float32   0x0E float64

MNIST-style data sets store images as ``(N, H, W)`` uint8 (``train-images-idx3-ubyte``) and
labels as ``(N,)`` uint8 (``train-labels-idx1-ubyte``). A path ending in ``.gz`` is read and
written through gzip.

    images = read_idx("train-images-idx3-ubyte.gz")   # uint8 (60000, 28, 28)
    write_idx("labels-idx1-ubyte", np.arange(10, dtype=np.uint8))

Malformed files (wrong magic number, unknown type code, a size that does not match the header,
a truncated gzip stream) raise `IdxError` (a ``ValueError``) naming the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# Type code -> big-endian numpy dtype.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}


class IdxError(ValueError):
    """A file is not a valid IDX file (the message names the file and the problem)."""


def _read_bytes(path: str | os.PathLike) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path} does not exist")
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (EOFError, OSError, zlib.error) as e:
            raise IdxError(f"{path}: not a complete gzip file ({e}); download it again") from e
    with open(path, "rb") as f:
        return f.read()


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array stored in the IDX bytes ``raw`` (native byte order); ``name`` is for errors."""
    if len(raw) < 4:
        raise IdxError(f"{name}: {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise IdxError(
            f"{name}: magic number {raw[:4].hex()} does not start with 0000; not an IDX file "
            f"(a .gz file must be named *.gz to be decompressed)"
        )
    code, ndim = raw[2], raw[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in DTYPES)
        raise IdxError(f"{name}: unknown IDX type code 0x{code:02x} (known: {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{name}: truncated header ({len(raw)} bytes, {ndim} dimensions need more)")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise IdxError(
            f"{name}: {kind}: the header says shape {shape} of {dtype.newbyteorder('=').name} "
            f"({expected} bytes with the header), the file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzipped if it ends in ``.gz``).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      IdxError: ``path`` is not a valid IDX file.
    """
    return parse_idx(_read_bytes(path), os.fspath(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (uint8, int8, int16, int32, float32 or float64; 1-255 dims)."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=") if array.dtype.byteorder not in "=|" else array.dtype
    if dtype not in _CODES:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use one of "
            f"{', '.join(d.newbyteorder('=').name for d in DTYPES.values())}"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX stores 1 to 255 dimensions, got {array.ndim}")
    code = _CODES[dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` as the IDX file ``path`` (gzipped if it ends in ``.gz``)."""
    raw = encode_idx(array)
    path = os.fspath(path)
    if path.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)
