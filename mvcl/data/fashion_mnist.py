"""Fashion-MNIST (Xiao et al. 2017) as a tfds ArrayRecord data set, from its four IDX files.

70,000 grayscale 28x28 images of 10 kinds of clothing (Zalando product photos): 60,000 "train",
10,000 "test", the original split. mvcl never downloads it: it reads

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

(``.gz`` or already uncompressed) from a source directory, by default
``/usr/share/datasets/fashion-mnist`` where Debian's package ``dataset-fashion-mnist`` installs
them (``apt-get install dataset-fashion-mnist``). Elsewhere, download the four files from the
``data/fashion`` folder of https://github.com/zalandoresearch/fashion-mnist into a directory and
pass it as ``config.dataset.source_dir`` (or ``source_dir=``).

`prepare_fashion_mnist` writes ``<data_dir>/mvcl_fashion_mnist/1.0.0/`` once (about half a
minute on a CPU) with the features of tfds's ``fashion_mnist`` (``image`` uint8 (28, 28, 1),
``label`` ClassLabel of `CLASS_NAMES`) and the splits "train" and "test", records in the order
of the IDX files; later calls only read its metadata. Configs name it ``"fashion_mnist"``,
which `mvcl.data.load_split` maps to this data set rather than to tfds's own ``fashion_mnist``
builder (the same features and splits, but it downloads and needs TensorFlow to write).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from mvcl.data import idx, mirror, tfds_writer

FASHION_MNIST_NAME = "mvcl_fashion_mnist"
ALIAS = "fashion_mnist"
DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60000, "test": 10000}
WHERE_TO_GET = (
    "Install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist, "
    f"which puts them in {DEFAULT_SOURCE_DIR}), or download them from the data/fashion folder "
    "of https://github.com/zalandoresearch/fashion-mnist into a directory and pass it as "
    "config.dataset.source_dir"
)


def find_file(source_dir: str | os.PathLike, stem: str) -> str:
    """``<source_dir>/<stem>.gz`` or ``<source_dir>/<stem>``.

    Raises:
      FileNotFoundError: neither exists; the message says where to get the file.
    """
    for candidate in (f"{stem}.gz", stem):
        path = os.path.join(source_dir, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz (or {stem}) is not in {os.fspath(source_dir)}. "
        f"{WHERE_TO_GET}. mvcl never downloads."
    )


def read_split(
    source_dir: str | os.PathLike, split: str, *, expected_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 28, 28, 1), uint8 labels (N,)) of ``split`` from the IDX files.

    ``expected_size`` (default: the official 60,000 / 10,000) is checked; pass -1 to skip it
    (tests use small files).
    """
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    image_path, label_path = (find_file(source_dir, stem) for stem in FILES[split])
    images, labels = idx.read_idx(image_path), idx.read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != (len(images),):
        raise ValueError(
            f"{label_path}: expected {len(images)} uint8 labels (one per image of {image_path}), "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{label_path}: label {labels.max()} is not in [0, {len(CLASS_NAMES)})")
    expected = SIZES[split] if expected_size is None else expected_size
    if expected >= 0 and len(images) != expected:
        raise ValueError(
            f"{image_path}: {len(images)} images, but Fashion-MNIST's {split} split has "
            f"{expected}; the file is not the original one"
        )
    return images[..., None], labels


def prepare_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
    *,
    check_sizes: bool = True,
) -> tfds.core.DatasetBuilder:
    """Writes Fashion-MNIST into ``data_dir`` from the IDX files in ``source_dir``, unless there.

    Args:
      data_dir: tfds data directory; None means ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
        A bucket path (``gs://``): the data set is written locally and uploaded unless the bucket
        holds it, and the builder reads this host's copy (`mvcl.data.mirror`).
      source_dir: directory of the four IDX files; None means `DEFAULT_SOURCE_DIR`. Not read at
        all when the data set is already prepared.
      check_sizes: require the official 60,000 / 10,000 examples (tests pass False).

    Returns:
      The builder of the prepared data set.

    Raises:
      FileNotFoundError: a file is missing (the message says where to get it).
      ValueError: a file is not a valid IDX file of Fashion-MNIST's shapes (naming it).
    """
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
    if mirror.is_remote(data_dir):
        local = mirror.local_data_dir(
            data_dir,
            FASHION_MNIST_NAME,
            prepare=lambda d: prepare_fashion_mnist(d, source_dir, check_sizes=check_sizes),
        )
        return tfds.builder(FASHION_MNIST_NAME, data_dir=local)
    if tfds_writer.is_prepared(FASHION_MNIST_NAME, data_dir):
        return tfds.builder(FASHION_MNIST_NAME, data_dir=data_dir)
    source_dir = DEFAULT_SOURCE_DIR if source_dir is None else source_dir
    size = None if check_sizes else -1
    splits = {split: read_split(source_dir, split, expected_size=size) for split in FILES}
    return tfds_writer.write_image_dataset(
        FASHION_MNIST_NAME,
        splits,
        data_dir=data_dir,
        class_names=CLASS_NAMES,
        image_shape=(28, 28, 1),
        description=(
            "Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 28x28 grayscale Zalando article "
            "images, 10 classes, written by mvcl from the original IDX files."
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    )


def prepare_from_config(dataset_config) -> None:
    """Prepares Fashion-MNIST if ``dataset_config.name`` names it (else does nothing).

    Reads ``dataset_config.source_dir`` if the config has that field (default source otherwise).
    """
    if dataset_config.name not in (ALIAS, FASHION_MNIST_NAME) or dataset_config.get("fake"):
        return
    prepare_fashion_mnist(dataset_config.data_dir, dataset_config.get("source_dir"))
