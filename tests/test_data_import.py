"""Tests for the data sets mvcl writes: IDX files, Fashion-MNIST, and the user-data importer."""

import gzip
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from run_helpers import console_script

from mvcl import data
from mvcl.data import fashion_mnist, idx, importer

REPO = Path(__file__).resolve().parents[1]


def small_fashion_dir(path: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict:
    """Writes the four Fashion-MNIST IDX files with random contents; returns the arrays."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        idx.write_idx(path / f"{split}-images-idx3-ubyte{suffix}", images)
        idx.write_idx(path / f"{split}-labels-idx1-ubyte{suffix}", labels)
        arrays[split] = (images, labels)
    return arrays


# --- IDX ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trips_every_type(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    idx.write_idx(path, array)
    back = idx.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_bytes_follow_the_format_big_endian():
    raw = idx.encode_idx(np.array([[1, 2, 3], [4, 5, 258]], np.int32))
    # magic 00 00 0C (int32) 02 (dims), sizes 2 and 3 as big-endian uint32, then the values.
    assert raw[:4] == bytes([0, 0, 0x0C, 2])
    assert raw[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert raw[12 + 5 * 4 :] == (258).to_bytes(4, "big")
    assert len(raw) == 12 + 6 * 4


def test_idx_reads_a_hand_written_mnist_label_file(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 9]))
    np.testing.assert_array_equal(idx.read_idx(path), np.array([7, 2, 9], np.uint8))


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x00\x00", "too short"),
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "magic number 01000801"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "unknown IDX type code 0x42"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 2]), "truncated header"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3]), r"truncated: .*\(2, 2\)"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "trailing bytes"),
    ],
    ids=["short", "magic", "type", "header", "truncated", "trailing"],
)
def test_malformed_idx_names_the_file_and_the_problem(tmp_path, raw, match):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(idx.IdxError, match=match) as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_idx_is_a_clear_error(tmp_path):
    good = tmp_path / "good-idx3-ubyte.gz"
    idx.write_idx(good, np.zeros((50, 28, 28), np.uint8))
    bad = tmp_path / "bad-idx3-ubyte.gz"
    bad.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(idx.IdxError, match="not a complete gzip file"):
        idx.read_idx(bad)
    plain = tmp_path / "plain-idx3-ubyte.gz"  # named .gz but not gzipped
    plain.write_bytes(idx.encode_idx(np.zeros(3, np.uint8)))
    with pytest.raises(idx.IdxError, match=str(plain)):
        idx.read_idx(plain)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        idx.read_idx(tmp_path / "missing-idx1-ubyte")
    with pytest.raises(ValueError, match="cannot store dtype"):
        idx.encode_idx(np.zeros(3, np.uint32))


# --- Fashion-MNIST ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_fashion_mnist_is_written_from_idx_files_in_the_source_dir(tmp_path, gz):
    arrays = small_fashion_dir(tmp_path, gz=gz)
    builder = data.prepare_fashion_mnist(tmp_path / "tfds", tmp_path, check_sizes=False)
    assert builder.info.features["label"].names[9] == "ankle boot"
    for split, key in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[key]
        source = data.load_split("fashion_mnist", split, tmp_path / "tfds")
        assert len(source) == len(images)
        for j in (0, len(images) - 1):
            assert source[j]["image"].shape == (28, 28, 1) and source[j]["image"].dtype == np.uint8
            np.testing.assert_array_equal(source[j]["image"][..., 0], images[j])
            assert source[j]["label"] == labels[j]
        x, y = data.load_numpy("fashion_mnist", split, tmp_path / "tfds")
        np.testing.assert_array_equal(x[..., 0], images)
        np.testing.assert_array_equal(y, labels)
    # Prepared: the source files are not read again.
    for f in tmp_path.glob("*-ubyte*"):
        f.unlink()
    assert data.prepare_fashion_mnist(tmp_path / "tfds", tmp_path).is_prepared()


def test_fashion_mnist_missing_or_wrong_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.prepare_fashion_mnist(tmp_path / "tfds", tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path) in message
    assert "dataset-fashion-mnist" in message and "zalandoresearch/fashion-mnist" in message
    assert "config.dataset.source_dir" in message
    small_fashion_dir(tmp_path)  # 12 / 5 examples: not the official files
    with pytest.raises(ValueError, match="12 images, but Fashion-MNIST's train split has 60000"):
        data.prepare_fashion_mnist(tmp_path / "tfds", tmp_path)
    idx.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        fashion_mnist.read_split(tmp_path, "test", expected_size=-1)
    assert not (tmp_path / "tfds" / fashion_mnist.FASHION_MNIST_NAME).exists()


def test_training_on_fashion_mnist_reads_config_source_dir(tmp_path):
    from mvcl.train.inputs import open_sources

    config = importlib.import_module("mvcl.configs.fashion_mnist").get_config()
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.dataset.source_dir = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="config.dataset.name.*nowhere.*dataset-fashion-mnist"):
        open_sources(config)


def test_fashion_mnist_long_setting_has_two_views_and_wide_features_unless_told():
    from mvcl.train.state import build_model

    get_config = importlib.import_module("mvcl.configs.fashion_mnist").get_config
    default, long, long4 = get_config(), get_config("long=True"), get_config("views=4,long=True")

    def setting(config):
        return config.num_views, config.num_epochs, config.model.kwargs.get("features")

    # The default sets no `features` (ConvNet's 512): runs saved before the key existed resume.
    assert setting(default) == (4, 3, None)
    assert setting(long) == (2, 20, 2048) and long.name == "fashion_mnist_mv_dhel_v2_long"
    assert setting(long4) == (4, 20, 2048)
    images = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    for config, features in ((default, 512), (long, 2048)):
        model = build_model(config)
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
        h, z = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
        assert h.shape == (2, features) and z.shape == (2, config.model.proj_dim)


# --- the importer -------------------------------------------------------------------------------


def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def image_folder(root: Path, counts=(3, 4), size=(6, 5), rgb=True, seed=0) -> dict:
    """Writes class folders of PNGs; returns {class: [arrays in file-name order]}."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, count in zip(("cat", "dog", "emu"), counts):
        out[c] = []
        for i in range(count):
            shape = (*size, 3) if rgb else size
            array = rng.integers(0, 256, shape, dtype=np.uint8)
            save(root / c / f"img{i:02d}.png", array)
            out[c].append(array if rgb else array[..., None])
    return out


def read_all(name, split, data_dir):
    source = data.load_split(name, split, data_dir)
    return [(np.asarray(source[i]["image"]), int(source[i]["label"])) for i in range(len(source))]


def test_image_folder_is_imported_with_a_stratified_fixed_split(tmp_path):
    arrays = image_folder(tmp_path / "src", counts=(5, 10))
    result = data.import_dataset(tmp_path / "src", "pets", tmp_path / "tfds", test_fraction=0.2)
    assert result.format == "folder" and result.class_names == ["cat", "dog"]
    assert result.split_sizes == {"train": 12, "test": 3} and result.image_shape == (6, 5, 3)
    labels = np.repeat([0, 1], [5, 10])
    train_idx, test_idx = importer.split_indices(labels, 0.2, 0)
    flat = arrays["cat"] + arrays["dog"]
    for split, ids in (("train", train_idx), ("test", test_idx)):
        records = read_all("pets", split, tmp_path / "tfds")
        assert [label for _, label in records] == labels[ids].tolist()
        for (image, _), i in zip(records, ids):
            np.testing.assert_array_equal(image, flat[i])
    assert sorted(labels[test_idx].tolist()) == [0, 1, 1]  # 20% of each class
    assert "--config.dataset.name=pets" in result.summary()


def test_image_folder_with_train_and_test_folders_keeps_them(tmp_path):
    image_folder(tmp_path / "src" / "train", counts=(2, 3), rgb=False)
    image_folder(tmp_path / "src" / "test", counts=(1, 1), rgb=False, seed=1)
    result = data.import_dataset(tmp_path / "src", "gray", tmp_path / "tfds")
    assert result.split_sizes == {"train": 5, "test": 2} and result.image_shape == (6, 5, 1)
    records = read_all("gray", "test", tmp_path / "tfds")
    assert [label for _, label in records] == [0, 1] and records[0][0].shape == (6, 5, 1)


def test_image_folder_of_varying_sizes_is_stored_ragged(tmp_path):
    save(tmp_path / "src" / "a" / "x.png", np.zeros((4, 7), np.uint8))
    save(tmp_path / "src" / "a" / "y.jpg", np.zeros((9, 3), np.uint8))
    save(tmp_path / "src" / "b" / "z.png", np.full((5, 5), 200, np.uint8))
    save(tmp_path / "src" / "b" / "w.png", np.full((2, 8), 100, np.uint8))
    result = data.import_dataset(tmp_path / "src", "ragged", tmp_path / "tfds", test_fraction=0.5)
    assert result.image_shape == (None, None, 1)
    shapes = {im.shape for im, _ in read_all("ragged", "train", tmp_path / "tfds")}
    shapes |= {im.shape for im, _ in read_all("ragged", "test", tmp_path / "tfds")}
    assert shapes == {(4, 7, 1), (9, 3, 1), (5, 5, 1), (2, 8, 1)}


def test_image_folder_errors_name_the_problem_and_write_nothing(tmp_path):
    image_folder(tmp_path / "empty", counts=(2, 2))
    (tmp_path / "empty" / "fox").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*fox is empty"):
        data.import_dataset(tmp_path / "empty", "x", tmp_path / "tfds")

    image_folder(tmp_path / "mixed", counts=(2, 2))
    save(tmp_path / "mixed" / "cat" / "gray.png", np.zeros((6, 5), np.uint8))
    with pytest.raises(ValueError, match=r"mixed image modes \(L: 1 file.*gray.png; RGB: 4"):
        data.import_dataset(tmp_path / "mixed", "x", tmp_path / "tfds")
    result = data.import_dataset(tmp_path / "mixed", "converted", tmp_path / "tfds", mode="L")
    assert result.image_shape == (6, 5, 1)

    image_folder(tmp_path / "alpha", counts=(2, 2))
    save(tmp_path / "alpha" / "dog" / "a.png", np.zeros((6, 5, 4), np.uint8), mode="RGBA")
    for f in (tmp_path / "alpha").rglob("img*.png"):
        f.unlink()
    save(tmp_path / "alpha" / "cat" / "b.png", np.zeros((6, 5, 4), np.uint8), mode="RGBA")
    with pytest.raises(ValueError, match="an image mode other than L or RGB.*RGBA"):
        data.import_dataset(tmp_path / "alpha", "x", tmp_path / "tfds")

    image_folder(tmp_path / "broken", counts=(2, 2))
    (tmp_path / "broken" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*notes.txt"):
        data.import_dataset(tmp_path / "broken", "x", tmp_path / "tfds")

    image_folder(tmp_path / "truncated", counts=(2, 2))
    png = tmp_path / "truncated" / "dog" / "img01.png"
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cannot read image .*img01.png"):
        data.import_dataset(tmp_path / "truncated", "x", tmp_path / "tfds")

    assert not (tmp_path / "tfds" / "x").exists()
    with pytest.raises(ValueError, match="lower snake case"):
        data.import_dataset(tmp_path / "empty", "My-Set", tmp_path / "tfds")
    with pytest.raises(ValueError, match="taken by a built-in data set"):
        data.import_dataset(tmp_path / "empty", "cifar10", tmp_path / "tfds")
    with pytest.raises(ValueError, match="already exists"):
        data.import_dataset(tmp_path / "mixed", "converted", tmp_path / "tfds", mode="L")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.import_dataset(tmp_path / "nope", "x", tmp_path / "tfds")


def test_npz_with_and_without_a_test_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)
    labels = np.arange(20) % 4
    np.savez(tmp_path / "a.npz", images=images, labels=labels, class_names=list("abcd"))
    result = data.import_dataset(tmp_path / "a.npz", "npz_a", tmp_path / "tfds", test_fraction=0.25)
    assert result.class_names == list("abcd") and result.split_sizes == {"train": 16, "test": 4}
    train_idx, test_idx = importer.split_indices(labels, 0.25, 0)
    x, y = data.load_numpy("npz_a", "test", tmp_path / "tfds")
    np.testing.assert_array_equal(x[..., 0], images[test_idx])
    np.testing.assert_array_equal(y, labels[test_idx])

    test_images = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    np.savez(
        tmp_path / "b.npz",
        images=rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
        labels=np.array([0, 1, 2, 0, 1, 2]),
        test_images=test_images,
        test_labels=np.array([2, 1, 0]),
    )
    result = data.import_dataset(tmp_path / "b.npz", "npz_b", tmp_path / "tfds")
    assert result.split_sizes == {"train": 6, "test": 3} and result.class_names == ["0", "1", "2"]
    x, y = data.load_numpy("npz_b", "test", tmp_path / "tfds")
    np.testing.assert_array_equal(x, test_images)
    np.testing.assert_array_equal(y, [2, 1, 0])


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.zeros((4, 3, 3), np.uint8)}, "must hold arrays 'images' and 'labels'"),
        ({"images": np.zeros((4, 3, 3), np.float32), "labels": np.arange(4)}, "must be uint8"),
        ({"images": np.zeros((4, 3, 3, 2), np.uint8), "labels": np.arange(4)}, "1 or 3"),
        ({"images": np.zeros((4, 3, 3), np.uint8), "labels": np.arange(3)}, "4 integers"),
        ({"images": np.zeros((4, 3, 3), np.uint8), "labels": np.array([0, 0, 2, 2])}, r"\[1\]"),
        ({"images": np.zeros((4, 3, 3), np.uint8), "labels": -np.arange(4)}, "negative label"),
    ],
    ids=["keys", "dtype", "channels", "count", "empty_class", "negative"],
)
def test_bad_npz_is_a_clear_error(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        data.import_dataset(tmp_path / "bad.npz", "bad", tmp_path / "tfds", test_fraction=0.5)
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read .*x.npz"):
        data.import_dataset(tmp_path / "x.npz", "bad", tmp_path / "tfds")


def test_idx_directory_is_imported_like_mnist(tmp_path):
    arrays = small_fashion_dir(tmp_path / "src", n_train=20, n_test=10, gz=False)
    result = data.import_dataset(tmp_path / "src", "my_mnist", tmp_path / "tfds")
    assert result.format == "idx" and result.split_sizes == {"train": 20, "test": 10}
    x, y = data.load_numpy("my_mnist", "train", tmp_path / "tfds")
    np.testing.assert_array_equal(x[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(y, arrays["train"][1])
    os.remove(tmp_path / "src" / "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match="has no labels file"):
        data.import_dataset(tmp_path / "src", "other", tmp_path / "tfds")


def _command(command, *args, cwd, env=None):
    """``command`` (``mvcl-import``, ...) as its console script runs, in ``cwd``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    env.pop("TFDS_DATA_DIR", None)  # the default data directory: ./data of the working directory
    return subprocess.run(
        [sys.executable, "-c", console_script(command), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
        timeout=600,
    )


@pytest.mark.slow  # two fresh interpreters
def test_import_command_writes_a_data_set_quietly_and_reports_errors(tmp_path):
    image_folder(tmp_path / "src", counts=(2, 2))
    source = f"--source={tmp_path / 'src'}"
    ok = _command("mvcl-import", source, "--name=cli_set", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("Wrote 'cli_set' (folder) to ./data: train 2, test 2 images")
    assert lines[1:] == ["Train on it: mvcl-pretrain --config=own_data:name=cli_set"]
    assert ok.stderr == ""  # no tfds "Failed to load dataset ...", no progress bars
    assert len(data.load_split("cli_set", "train", tmp_path / "data")) == 2
    bad = _command("mvcl-import", source, "--name=Bad Name", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("mvcl-import: error: ") and "lower snake case" in bad.stderr


@pytest.mark.slow  # fresh interpreters, a whole (short) run
def test_own_data_config_trains_on_30_imported_images_and_names_the_run_after_them(tmp_path):
    image_folder(tmp_path / "src", counts=(10, 10, 10), size=(12, 10))
    imported = _command(
        "mvcl-import", f"--source={tmp_path / 'src'}", "--name=my_photos", cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert "train 24, test 6 images" in imported.stdout
    run = _command(
        "mvcl-pretrain",
        "--config=own_data:name=my_photos,epochs=3,width=0.125",
        "--config.progress_bar=False",
        "--summary=summary.json",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    workdir = tmp_path / "workdirs" / "my_photos_mv_dhel_v2"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["config"]["batch_size"] == 16 and summary["config"]["dataset"]["image_size"] == 32
    )
    assert summary["step"] == 3 and (workdir / "checkpoints").is_dir()
    assert "Evaluation at step 3:" in run.stdout


def test_own_data_config_fits_a_small_set_and_follows_the_data_set_name():
    from mvcl import configs

    config = configs.load("own_data:name=my_photos")
    assert config.name == "my_photos_mv_dhel_v2" and config.dataset.name == "my_photos"
    assert config.batch_size <= 24  # 30 images less mvcl-import's 20 % hold-out
    assert config.dataset.image_size == config.augment.crop_size == 32
    config = configs.load("own_data:views=4,loss=mv_infonce")
    config.dataset.name = "flowers"  # as --config.dataset.name=flowers does
    assert config.name == "flowers_mv_infonce_v4"
    assert configs.load("own_data:name=x,batch=64,size=64").batch_size == 64


def test_an_unnamed_data_set_fails_with_a_message_saying_how_to_name_it():
    from mvcl import configs
    from mvcl.train import ConfigError
    from mvcl.train.inputs import open_sources

    with pytest.raises(ConfigError, match="config.dataset.name: empty.*own_data:name="):
        open_sources(configs.load("own_data"))


def test_gzip_helper_is_real_gzip(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    idx.write_idx(path, np.arange(4, dtype=np.uint8))
    with gzip.open(path) as f:
        assert f.read() == idx.encode_idx(np.arange(4, dtype=np.uint8))
