"""Write labelled images as a tfds data set of ArrayRecord files, under any name, without TF.

    write_image_dataset(
        "my_set",
        {"train": (train_images, train_labels), "test": (test_images, test_labels)},
        data_dir="./data",
        class_names=["cat", "dog"],
    )
    mvcl.data.load_split("my_set", "train", "./data")   # or config.dataset.name = "my_set"

The result is an ordinary tfds data set directory, ``<data_dir>/<name>/<version>/``
(``dataset_info.json``, ``features.json``, ``<name>-<split>.array_record-*``), with the features
of tfds's image-classification sets:

  image: uint8 (H, W, C), C = 1 or 3, stored as PNG (lossless); H and W may vary between
         examples (``(None, None, C)``) when ``image_shape`` is not given.
  label: ClassLabel with ``class_names``.

``tfds.data_source(name, data_dir=...)`` and ``tfds.builder(name, data_dir=...)`` find it from its
files alone (no builder code is registered for it). Records are stored in the order given (tfds
shuffling is off), so record ``j`` of a split is the ``j``-th example passed. Images are PNG-encoded
with Pillow, because tfds encodes numpy images with TensorFlow, which mvcl does not need.

A split is given either as ``(images, labels)`` arrays or, for large or ragged sets, as
``(count, examples)`` where ``examples()`` yields ``(uint8 image (H, W, C), int label)`` pairs.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import tensorflow_datasets as tfds

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
Examples = Callable[[], Iterable[tuple[np.ndarray, int]]]
Split = Union[tuple[np.ndarray, np.ndarray], tuple[int, Examples]]


def check_name(name: str) -> None:
    """Raises ValueError unless ``name`` is a valid tfds data set name (lower snake case)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"data set name {name!r} must be lower snake case: a letter, then letters, digits or "
            f"underscores (e.g. 'my_flowers')"
        )


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG encoding of a uint8 (H, W, 1) or (H, W, 3) image, with Pillow."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(
            f"an image must be uint8 (H, W, 1) or (H, W, 3), got {image.dtype} {image.shape}"
        )
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _array_examples(images: np.ndarray, labels: np.ndarray) -> Examples:
    def examples():
        for image, label in zip(images, labels):
            yield image, int(label)

    return examples


class _ImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders made by `write_image_dataset`; subclasses set the class attributes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Written by mvcl."}
    _splits: Mapping[str, Examples] = {}
    _image_shape: tuple[int | None, int | None, int] = (None, None, 1)
    _class_names: Sequence[str] = ()
    _description: str = ""
    _homepage: str = ""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=self._image_shape),
                    "label": tfds.features.ClassLabel(names=list(self._class_names)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=self._homepage or None,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in self._splits}

    def _generate_examples(self, split: str):
        num_classes = len(self._class_names)
        for key, (image, label) in enumerate(self._splits[split]()):
            if not 0 <= label < num_classes:
                raise ValueError(
                    f"split {split!r}, example {key}: label {label} is not in [0, {num_classes})"
                )
            yield key, {"image": png_bytes(image), "label": int(label)}


def write_image_dataset(
    name: str,
    splits: Mapping[str, Split],
    *,
    data_dir: str | os.PathLike,
    class_names: Sequence[str],
    image_shape: tuple[int | None, int | None, int] | None = None,
    description: str = "",
    homepage: str = "",
    version: str = "1.0.0",
    overwrite: bool = False,
) -> tfds.core.DatasetBuilder:
    """Writes ``splits`` as the tfds data set ``name`` in ``data_dir``; returns its builder.

    Args:
      name: lower snake case data set name (`check_name`).
      splits: split name -> ``(images uint8 (N, H, W, C), labels int (N,))`` or
        ``(count, examples)`` with ``examples()`` yielding ``(image, label)`` pairs.
      data_dir: tfds data directory (``config.dataset.data_dir``).
      class_names: label ``i`` is ``class_names[i]``.
      image_shape: ``(H, W, C)``, or ``(None, None, C)`` for images of varying sizes; by default
        the shape of the array splits (they must agree), else required.
      description, homepage: stored in ``dataset_info.json``.
      version: the tfds version directory.
      overwrite: replace the data set if it is already prepared (otherwise it is kept).

    Raises:
      ValueError: bad name, empty split, labels outside ``[0, len(class_names))``, images that
        are not uint8 with 1 or 3 channels, or array splits of different shapes.
    """
    check_name(name)
    if not splits:
        raise ValueError("no splits to write")
    if len(class_names) < 1:
        raise ValueError("class_names is empty")
    generators: dict[str, Examples] = {}
    shapes = set()
    num_generators = 0
    for split, value in splits.items():
        first, second = value
        if isinstance(first, (int, np.integer)):
            count, generators[split] = int(first), second
            num_generators += 1
        else:
            images, labels = np.asarray(first), np.asarray(second)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
                raise ValueError(
                    f"split {split!r}: images must be uint8 (N, H, W, 1 or 3), "
                    f"got {images.dtype} {images.shape}"
                )
            if labels.shape != (len(images),):
                raise ValueError(
                    f"split {split!r}: labels must be ({len(images)},), got {labels.shape}"
                )
            count, generators[split] = len(images), _array_examples(images, labels)
            shapes.add(images.shape[1:])
        if count < 1:
            raise ValueError(f"split {split!r} has no examples")
    if image_shape is None:
        if len(shapes) != 1 or num_generators:
            raise ValueError(
                f"image_shape is required: pass (H, W, C), or (None, None, C) for images of "
                f"varying sizes (array splits have shapes {sorted(shapes)})"
            )
        (image_shape,) = shapes
    elif tuple(image_shape[:2]) != (None, None) and shapes - {tuple(image_shape)}:
        raise ValueError(
            f"array splits have shapes {sorted(shapes)}, not image_shape {image_shape}"
        )

    attrs = {
        "name": name,
        "VERSION": tfds.core.Version(version),
        "RELEASE_NOTES": {version: "Written by mvcl."},
        "_splits": generators,
        "_image_shape": tuple(image_shape),
        "_class_names": tuple(class_names),
        "_description": description,
        "_homepage": homepage,
    }
    cls = types.new_class(
        "".join(part.capitalize() for part in name.split("_")) or "Dataset",
        (_ImageBuilder,),
        {"skip_registration": True},
        lambda ns: ns.update(attrs),
    )
    builder = cls(data_dir=data_dir)
    if builder.is_prepared() and not overwrite:
        return builder
    if builder.is_prepared():
        shutil.rmtree(os.fspath(builder.data_dir))
        builder = cls(data_dir=data_dir)
    root = os.path.join(os.fspath(data_dir), name)
    existed = os.path.exists(root)
    try:
        builder.download_and_prepare()
    except OSError:
        if not builder.is_prepared():  # Another process may have won the rename race.
            raise
    except Exception:
        if not existed:  # Leave no half-written data set behind (a bad image, a bad label).
            shutil.rmtree(root, ignore_errors=True)
        raise
    return cls(data_dir=data_dir)


def is_prepared(name: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether the data set ``name`` (any version) is prepared in ``data_dir``."""
    try:
        return tfds.builder(name, data_dir=data_dir).is_prepared()
    except tfds.core.registered.DatasetNotFoundError:
        return False
