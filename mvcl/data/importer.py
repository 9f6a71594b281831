"""Your own labelled images as a tfds ArrayRecord data set that any config can name.

    mvcl-import --source=DIR_OR_FILE --name=my_set [--data_dir=./data]
    mvcl-pretrain --config=own_data:name=my_set

A ``data_dir`` in a bucket (``gs://bucket/path``) gets the data set written locally (this host's
cache, `mvcl.data.mirror`) and then uploaded, so training on any host can read it from there.

`import_dataset` recognises three layouts of ``source``:

* **ImageFolder** (a directory of class-named folders of images, as torchvision's
  ``ImageFolder``): ``source/<class>/<any name>.<png|jpg|...>``. Classes are the folder names in
  sorted order (label ``i`` is the ``i``-th). If ``source`` holds exactly the folders ``train``
  and ``test`` (each of class folders, with the same classes), those are the splits.
* **.npz** (a file): ``images`` uint8 (N, H, W) or (N, H, W, 1 or 3) and integer ``labels``
  (N,) in ``[0, K)``; optionally ``test_images`` / ``test_labels`` for the test split and
  ``class_names`` (K strings).
* **IDX** (a directory holding MNIST-style files): ``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]`` and optionally ``t10k-`` or ``test-`` files of the same
  kind for the test split.

Without a test split of its own, ``test_fraction`` of every class (at least one image of a class
with two or more) goes to "test", drawn with ``np.random.RandomState(seed)``; the rest is "train".
Records are stored in a fixed order: by class, then file name (ImageFolder), or in the order of
the arrays.

Every image must have one mode, grayscale ("L", stored with 1 channel) or colour ("RGB", 3
channels). Mixed modes, or other modes (palette, alpha, 16-bit), are an error that lists them;
``mode="L"`` or ``mode="RGB"`` converts every image instead. Images of different sizes are kept
as they are (``config.dataset.image_size`` resizes them when training). An empty class folder, a
file that is not an image, or a class without images is an error naming it, and leaves no data
set behind (modes and headers are checked before writing; a file that fails to decode while
writing removes the partial data set).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from mvcl.data import idx, mirror, tfds_writer

MODES = ("L", "RGB")
SPLIT_DIRS = ("train", "test")


@dataclasses.dataclass
class ImportResult:
    """What `import_dataset` wrote."""

    name: str
    data_dir: str
    format: str
    class_names: list[str]
    split_sizes: dict[str, int]
    image_shape: tuple[int | None, int | None, int]

    def summary(self) -> str:
        h, w, c = self.image_shape
        size = f"{h}x{w}" if h else "varying sizes (set config.dataset.image_size)"
        splits = ", ".join(f"{k} {v}" for k, v in self.split_sizes.items())
        return (
            f"Wrote {self.name!r} ({self.format}) to {self.data_dir}: {splits} images, "
            f"{len(self.class_names)} classes, {size}, {c} channel(s): "
            f"--config.dataset.name={self.name} --config.dataset.data_dir={self.data_dir}"
        )


# --- splitting ----------------------------------------------------------------------------------


def split_indices(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into ``labels``: ``test_fraction`` of every class to test, sorted."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.RandomState(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(test_fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        test.extend(rng.permutation(members)[:count].tolist())
    test = np.sort(np.asarray(test, np.int64))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


# --- ImageFolder --------------------------------------------------------------------------------


def _image_files(class_dir: str) -> list[str]:
    return sorted(
        os.path.join(class_dir, f)
        for f in os.listdir(class_dir)
        if not f.startswith(".") and os.path.isfile(os.path.join(class_dir, f))
    )


def _class_dirs(root: str) -> dict[str, list[str]]:
    classes = sorted(
        d
        for d in os.listdir(root)
        if not d.startswith(".") and os.path.isdir(os.path.join(root, d))
    )
    if not classes:
        raise ValueError(
            f"{root} has no class folders: an ImageFolder data set is <source>/<class>/<image>"
        )
    files = {}
    for name in classes:
        files[name] = _image_files(os.path.join(root, name))
        if not files[name]:
            raise ValueError(f"class folder {os.path.join(root, name)} is empty (no image files)")
    return files


def _open_header(path: str) -> tuple[str, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _load_image(path: str, mode: str) -> np.ndarray:
    from PIL import Image  # pylint: disable=g-import-not-at-top

    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert(mode) if image.mode != mode else image, np.uint8)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return array[..., None] if array.ndim == 2 else array


def _choose_mode(modes: dict[str, list[str]], mode: str | None) -> str:
    """The mode to store: ``mode`` if given, else the one mode of every image (L or RGB)."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return mode
    if len(modes) == 1 and next(iter(modes)) in MODES:
        return next(iter(modes))
    found = "; ".join(
        f"{m}: {len(paths)} file(s), e.g. {paths[0]}" for m, paths in sorted(modes.items())
    )
    problem = "mixed image modes" if len(modes) > 1 else "an image mode other than L or RGB"
    raise ValueError(
        f"{problem} ({found}); every image must be grayscale (L) or every image colour (RGB). "
        f"Pass mode='L' or mode='RGB' (--mode) to convert them all"
    )


def _folder_splits(
    source: str, test_fraction: float, seed: int, mode: str | None
) -> tuple[dict, list[str], tuple]:
    entries = sorted(os.listdir(source))
    visible = [e for e in entries if not e.startswith(".")]
    if sorted(visible) == sorted(SPLIT_DIRS) and all(
        os.path.isdir(os.path.join(source, d)) for d in SPLIT_DIRS
    ):
        per_split = {s: _class_dirs(os.path.join(source, s)) for s in SPLIT_DIRS}
        if list(per_split["train"]) != list(per_split["test"]):
            raise ValueError(
                f"{source}/train and {source}/test must hold the same class folders, got "
                f"{list(per_split['train'])} and {list(per_split['test'])}"
            )
        class_names = list(per_split["train"])
        split_files = {
            s: [(p, i) for i, c in enumerate(class_names) for p in per_split[s][c]]
            for s in SPLIT_DIRS
        }
    else:
        files = _class_dirs(source)
        class_names = list(files)
        pairs = [(p, i) for i, c in enumerate(class_names) for p in files[c]]
        labels = np.asarray([label for _, label in pairs])
        train, test = split_indices(labels, test_fraction, seed)
        split_files = {"train": [pairs[i] for i in train], "test": [pairs[i] for i in test]}

    modes: dict[str, list[str]] = {}
    sizes = set()
    for pairs in split_files.values():
        for path, _ in pairs:
            image_mode, size = _open_header(path)
            modes.setdefault(image_mode, []).append(path)
            sizes.add(size)
    mode = _choose_mode(modes, mode)
    channels = 1 if mode == "L" else 3
    if len(sizes) == 1:
        ((w, h),) = sizes
        shape = (h, w, channels)
    else:
        shape = (None, None, channels)

    def examples(pairs: Sequence[tuple[str, int]]) -> Callable[[], Iterator]:
        def gen():
            for path, label in pairs:
                yield _load_image(path, mode), label

        return gen

    splits = {s: (len(p), examples(p)) for s, p in split_files.items() if p}
    return splits, class_names, shape


# --- arrays (.npz and IDX) ----------------------------------------------------------------------


def _as_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{where}: images must be (N, H, W) or (N, H, W, 1 or 3), got {images.shape}"
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
            raise ValueError(
                f"{where}: images must be uint8 (or integers in [0, 255]), got {images.dtype}"
            )
        images = images.astype(np.uint8)
    if len(images) == 0:
        raise ValueError(f"{where}: no images")
    return images


def _as_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}: labels must be {count} integers (one per image), got {labels.dtype} "
            f"{labels.shape}"
        )
    if labels.min() < 0:
        raise ValueError(f"{where}: negative label {labels.min()}")
    return labels.astype(np.int64)


def _array_splits(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray] | None,
    class_names: list[str] | None,
    test_fraction: float,
    seed: int,
    where: str,
) -> tuple[dict, list[str], tuple]:
    images = _as_images(np.asarray(train[0]), where)
    labels = _as_labels(np.asarray(train[1]), len(images), where)
    splits = {"train": (images, labels)}
    if test is not None:
        test_images = _as_images(np.asarray(test[0]), where + " (test)")
        test_labels = _as_labels(np.asarray(test[1]), len(test_images), where + " (test)")
        if test_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"{where}: test images are {test_images.shape[1:]}, train images {images.shape[1:]}"
            )
        splits["test"] = (test_images, test_labels)
    else:
        train_idx, test_idx = split_indices(labels, test_fraction, seed)
        splits = {"train": (images[train_idx], labels[train_idx])}
        if len(test_idx):
            splits["test"] = (images[test_idx], labels[test_idx])
    num_classes = int(max(s[1].max() for s in splits.values())) + 1
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif len(class_names) < num_classes:
        raise ValueError(
            f"{where}: {len(class_names)} class_names, but labels go up to {num_classes - 1}"
        )
    present = np.unique(np.concatenate([s[1] for s in splits.values()]))
    missing = sorted(set(range(len(class_names))) - set(present.tolist()))
    if missing:
        raise ValueError(
            f"{where}: class(es) {[class_names[i] for i in missing]} (labels {missing}) have no "
            f"images"
        )
    return splits, list(class_names), images.shape[1:]


def _npz_splits(path: str, test_fraction: float, seed: int) -> tuple[dict, list[str], tuple]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} as an .npz archive: {e}") from e
    with archive:
        keys = set(archive.files)
        if not {"images", "labels"} <= keys:
            raise ValueError(
                f"{path} must hold arrays 'images' and 'labels' (it holds {sorted(keys)})"
            )
        test = None
        if {"test_images", "test_labels"} <= keys:
            test = (archive["test_images"], archive["test_labels"])
        names = [str(n) for n in archive["class_names"]] if "class_names" in keys else None
        return _array_splits(
            (archive["images"], archive["labels"]), test, names, test_fraction, seed, path
        )


def _find_idx(source: str, prefixes: Sequence[str], kind: str) -> str | None:
    for prefix in prefixes:
        for suffix in (".gz", ""):
            path = os.path.join(source, f"{prefix}-{kind}-ubyte{suffix}")
            if os.path.isfile(path):
                return path
    return None


def is_idx_dir(source: str) -> bool:
    """Whether ``source`` is a directory of MNIST-style IDX files."""
    return os.path.isdir(source) and _find_idx(source, ("train",), "images-idx3") is not None


def _idx_splits(source: str, test_fraction: float, seed: int) -> tuple[dict, list[str], tuple]:
    def pair(prefixes):
        images = _find_idx(source, prefixes, "images-idx3")
        labels = _find_idx(source, prefixes, "labels-idx1")
        if images is None:
            return None
        if labels is None:
            raise ValueError(
                f"{images} has no labels file ({prefixes[0]}-labels-idx1-ubyte[.gz]) in {source}"
            )
        return idx.read_idx(images), idx.read_idx(labels)

    train = pair(("train",))
    test = pair(("t10k", "test"))
    return _array_splits(train, test, None, test_fraction, seed, source)


# --- the entry point ----------------------------------------------------------------------------


def detect_format(source: str | os.PathLike) -> str:
    """ "npz", "idx" or "folder" for ``source``; ValueError if it is none of them."""
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"source {source} does not exist")
    if os.path.isfile(source):
        if source.endswith(".npz"):
            return "npz"
        raise ValueError(
            f"source file {source} is not an .npz archive; give an .npz file, a directory of "
            f"class folders (ImageFolder) or a directory of IDX files"
        )
    return "idx" if is_idx_dir(source) else "folder"


def import_dataset(
    source: str | os.PathLike,
    name: str,
    data_dir: str | os.PathLike,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    mode: str | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Writes the images of ``source`` as the tfds data set ``name`` in ``data_dir``.

    Args:
      source: an ImageFolder directory, an ``.npz`` file or a directory of IDX files (see the
        module docstring).
      name: lower snake case data set name, then ``config.dataset.name``; must not be the name of
        a data set tfds knows (``cifar10``, ...), which would take precedence.
      data_dir: tfds data directory, then ``config.dataset.data_dir``. A bucket path
        (``gs://bucket/path``): the data set is written in this host's cache, uploaded to
        ``<data_dir>/<name>/`` and kept as this host's copy (`mvcl.data.mirror.publish`).
      test_fraction: share of every class held out as "test" when ``source`` has no test split.
      seed: seed of that hold-out draw.
      mode: ImageFolder only: "L" or "RGB" converts every image; None requires one of them.
      overwrite: replace an existing data set of that name in ``data_dir``.

    Raises:
      FileNotFoundError: ``source`` does not exist.
      ValueError: the name is taken or invalid, or the source is malformed (naming the file).
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    tfds_writer.check_name(name)
    if name in tfds.list_builders(with_community_datasets=False) or name.startswith("mvcl_"):
        raise ValueError(
            f"data set name {name!r} is taken by a built-in data set; choose another name"
        )
    source, data_dir = os.fspath(source), os.fspath(data_dir)
    if mirror.is_remote(data_dir):
        data_dir = mirror.check(data_dir)
        if mirror.in_bucket(data_dir, name) and not overwrite:
            raise ValueError(
                f"a data set named {name!r} already exists in {data_dir}; pass overwrite=True "
                f"(--overwrite) to replace it, or choose another name"
            )
        written = []

        def write(local: str) -> None:
            written.append(
                import_dataset(
                    source, name, local, test_fraction=test_fraction, seed=seed, mode=mode
                )
            )

        mirror.publish(data_dir, name, write, replace=overwrite)
        return dataclasses.replace(written[0], data_dir=data_dir)
    if tfds_writer.is_prepared(name, data_dir) and not overwrite:
        raise ValueError(
            f"a data set named {name!r} already exists in {data_dir}; pass overwrite=True "
            f"(--overwrite) to replace it, or choose another name"
        )
    kind = detect_format(source)
    if kind == "folder":
        splits, class_names, shape = _folder_splits(source, test_fraction, seed, mode)
    elif kind == "npz":
        splits, class_names, shape = _npz_splits(source, test_fraction, seed)
    else:
        splits, class_names, shape = _idx_splits(source, test_fraction, seed)
    tfds_writer.write_image_dataset(
        name,
        splits,
        data_dir=data_dir,
        class_names=class_names,
        image_shape=tuple(shape),
        description=f"Imported by mvcl from {source} ({kind}).",
        overwrite=overwrite,
    )
    return ImportResult(
        name=name,
        data_dir=data_dir,
        format=kind,
        class_names=class_names,
        split_sizes={s: (v[0] if isinstance(v[0], int) else len(v[0])) for s, v in splits.items()},
        image_shape=tuple(shape),
    )
