"""Host input pipeline: tfds random-access sources and a deterministic, resumable grain loader.

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
uninterrupted run would be, with any number of workers.

Parallelism (grain). `BatchIterator` is a ``grain.MapDataset`` over global steps whose element
``s`` is this process's batch ``s`` (read, decoded and resized by `ReadBatch`), turned into an
iterator with ``mp_prefetch``: ``num_workers`` worker processes each make every
``num_workers``-th batch and keep ``prefetch`` batches ready; grain hands them back in step
order, so the batches do not depend on ``num_workers`` (0 makes them in one background thread of
the main process). grain's own iterator state records per-worker positions, which would tie a
checkpoint to the worker count; the ``{"step": s}`` state does not, and a restore simply starts
the pipeline at step ``s``.

Image layouts (``image_size`` / ``whole_image_size``):

* stored size (both None): every image must have the same shape;
* ``image_size=S``: shorter side resized to S (antialiased bilinear), centre S x S square kept;
* ``whole_image_size=L``: longer side resized to L, the image placed at the top left of an
  L x L array whose rest repeats the edge pixels, and its extent sent as ``"valid"`` (int32
  (h, w) per image). The device then draws crop boxes over the whole image, as torchvision's
  RandomResizedCrop does on the original (`mvcl.data.augment.make_views` with ``valid=``).

Sources come from `tfds.data_source` (ArrayRecord files; no TensorFlow needed). Nothing here
downloads: a data set other than the bundled digits must already be prepared in ``data_dir``.
A ``data_dir`` in a bucket (``gs://``) is read through a local copy on each host
(`mvcl.data.mirror`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from mvcl.data import digits, fashion_mnist, mirror

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Source = Sequence[Mapping[str, Any]]
Batch = dict[str, np.ndarray]

_ALIASES = {"digits": digits.DIGITS_NAME, fashion_mnist.ALIAS: fashion_mnist.FASHION_MNIST_NAME}
# Data sets mvcl writes itself on first use: called with a local data_dir.
_PREPARE = {
    digits.DIGITS_NAME: digits.prepare_digits,
    fashion_mnist.FASHION_MNIST_NAME: fashion_mnist.prepare_fashion_mnist,
}


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
        A bucket path (``gs://bucket/path``) is read through this host's local copy of the data
        set, made or brought up to date first (`mvcl.data.mirror`); the digits and
        Fashion-MNIST are prepared and uploaded there if the bucket lacks them.

    Returns:
      A sequence whose items are dicts of numpy values (``"image"`` uint8 (H, W, C), ``"label"``
      int, ...); it supports ``len``, ``source[i]`` and ``source.__getitems__(indices)``.

    Raises:
      FileNotFoundError: the data set is not prepared in `data_dir` (the message says how).
      ValueError: unknown data set name, the data set is prepared only as TFRecord, or a bucket
        path that cannot be read (`mvcl.data.mirror.check`).
    """
    name = _ALIASES.get(name, name)
    remote = os.environ.get("TFDS_DATA_DIR") if data_dir is None else data_dir
    if mirror.is_remote(remote):
        data_dir = mirror.local_data_dir(remote, name, prepare=_PREPARE.get(name))
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
                f"images with mvcl-import --source=... --name={name}"
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


def _shape(image: np.ndarray | PILImage) -> tuple[int, int]:
    """``(h, w)`` of an array or a PIL image."""
    return image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]


def _resized(image: np.ndarray | PILImage, new_h: int, new_w: int) -> np.ndarray:
    """`image` resized to (new_h, new_w) with PIL's antialiased bilinear filter, as uint8 HWC.

    A decoded PIL image is resized as it is; an array first becomes one (one copy).
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        c = image.shape[2]
        image = Image.fromarray(image[..., 0] if c == 1 else image)
    resized = np.asarray(image.resize((new_w, new_h), Image.BILINEAR))
    return resized.reshape(new_h, new_w, -1)


def _fit_square(image: np.ndarray | PILImage, size: int) -> np.ndarray:
    """Resizes the shorter side to `size` (antialiased bilinear) and crops the centre square."""
    h, w = _shape(image)
    if (h, w) == (size, size):
        return _as_array(image)
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resized = _resized(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def _whole_extent(h: int, w: int, size: int) -> tuple[int, int]:
    """The (h, w) an image of (h, w) takes when its longer side is resized to `size`."""
    scale = size / max(h, w)
    return max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))


def _place_whole(out: np.ndarray, image: np.ndarray | PILImage) -> tuple[int, int]:
    """Writes `image`, fitted whole, into ``out`` (size, size, C) and returns its extent."""
    h, w = _shape(image)
    new_h, new_w = _whole_extent(h, w, out.shape[0])
    fitted = _resized(image, new_h, new_w) if (new_h, new_w) != (h, w) else _as_array(image)
    out[:new_h, :new_w] = fitted
    out[new_h:, :new_w] = fitted[new_h - 1]  # repeat the last row, then the last column
    out[:, new_w:] = out[:, new_w - 1 : new_w]
    return new_h, new_w


def fit_whole(image: np.ndarray | PILImage, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The whole image in a ``size x size`` array, and its extent ``(h, w)`` there.

    The longer side is resized to `size` (antialiased bilinear; the shorter one to
    ``max(1, round(side * size / longer))``, so the aspect ratio is kept to within a pixel); the
    image sits at the top left and the rest repeats its last row and column (not zeros, so a
    resampling kernel that reaches past the image's edge sees the edge, as at the array's border).
    `image` is a uint8 (H, W, C) array or a decoded PIL image.
    """
    out = np.empty((size, size, _channels_of(image)), np.uint8)
    return out, _place_whole(out, image)


def _channels_of(image: np.ndarray | PILImage) -> int:
    return image.shape[2] if isinstance(image, np.ndarray) else len(image.getbands())


def _as_array(image: np.ndarray | PILImage) -> np.ndarray:
    """uint8 (H, W, C) of an array or a decoded PIL image (grayscale gets C = 1)."""
    if isinstance(image, np.ndarray):
        return image
    array = np.asarray(image)
    return array.reshape(*array.shape[:2], -1)


def _decode(encoded: bytes, channels: int | None) -> PILImage:
    """A PNG/JPEG as a PIL image with `channels` (1: mode ``L``, 3: ``RGB``; None: ``L`` or
    ``RGB`` as stored, other modes such as CMYK or palette becoming ``RGB``)."""
    from PIL import Image

    image = Image.open(io.BytesIO(encoded))
    image.load()  # decode now (PIL is lazy), so a corrupt file fails here, named by the caller
    mode = {1: "L", 3: "RGB"}.get(channels) or (image.mode if image.mode in ("L", "RGB") else "RGB")
    return image if image.mode == mode else image.convert(mode)


def with_encoded_images(source: Source) -> Source:
    """`source` reading its ``"image"`` feature as the stored PNG/JPEG bytes, if it can.

    For a tfds source whose ``"image"`` is a uint8 `tfds.features.Image`, this returns the same
    split with the image left encoded; `read_records` then decodes it with PIL and resizes the
    decoded image directly. That is the work tfds' own decoding does, minus its array conversion
    and the copy back into PIL for resizing: measured in ``experiments/bench_input.py``. Any other
    source is returned as it is (its records' images are arrays already).
    """
    info = getattr(source, "dataset_info", None)
    if info is None or not dataclasses.is_dataclass(source) or getattr(source, "decoders", None):
        return source
    feature = info.features["image"] if "image" in info.features else None
    if not isinstance(feature, tfds.features.Image) or feature.np_dtype != np.uint8:
        return source
    return dataclasses.replace(source, decoders={"image": tfds.decode.SkipDecoding()})


def _describe(source: Source) -> str:
    """``split 'train' of 'imagenet2012'`` for a tfds source, else the source's type."""
    info, split = getattr(source, "dataset_info", None), getattr(source, "split", None)
    if info is not None:
        return f"split {str(split)!r} of {info.name!r}"
    return f"the {type(source).__name__} source"


def _unreadable(source: Source, i: int, error: Exception) -> ValueError:
    """The error for record `i` of `source`, which cannot be read or decoded."""
    split = str(getattr(source, "split", None) or "train")
    return ValueError(
        f"record {i} of {_describe(source)} cannot be read or decoded "
        f"({type(error).__name__}: {error}); the file is corrupt: rebuild the data set, or "
        f"leave the record out with split slices (e.g. "
        f"'{split}[:{i}]+{split}[{i + 1}:]' if {split!r} is unsliced)"
    )


def _records(source: Source, idx: list[int]) -> list[Mapping[str, Any]]:
    """``source[i] for i in idx``; a record that fails to read or decode is named in the error."""
    try:
        if hasattr(source, "__getitems__"):
            return list(source.__getitems__(idx))
        return [source[i] for i in idx]
    except Exception:  # find the record at fault, then re-raise naming it
        for i in idx:
            try:
                source[i]
            except Exception as e:
                raise _unreadable(source, i, e) from e
        raise


def _image(source: Source, i: int, value: Any, channels: int | None) -> np.ndarray | PILImage:
    """Record `i`'s image: a uint8 array as stored, or its PNG/JPEG bytes decoded."""
    if not isinstance(value, bytes):
        return np.asarray(value, np.uint8)
    try:
        return _decode(value, channels)
    except Exception as e:
        raise _unreadable(source, i, e) from e


def _stored_channels(source: Source) -> int | None:
    """The channel count a tfds source declares for its ``"image"`` feature, if it does."""
    info = getattr(source, "dataset_info", None)
    if info is None or "image" not in info.features:
        return None
    shape = getattr(info.features["image"], "shape", None)
    return shape[-1] if shape and shape[-1] in (1, 3) else None


def read_records(
    source: Source,
    indices: np.ndarray,
    image_size: int | None,
    whole_image_size: int | None = None,
) -> Batch:
    """Reads records `indices` into ``{"image": uint8 (n, H, W, C), "label": int32 (n,)}``.

    With `whole_image_size`, also ``"valid": int32 (n, 2)``, see `fit_whole`. A record's image
    is a uint8 array, or PNG/JPEG bytes (a source from `with_encoded_images`), decoded here.
    Each image is decoded, resized and written into the batch array in turn (one copy).
    """
    idx = [int(i) for i in indices]
    records = _records(source, idx)
    channels = _stored_channels(source)
    out, valid = None, np.zeros((len(idx), 2), np.int32)
    for k, (i, record) in enumerate(zip(idx, records)):
        image = _image(source, i, record["image"], channels)
        if whole_image_size is None:
            image = _fit_square(image, image_size) if image_size else _as_array(image)
            shape = image.shape
        else:
            shape = (whole_image_size, whole_image_size, _channels_of(image))
        if out is None:
            out = np.empty((len(idx), *shape), np.uint8)
        elif shape != out.shape[1:]:
            raise ValueError(
                f"images of {_describe(source)} differ in shape ({out.shape[1:]}, record {i}: "
                f"{shape}): set config.dataset.image_size or config.dataset.whole_image_size "
                f"to resize them"
            )
        if whole_image_size is None:
            out[k] = image
        else:
            valid[k] = _place_whole(out[k], image)
    if out is None:
        raise ValueError("read_records needs at least one index")
    batch = {"image": out, "label": np.asarray([r["label"] for r in records], np.int32)}
    if whole_image_size is not None:
        batch["valid"] = valid
    return batch


class ReadBatch:
    """This process's batch at a global step: the map function of the grain pipeline.

    A pure function of ``(seed, step)`` (see the module docstring); it holds the source and the
    order of the last epoch it saw, so a grain worker process computes each permutation once.
    """

    def __init__(
        self,
        source: Source,
        global_batch_size: int,
        *,
        seed: int,
        process_index: int,
        process_count: int,
        image_size: int | None,
        whole_image_size: int | None,
    ):
        self.source = with_encoded_images(source)  # decoded here, not by tfds: faster
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.image_size = image_size
        self.whole_image_size = whole_image_size
        self.steps_per_epoch = len(source) // global_batch_size
        # (epoch, its order), replaced as one object: the background thread and the caller of
        # `BatchIterator.local_indices` may both use it.
        self._order: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    def local_indices(self, step: int) -> np.ndarray:
        """Record ids this process reads at global step `step`."""
        epoch, b = divmod(step, self.steps_per_epoch)
        cached_epoch, order = self._order
        if epoch != cached_epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
            self._order = (epoch, order)
        local = self.global_batch_size // self.process_count
        start = b * self.global_batch_size + self.process_index * local
        return order[start : start + local]

    def __call__(self, step: int) -> Batch:
        return read_records(
            self.source, self.local_indices(int(step)), self.image_size, self.whole_image_size
        )


_MAX_STEPS = 2**62  # the step dataset is "endless": grain maps it lazily
_warned_cores = False


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_workers(num_workers: int) -> int:
    """`num_workers` with -1 resolved to the core count; warns once if it exceeds the cores."""
    global _warned_cores
    if num_workers < -1:
        raise ValueError(
            f"num_workers must be >= 0 (0: in the main process) or -1 (one per core), "
            f"got {num_workers}"
        )
    cores = available_cores()
    if num_workers == -1:
        return cores
    if num_workers > cores and not _warned_cores:
        _warned_cores = True
        warnings.warn(
            f"num_workers={num_workers} exceeds the {cores} CPU cores available: the workers "
            f"will share them (this works, but is no faster than num_workers={cores})",
            stacklevel=3,
        )
    return num_workers


class BatchIterator(Iterator[Batch]):
    """Endless, deterministic, resumable iterator over this process's share of global batches.

    Yields ``{"image": uint8 (B / P, H, W, C), "label": int32 (B / P,)}`` (plus ``"valid"`` with
    `whole_image_size`) where ``B`` is `global_batch_size` and ``P`` is `process_count`; see the
    module docstring for the order and the layouts. Call `close` when done (it stops the worker
    processes; they are also stopped when the iterator is garbage-collected).

    Args:
      source: random-access source, e.g. from `load_split`.
      global_batch_size: examples per step over all processes; divisible by `process_count`.
      seed: non-negative int; the order of every epoch is a function of ``(seed, epoch)``.
      process_index, process_count: this process and the number of processes
        (``jax.process_index()``, ``jax.process_count()``).
      step: global step to start at (0, or the ``"step"`` of a saved state).
      image_size: if set, every image is resized (shorter side) and centre-cropped to
        ``image_size x image_size`` on the host, for data sets of varying image sizes;
        None keeps the stored size, which must then be the same for all images.
      whole_image_size: if set (instead of `image_size`), every image is resized (longer side)
        to fit ``whole_image_size x whole_image_size`` whole, with its extent in ``"valid"``.
      num_workers: grain worker processes that read, decode and resize batches; 0 makes them in
        a background thread of this process, -1 starts one per available core. The batches are
        the same for every value.
      prefetch: batches each worker (or the background thread) keeps ready.
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
        whole_image_size: int | None = None,
        num_workers: int = 0,
        prefetch: int = 2,
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
        if image_size is not None and whole_image_size is not None:
            raise ValueError("set image_size or whole_image_size, not both")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        num_workers = _check_workers(num_workers)
        self.source = source
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.image_size = image_size
        self.whole_image_size = whole_image_size
        self.num_workers = num_workers
        self.prefetch = prefetch
        self._read_batch = ReadBatch(
            source,
            global_batch_size,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            image_size=image_size,
            whole_image_size=whole_image_size,
        )
        self.steps_per_epoch = self._read_batch.steps_per_epoch
        self.step = step
        self._iterator: Iterator[Batch] | None = None  # started on the first `next`

    def get_state(self) -> dict[str, int]:
        """The position, ``{"step": next global step}``; store it with the checkpoint."""
        return {"step": self.step}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues from a state returned by `get_state`."""
        step = int(state["step"])
        if step != self.step:
            self.close()
        self.step = step

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def local_indices(self, step: int) -> np.ndarray:
        """Record ids this process reads at global step `step`."""
        return self._read_batch.local_indices(step)

    def _start(self) -> Iterator[Batch]:
        steps = grain.MapDataset.range(self.step, _MAX_STEPS).map(self._read_batch)
        threads = grain.ReadOptions(num_threads=1, prefetch_buffer_size=self.prefetch)
        dataset = steps.to_iter_dataset(threads)
        if self.num_workers:
            if not flags.FLAGS.is_parsed():  # grain reads its absl flags when starting workers
                flags.FLAGS.mark_as_parsed()
            options = grain.MultiprocessingOptions(
                num_workers=self.num_workers, per_worker_buffer_size=self.prefetch
            )
            dataset = dataset.mp_prefetch(options)
        return iter(dataset)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self.step += 1
        return batch

    def close(self) -> None:
        """Stops the background thread and worker processes (a later `next` restarts them)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "close"):
            iterator.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


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
        read_records(source, np.arange(start, min(start + chunk_size, len(source))), image_size)
        for start in range(0, len(source), chunk_size)
    ]
    return (
        np.concatenate([c["image"] for c in chunks]),
        np.concatenate([c["label"] for c in chunks]),
    )
