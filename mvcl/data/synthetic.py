"""A synthetic ImageNet-format tfds data set of JPEGs, written locally (no download).

For benchmarks and tests of the host pipeline: records look like ``imagenet2012``'s (``image``: a
JPEG of varying size, decoded to uint8 (H, W, 3); ``label``: ClassLabel(1000); ``file_name``), in
ArrayRecord files that `tfds.data_source` reads without TensorFlow.

Image ``i`` of a split (seeded by ``(seed, split, i)``) has height and width drawn uniformly from
``[min_side, max_side]`` and is a smooth random colour field with fine noise on top, saved as JPEG
at quality 90, so decoding costs about what a photograph of that size costs. Records listed in
``corrupt`` hold bytes that are not an image, to exercise error handling.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

SYNTHETIC_NAME = "mvcl_synthetic_jpeg"
SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `prepare_synthetic_jpeg` writes (the data directory should be specific to it)."""

    num_train: int = 2000
    num_validation: int = 100
    min_side: int = 300
    max_side: int = 500
    seed: int = 0
    corrupt: Sequence[int] = ()  # train records holding non-image bytes


def synthetic_jpeg(seed: int, split: str, index: int, min_side: int, max_side: int) -> bytes:
    """The JPEG bytes of record `index` of `split` (see the module docstring)."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    h, w = (int(s) for s in rng.integers(min_side, max_side + 1, 2))
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
    noise = rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    image = np.clip(field + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class MvclSyntheticJpeg(tfds.core.GeneratorBasedBuilder):
    """Synthetic JPEGs in the ``imagenet2012`` format (see the module docstring)."""

    name = SYNTHETIC_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, settings: Settings | None = None, **kwargs):
        self.settings = settings or Settings()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic JPEGs of varying sizes in the imagenet2012 format.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=1000),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        s = self.settings
        count = s.num_train if split == "train" else s.num_validation
        for i in range(count):
            if split == "train" and i in s.corrupt:
                image = b"this is not a JPEG"
            else:
                image = synthetic_jpeg(s.seed, split, i, s.min_side, s.max_side)
            yield i, {"image": image, "label": i % 1000, "file_name": f"{split}_{i:08d}.JPEG"}


def prepare_synthetic_jpeg(
    data_dir: str | os.PathLike, settings: Settings | None = None
) -> MvclSyntheticJpeg:
    """Writes the data set into `data_dir` unless already there; returns its builder."""
    builder = MvclSyntheticJpeg(data_dir=data_dir, settings=settings)
    if builder.is_prepared():
        return builder
    builder = MvclSyntheticJpeg(data_dir=data_dir, settings=settings, file_format="array_record")
    builder.download_and_prepare()
    return builder
