"""Host input pipeline: tfds random-access sources and a deterministic, resumable batch iterator.

The host reads each image once and sends it as uint8; views are made on the device
(`mvcl.data.augment.make_views`), so host work and host-to-device traffic do not grow with the
number of views V.

Order of examples. Global step ``s`` belongs to epoch ``e = s // steps_per_epoch`` and is batch
``b = s % steps_per_epoch`` of it, with ``steps_per_epoch = len(source) // global_batch_size``
(the remainder of every epoch is dropped). Epoch ``e`` visits the records in the order
``np.random.default_rng([seed, e]).permutation(len(source))``; global batch ``s`` is the slice
``[b * B, (b + 1) * B)`` of it, and process ``p`` of ``P`` reads only rows
``[p * B / P, (p + 1) * B / P)`` of that global batch. Everything is a pure function of
``(seed, s)``, so the iterator's whole state is ``{"step": s}``: save `BatchIterator.get_state()`
with the checkpoint and restore it with `set_state` (or ``step=``) to continue exactly where an
uninterrupted run would be.

Sources come from `tfds.data_source` (ArrayRecord files; no TensorFlow needed). Nothing here
downloads: a data set other than the bundled digits must already be prepared in ``data_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mvcl.data import digits, fashion_mnist

Source = Sequence[Mapping[str, Any]]
Batch = dict[str, np.ndarray]

_ALIASES = {"digits": digits.DIGITS_NAME, fashion_mnist.ALIAS: fashion_mnist.FASHION_MNIST_NAME}


def _how_to_prepare(name: str, data_dir: str) -> str:
    base = name.split("/")[0].split(":")[0]
    build = f"tfds build {base} --data_dir={data_dir} --file_format=array_record"
    if base.startswith("imagenet"):
        return (
            f"ImageNet cannot be downloaded automatically: put ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar (from https://image-net.org) in {data_dir}/downloads/manual/, "
            f"then run `{build}`"
        )
    return (
        f"Prepare it once with `{build}` (encoding images needs TensorFlow, so do this where TF is "
        f"installed and copy {data_dir}/{base}/ here)"
    )


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Source:
    """Random-access source of one split of a tfds data set stored as ArrayRecord.

    Args:
      name: tfds name (``"cifar10"``, ``"cifar100"``, ``"imagenet2012"``, ...), or ``"digits"`` /
        ``"mvcl_digits"`` for the bundled digits set, which is prepared in `data_dir` on first use,
        ``"fashion_mnist"`` (prepared on first use from `mvcl.data.fashion_mnist`'s default
        source directory), or a data set written by `mvcl.data.importer`.
      split: a tfds split, slices included (``"train"``, ``"test[:10%]"``).
      data_dir: tfds data directory; None means ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.

    Returns:
      A sequence whose items are dicts of numpy values (``"image"`` uint8 (H, W, C), ``"label"``
      int, ...); it supports ``len``, ``source[i]`` and ``source.__getitems__(indices)``.

    Raises:
      FileNotFoundError: the data set is not prepared in `data_dir` (the message says how).
      ValueError: unknown data set name, or the data set is prepared only as TFRecord.
    """
    name = _ALIASES.get(name, name)
    if name == digits.DIGITS_NAME:
        digits.prepare_digits(data_dir)
    elif name == fashion_mnist.FASHION_MNIST_NAME:
        fashion_mnist.prepare_fashion_mnist(data_dir)  # from its default source directory
    else:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(
                f"Unknown tfds data set name {name!r} (not in {data_dir}); import your own "
                f"images with experiments/import_data.py --name={name}"
            ) from e
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"Data set {name!r} is not prepared in {builder.data_dir_root} "
                f"(no {builder.data_dir}). "
                f"{_how_to_prepare(name, os.fspath(builder.data_dir_root))}. mvcl never downloads."
            )
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except NotImplementedError as e:
        raise ValueError(
            f"Data set {name!r} in {data_dir} has no ArrayRecord files (random access needs them); "
            f"rebuild it with --file_format=array_record."
        ) from e


def _fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side to `size` (antialiased bilinear) and crops the centre square."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    h, w, c = image.shape
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    pil = Image.fromarray(image[..., 0] if c == 1 else image)
    resized = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR)).reshape(new_h, new_w, c)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def _read(source: Source, indices: np.ndarray, image_size: int | None) -> Batch:
    """Reads records `indices` into ``{"image": uint8 (n, H, W, C), "label": int32 (n,)}``."""
    idx = [int(i) for i in indices]
    if hasattr(source, "__getitems__"):
        records = source.__getitems__(idx)
    else:
        records = [source[i] for i in idx]
    images = [np.asarray(r["image"], np.uint8) for r in records]
    if image_size is not None:
        images = [_fit_square(im, image_size) for im in images]
    return {
        "image": np.stack(images),
        "label": np.asarray([r["label"] for r in records], np.int32),
    }


class BatchIterator(Iterator[Batch]):
    """Endless, deterministic, resumable iterator over this process's share of global batches.

    Yields ``{"image": uint8 (B / P, H, W, C), "label": int32 (B / P,)}`` where ``B`` is
    `global_batch_size` and ``P`` is `process_count`; see the module docstring for the order.

    Args:
      source: random-access source, e.g. from `load_split`.
      global_batch_size: examples per step over all processes; divisible by `process_count`.
      seed: non-negative int; the order of every epoch is a function of ``(seed, epoch)``.
      process_index, process_count: this process and the number of processes
        (``jax.process_index()``, ``jax.process_count()``).
      step: global step to start at (0, or the ``"step"`` of a saved state).
      image_size: if set, every image is resized (shorter side) and centre-cropped to
        ``image_size x image_size`` on the host, for data sets of varying image sizes (ImageNet);
        None keeps the stored size, which must then be the same for all images.
    """

    def __init__(
        self,
        source: Source,
        global_batch_size: int,
        *,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        step: int = 0,
        image_size: int | None = None,
    ):
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index must be in [0, process_count), "
                f"got {process_index} of {process_count}"
            )
        if global_batch_size < 1 or global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size ({global_batch_size}) must be a positive multiple of "
                f"process_count ({process_count})"
            )
        if global_batch_size > len(source):
            raise ValueError(
                f"global_batch_size ({global_batch_size}) exceeds the data set size ({len(source)})"
            )
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.source = source
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.image_size = image_size
        self.steps_per_epoch = len(source) // global_batch_size
        self.step = step
        self._perm_epoch, self._perm = -1, np.empty(0, np.int64)

    def get_state(self) -> dict[str, int]:
        """The position, ``{"step": next global step}``; store it with the checkpoint."""
        return {"step": self.step}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues from a state returned by `get_state`."""
        self.step = int(state["step"])

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def local_indices(self, step: int) -> np.ndarray:
        """Record ids this process reads at global step `step`."""
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm_epoch, self._perm = epoch, rng.permutation(len(self.source))
        local = self.global_batch_size // self.process_count
        start = b * self.global_batch_size + self.process_index * local
        return self._perm[start : start + local]

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        batch = _read(self.source, self.local_indices(self.step), self.image_size)
        self.step += 1
        return batch


def load_numpy(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in stored order, as (uint8 images (N, H, W, C), int32 labels (N,)).

    For evaluation (linear probe, kNN). Arguments as in `load_split` and `BatchIterator`.
    """
    source = load_split(name, split, data_dir)
    chunks = [
        _read(source, np.arange(start, min(start + chunk_size, len(source))), image_size)
        for start in range(0, len(source), chunk_size)
    ]
    return (
        np.concatenate([c["image"] for c in chunks]),
        np.concatenate([c["label"] for c in chunks]),
    )
