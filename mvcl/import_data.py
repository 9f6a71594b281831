r"""Turns your own labelled images into a data set every config can name: ``mvcl-import``.

    mvcl-import --source=path/to/photos --name=my_photos          # <class>/<image> folders
    mvcl-import --source=arrays.npz --name=my_set --test_fraction=0.1
    mvcl-import --source=path/to/mnist_idx_dir --name=my_mnist
    mvcl-pretrain --config=own_data:name=my_photos

``--source`` is a directory of class-named image folders (``<class>/<image>``, or
``train/<class>/...`` and ``test/<class>/...``), an ``.npz`` file with ``images`` and ``labels``
(optionally ``test_images``, ``test_labels``, ``class_names``), or a directory of MNIST-style IDX
files; see `mvcl.data.importer`. The data set is written to ``--data_dir``, by default where the
configs look (``config.dataset.data_dir``: ``$TFDS_DATA_DIR`` if set, else ``./data`` of the
working directory; `mvcl.configs.common.default_data_dir`), or to a bucket: with
``--data_dir=gs://bucket/path`` it is written in this host's cache and uploaded
(`mvcl.data.mirror`; ``pip install 'mvcl[gcs]'``). The ``own_data`` config
(``configs/own_data.py``) has defaults that fit a small set of tens of images.
"""

import os

from absl import flags

from mvcl.configs import common
from mvcl.data import importer, mirror
from mvcl.train import cli, noise

_SOURCE = flags.DEFINE_string("source", None, "ImageFolder directory, .npz file or IDX directory.")
_NAME = flags.DEFINE_string("name", None, "Data set name (lower snake case): config.dataset.name.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    None,
    "Where to write it, a local or a gs:// path; default where the configs look: "
    "$TFDS_DATA_DIR or ./data.",
)
_TEST_FRACTION = flags.DEFINE_float(
    "test_fraction", 0.2, "Share of every class held out as 'test' if the source has no test split."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the hold-out draw.")
_MODE = flags.DEFINE_enum("mode", None, importer.MODES, "Convert every image to L or RGB.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing data set of that name.")
flags.mark_flags_as_required(["source", "name"])


def next_command(result: importer.ImportResult) -> str:
    """The ``mvcl-pretrain`` command that trains on the data set ``result`` describes."""
    command = f"mvcl-pretrain --config=own_data:name={result.name}"
    default = common.default_data_dir()
    if mirror.is_remote(result.data_dir) or mirror.is_remote(default):
        same = result.data_dir.rstrip("/") == default.rstrip("/")
    else:
        same = os.path.abspath(result.data_dir) == os.path.abspath(default)
    if not same:
        command += f" --config.dataset.data_dir={result.data_dir}"
    return command


def main(argv):
    cli.start(argv)
    with noise.quiet_data_preparation():  # tfds's "Failed to load dataset", progress bars, ...
        result = importer.import_dataset(
            _SOURCE.value,
            _NAME.value,
            _DATA_DIR.value or common.default_data_dir(),
            test_fraction=_TEST_FRACTION.value,
            seed=_SEED.value,
            mode=_MODE.value,
            overwrite=_OVERWRITE.value,
        )
    print(result.summary())
    print(f"Train on it: {next_command(result)}")


def run() -> None:
    """The console script ``mvcl-import`` (also ``python -m mvcl.import_data``)."""
    cli.show_in_help(_SOURCE, _NAME, _DATA_DIR, _TEST_FRACTION, _SEED, _MODE, _OVERWRITE)
    cli.run(main)


if __name__ == "__main__":
    run()
