r"""Turn your own labelled images into a tfds ArrayRecord data set that every config can name.

    python experiments/import_data.py --source=path/to/flowers --name=flowers       # ImageFolder
    python experiments/import_data.py --source=arrays.npz --name=my_set --test_fraction=0.1
    python experiments/import_data.py --source=path/to/mnist_idx_dir --name=my_mnist
    mvcl-pretrain --config=cifar10 --config.dataset.name=flowers

``--source`` is a directory of class-named image folders (``<class>/<image>``, or
``train/<class>/...`` and ``test/<class>/...``), an ``.npz`` file with ``images`` and ``labels``
(optionally ``test_images``, ``test_labels``, ``class_names``), or a directory of MNIST-style IDX
files; see ``mvcl.data.importer``. The data set is written to ``--data_dir`` (default
``$TFDS_DATA_DIR`` or ``./data``, where the configs look).
"""

import sys

from absl import app, flags

from mvcl.configs import common
from mvcl.data import importer

_SOURCE = flags.DEFINE_string("source", None, "ImageFolder directory, .npz file or IDX directory.")
_NAME = flags.DEFINE_string("name", None, "Data set name (lower snake case): config.dataset.name.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "tfds data directory; default $TFDS_DATA_DIR or ./data."
)
_TEST_FRACTION = flags.DEFINE_float(
    "test_fraction", 0.2, "Share of every class held out as 'test' if the source has no test split."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the hold-out draw.")
_MODE = flags.DEFINE_enum("mode", None, importer.MODES, "Convert every image to L or RGB.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing data set of that name.")
flags.mark_flags_as_required(["source", "name"])


def main(argv):
    del argv
    try:
        result = importer.import_dataset(
            _SOURCE.value,
            _NAME.value,
            _DATA_DIR.value or common.default_data_dir(),
            test_fraction=_TEST_FRACTION.value,
            seed=_SEED.value,
            mode=_MODE.value,
            overwrite=_OVERWRITE.value,
        )
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"import_data.py: {e}")
    print(result.summary())


if __name__ == "__main__":
    app.run(main)
