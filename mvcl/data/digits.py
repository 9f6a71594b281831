"""The bundled digits data set as a tfds builder (no download).

Source: scikit-learn's `sklearn.datasets.load_digits()`, the 1,797 real 8x8 handwritten digits of
the UCI "Optical Recognition of Handwritten Digits" test set, with pixel values 0..16.

Features:
  image: uint8 (8, 8, 1), ``round(pixel * 255 / 16)`` (so 0 -> 0 and 16 -> 255), stored as PNG.
  label: ClassLabel(10), the digit.
  index: int64, the row of the example in ``load_digits()`` (provenance; tests use it).

Splits (fixed, never re-drawn): ``np.random.RandomState(0).permutation(1797)``; its first 360
entries (~20%) are "test", the other 1,437 are "train". The legacy `RandomState` stream is used
because numpy guarantees it never changes across versions. Within a split, records are stored in
increasing ``index`` order (tfds shuffling is disabled), so record ``j`` of a split is
``digits_split_indices(split)[j]``.

Files are ArrayRecord so `tfds.data_source` gives random access without TensorFlow. Call
`prepare_digits(data_dir)`: the first call writes ``<data_dir>/mvcl_digits/1.0.0/`` (well under a
second), later calls only read the metadata. A ``data_dir`` in a bucket (``gs://``) gets it
written locally and uploaded on first use (`mvcl.data.mirror`).
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds

from mvcl.data import mirror

DIGITS_NAME = "mvcl_digits"
NUM_EXAMPLES = 1797
NUM_TEST = 360
SPLIT_SEED = 0


def digits_split_indices(split: str) -> np.ndarray:
    """Rows of `load_digits()` in `split` ("train" or "test"), in stored (increasing) order."""
    perm = np.random.RandomState(SPLIT_SEED).permutation(NUM_EXAMPLES)
    if split == "test":
        return np.sort(perm[:NUM_TEST])
    if split == "train":
        return np.sort(perm[NUM_TEST:])
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All of `load_digits()` as (uint8 (1797, 8, 8, 1) images scaled to 0..255, int64 labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


def _png(image: np.ndarray) -> bytes:
    # tfds encodes numpy images with TensorFlow; handing it PNG bytes made by Pillow avoids TF.
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0], mode="L").save(buf, format="PNG")
    return buf.getvalue()


class MvclDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits, split 1,437 train / 360 test (see module docstring)."""

    name = DIGITS_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # `dataset_info_from_configs` would look for metadata files next to this module; pass the
        # metadata directly instead.
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn's 8x8 handwritten digits (values scaled 0..16 -> 0..255).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str):
        images, labels = digits_arrays()
        for i in digits_split_indices(split):
            yield int(i), {"image": _png(images[i]), "label": int(labels[i]), "index": int(i)}


def prepare_digits(data_dir: str | os.PathLike | None = None) -> MvclDigits:
    """Writes the digits data set into `data_dir` unless already there; returns its builder.

    `data_dir=None` means the tfds default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    Safe to call from several processes sharing `data_dir`: tfds writes into a temporary directory
    and renames it, and a process that loses the race finds the data prepared. A bucket path
    (``gs://``) gets the data set written locally and uploaded if the bucket lacks it, and the
    builder reads this host's copy (`mvcl.data.mirror`).
    """
    remote = os.environ.get("TFDS_DATA_DIR") if data_dir is None else data_dir
    if mirror.is_remote(remote):
        data_dir = mirror.local_data_dir(remote, DIGITS_NAME, prepare=prepare_digits)
    builder = MvclDigits(data_dir=data_dir)
    if builder.is_prepared():
        return builder
    try:
        builder.download_and_prepare()
    except OSError:
        if not builder.is_prepared():
            raise
    return MvclDigits(data_dir=data_dir)
