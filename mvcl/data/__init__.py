"""Data: tfds sources (incl. the bundled digits set), a resumable host iterator, on-device views.

The host reads and sends each image once (uint8); `make_views` makes the V views on the device.
"""

from mvcl.data.augment import center_view, make_views, normalize, view_groups
from mvcl.data.digits import (
    DIGITS_NAME,
    MvclDigits,
    digits_arrays,
    digits_split_indices,
    prepare_digits,
)
from mvcl.data.input_pipeline import BatchIterator, load_numpy, load_split

__all__ = [
    "BatchIterator",
    "DIGITS_NAME",
    "MvclDigits",
    "center_view",
    "digits_arrays",
    "digits_split_indices",
    "load_numpy",
    "load_split",
    "make_views",
    "normalize",
    "prepare_digits",
    "view_groups",
]
