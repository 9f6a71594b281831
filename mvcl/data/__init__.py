"""Data: tfds sources (incl. the bundled digits set), a resumable grain loader, on-device views.

Data sets mvcl writes itself, as tfds ArrayRecord: the bundled digits (`digits`), Fashion-MNIST
from its IDX files (`fashion_mnist`), and your own images (`importer`, from an ImageFolder
directory, an .npz file or IDX files; `tfds_writer` and `idx` do the writing and reading).

The host reads and sends each image once (uint8); `make_views` makes the V views on the device.
"""

from mvcl.data import fashion_mnist, idx, importer, tfds_writer
from mvcl.data.augment import (
    center_view,
    crop_boxes,
    make_views,
    scale_pixels,
    view_groups,
)
from mvcl.data.augment import normalize as normalize  # deprecated: scale_pixels
from mvcl.data.device_prefetch import DevicePrefetcher
from mvcl.data.digits import (
    DIGITS_NAME,
    MvclDigits,
    digits_arrays,
    digits_split_indices,
    prepare_digits,
)
from mvcl.data.fashion_mnist import prepare_fashion_mnist
from mvcl.data.importer import import_dataset
from mvcl.data.input_pipeline import BatchIterator, fit_whole, load_numpy, load_split
from mvcl.data.tfds_writer import write_image_dataset

__all__ = [
    "BatchIterator",
    "DIGITS_NAME",
    "DevicePrefetcher",
    "MvclDigits",
    "center_view",
    "crop_boxes",
    "digits_arrays",
    "digits_split_indices",
    "fit_whole",
    "fashion_mnist",
    "idx",
    "import_dataset",
    "importer",
    "load_numpy",
    "load_split",
    "make_views",
    "scale_pixels",
    "prepare_digits",
    "prepare_fashion_mnist",
    "tfds_writer",
    "view_groups",
    "write_image_dataset",
]
