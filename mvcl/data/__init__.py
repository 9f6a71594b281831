"""Data: tfds sources (incl. the bundled digits set), a resumable grain loader, on-device views.

The host reads and sends each image once (uint8); `make_views` makes the V views on the device.
"""

from mvcl.data.augment import center_view, crop_boxes, make_views, normalize, view_groups
from mvcl.data.device_prefetch import DevicePrefetcher
from mvcl.data.digits import (
    DIGITS_NAME,
    MvclDigits,
    digits_arrays,
    digits_split_indices,
    prepare_digits,
)
from mvcl.data.input_pipeline import BatchIterator, fit_whole, load_numpy, load_split

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
    "load_numpy",
    "load_split",
    "make_views",
    "normalize",
    "prepare_digits",
    "view_groups",
]
