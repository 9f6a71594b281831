"""Tests for mvcl.data: the digits tfds builder, the host iterator and on-device views."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvcl import data
from mvcl.data import augment, digits


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    assert not (path / digits.DIGITS_NAME).exists()
    data.load_split("digits", "test", path)  # Prepares on first use.
    return path


@pytest.fixture(scope="module")
def train_source(data_dir):
    return data.load_split("digits", "train", data_dir)


# --- digits builder -------------------------------------------------------------------------


def test_digits_splits_cover_sklearn_exactly(data_dir):
    from sklearn.datasets import load_digits

    sk = load_digits()
    images = np.round(sk.images * 255 / 16).astype(np.uint8)[..., None]
    labels = sk.target
    np.testing.assert_array_equal(data.digits_arrays()[0], images)
    train_idx, test_idx = data.digits_split_indices("train"), data.digits_split_indices("test")
    assert len(train_idx) == 1437 and len(test_idx) == 360
    assert list(test_idx[:6]) == [4, 5, 6, 9, 14, 17]  # The split is fixed forever.
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1797))

    sizes = {}
    for split, idx in (("train", train_idx), ("test", test_idx)):
        source = data.load_split("mvcl_digits", split, data_dir)
        sizes[split] = len(source)
        for j in (0, 1, 17, len(source) - 1):
            record = source[j]
            assert record["image"].dtype == np.uint8 and record["image"].shape == (8, 8, 1)
            assert record["index"] == idx[j]
            np.testing.assert_array_equal(record["image"], images[idx[j]])
            assert record["label"] == labels[idx[j]]
        x, y = data.load_numpy("digits", split, data_dir)
        assert x.dtype == np.uint8 and x.shape == (len(idx), 8, 8, 1)
        assert y.dtype == np.int32
        np.testing.assert_array_equal(x, images[idx])
        np.testing.assert_array_equal(y, labels[idx])
    assert sizes == {"train": 1437, "test": 360}
    assert images.max() == 255 and images.min() == 0


def test_prepare_digits_is_idempotent(data_dir):
    variant = data_dir / digits.DIGITS_NAME / "1.0.0"
    before = {p.name: p.stat().st_mtime_ns for p in variant.iterdir()}
    assert any(name.startswith("mvcl_digits-train.array_record") for name in before)
    builder = data.prepare_digits(data_dir)
    assert builder.is_prepared()
    assert {p.name: p.stat().st_mtime_ns for p in variant.iterdir()} == before
    assert sorted(os.listdir(data_dir / digits.DIGITS_NAME)) == ["1.0.0"]
    assert len(data.load_split("digits", "test", data_dir)) == 360


def test_missing_dataset_raises_clear_error_without_downloading(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build cifar10 .*--file_format=array_record"):
        data.load_split("cifar10", "train", tmp_path)
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_train.tar"):
        data.load_split("imagenet2012", "validation", tmp_path)
    with pytest.raises(ValueError, match="Unknown tfds data set"):
        data.load_split("no_such_dataset_xyz", "train", tmp_path)
    assert not any(tmp_path.rglob("*.array_record*")) and not any(tmp_path.rglob("*.tar*"))


# --- batch iterator -------------------------------------------------------------------------


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_iterator_is_deterministic_and_epochs_are_permutations(train_source):
    it = data.BatchIterator(train_source, 256, seed=7)
    assert it.steps_per_epoch == 1437 // 256 == 5
    batches = _take(it, 10)
    _assert_same_batches(batches, _take(data.BatchIterator(train_source, 256, seed=7), 10))
    other = next(data.BatchIterator(train_source, 256, seed=8))
    assert not np.array_equal(other["label"], batches[0]["label"])

    b = batches[0]
    assert b["image"].dtype == np.uint8 and b["image"].shape == (256, 8, 8, 1)
    assert b["label"].dtype == np.int32 and b["label"].shape == (256,)
    ids = it.local_indices(0)
    np.testing.assert_array_equal(b["label"], [train_source[int(i)]["label"] for i in ids])

    for epoch in (0, 1):  # Each epoch visits 5 * 256 distinct records; the two orders differ.
        seen = np.concatenate([it.local_indices(epoch * 5 + s) for s in range(5)])
        assert len(np.unique(seen)) == 5 * 256
    assert not np.array_equal(it.local_indices(0), it.local_indices(5))
    assert it.get_state() == {"step": 10} and it.epoch == 2


def test_iterator_restart_from_state_matches_uninterrupted(train_source):
    uninterrupted = _take(data.BatchIterator(train_source, 200, seed=3), 9)  # Crosses epoch 7.
    first = data.BatchIterator(train_source, 200, seed=3)
    head = _take(first, 4)
    state = first.get_state()
    assert state == {"step": 4}
    resumed = data.BatchIterator(train_source, 200, seed=3)
    resumed.set_state(dict(state))
    tail = _take(resumed, 5)
    _assert_same_batches(head + tail, uninterrupted)
    _assert_same_batches(_take(data.BatchIterator(train_source, 200, seed=3, step=4), 5), tail)


@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shards_concatenate_to_global_batch(train_source, process_count):
    global_it = data.BatchIterator(train_source, 96, seed=1)
    locals_ = [
        data.BatchIterator(train_source, 96, seed=1, process_index=p, process_count=process_count)
        for p in range(process_count)
    ]
    for _ in range(16):  # 14 steps per epoch: crosses an epoch boundary.
        want = next(global_it)
        got = [next(it) for it in locals_]
        assert all(g["label"].shape == (96 // process_count,) for g in got)
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key])


class RecordingSource:
    """A list of records that remembers which ids were read (through ``__getitems__``)."""

    def __init__(self, size: int):
        rng = np.random.default_rng(0)
        self.records = [
            {"image": rng.integers(0, 256, (4, 4, 1), np.uint8), "label": i} for i in range(size)
        ]
        self.read: list[int] = []

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.records[i]

    def __getitems__(self, ids):
        return [self[i] for i in ids]


def test_each_process_reads_only_its_share_and_an_epoch_covers_every_record_once():
    # 2 processes, global batch 12: an epoch of 60 records is 5 global steps of 6 rows each.
    size, batch, processes = 60, 12, 2
    reference = data.BatchIterator(RecordingSource(size), batch, seed=5)  # one process
    order = np.concatenate([next(reference)["label"] for _ in range(size // batch)])
    reference.close()
    shards = [RecordingSource(size) for _ in range(processes)]
    iterators = [
        data.BatchIterator(s, batch, seed=5, process_index=p, process_count=processes)
        for p, s in enumerate(shards)
    ]
    steps = [[next(it)["label"] for it in iterators] for _ in range(size // batch)]
    for it in iterators:
        it.close()
    # the global batches, process 0's rows then process 1's, follow one process's epoch order
    np.testing.assert_array_equal(np.concatenate([np.concatenate(s) for s in steps]), order)
    assert sorted(order.tolist()) == list(range(size))  # every record exactly once
    for p, source in enumerate(shards):
        mine = np.concatenate([s[p] for s in steps])
        # each process read exactly its rows (the background thread may read ahead into the
        # next epoch: only the first epoch's reads are counted)
        assert len(mine) == size // processes
        assert source.read[: len(mine)] == mine.tolist()


def test_iterator_rejects_bad_arguments(train_source):
    with pytest.raises(ValueError, match="multiple of process_count"):
        data.BatchIterator(train_source, 97, seed=0, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        data.BatchIterator(train_source, 96, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="exceeds"):
        data.BatchIterator(train_source, 5000, seed=0)


def test_iterator_image_size_resizes_on_host(train_source):
    batch = next(data.BatchIterator(train_source, 8, seed=0, image_size=16))
    assert batch["image"].shape == (8, 16, 16, 1) and batch["image"].dtype == np.uint8
    plain = next(data.BatchIterator(train_source, 8, seed=0))
    # Upsampling by 2 keeps the mean intensity roughly.
    np.testing.assert_allclose(
        batch["image"].mean((1, 2, 3)), plain["image"].mean((1, 2, 3)), atol=8
    )


# --- on-device views ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgb_images():
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    return jnp.asarray(smooth)  # (6, 32, 32, 3), blocky so crops and colour changes are visible.


@pytest.fixture(scope="module")
def gray_images(train_source):
    return jnp.asarray(next(data.BatchIterator(train_source, 6, seed=0))["image"])


def test_make_views_shape_dtype_range_and_determinism(rgb_images):
    key = jax.random.key(0)
    views = data.make_views(key, rgb_images, 3, crop_size=24)
    assert views.shape == (6, 3, 24, 24, 3) and views.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(views)))
    assert float(views.min()) >= -1.0 and float(views.max()) <= 1.0
    assert float(views.max()) - float(views.min()) > 1.0
    np.testing.assert_array_equal(views, data.make_views(key, rgb_images, 3, crop_size=24))
    assert not np.array_equal(
        views, data.make_views(jax.random.key(1), rgb_images, 3, crop_size=24)
    )
    for v, w in ((0, 1), (0, 2), (1, 2)):  # Every image's views differ from each other.
        assert np.all(np.abs(np.asarray(views[:, v] - views[:, w])).mean((1, 2, 3)) > 1e-3)
    # Raw uint32 keys work too.
    raw = data.make_views(jax.random.PRNGKey(0), rgb_images, 2, crop_size=24)
    assert raw.shape == (6, 2, 24, 24, 3)


def test_make_views_under_x64_are_float64_in_every_colour_order(rgb_images):
    """float64 mode (the gradient-caching checks run in it) computes the views in float64, in
    one dtype through every colour op; colour jitter in random order once failed there (its
    branches returned float64 and float32). (Its uniforms are float64 draws, other numbers
    than float32 draws of the same key, so the views themselves differ.)"""
    kwargs = dict(crop_size=12, jitter_strength=1.0, p_blur=0.5, random_order=True)
    expected = data.make_views(jax.random.key(5), rgb_images, 3, **kwargs)
    with jax.enable_x64(True):
        got = data.make_views(jax.random.key(5), rgb_images, 3, **kwargs)
        again = data.make_views(jax.random.key(5), rgb_images, 3, **kwargs)
    assert expected.dtype == jnp.float32 and got.dtype == jnp.float64
    assert got.shape == expected.shape and np.abs(np.asarray(got)).max() <= 1.0
    np.testing.assert_array_equal(got, again)


def test_make_views_grayscale_images(gray_images):
    views = data.make_views(jax.random.key(3), gray_images, 2, crop_size=8)
    assert views.shape == (6, 2, 8, 8, 1) and bool(jnp.all(jnp.isfinite(views)))
    assert not np.array_equal(views[:, 0], views[:, 1])


def test_make_views_compiles_once_per_shape_and_view_count(rgb_images):
    kwargs = dict(crop_size=16, p_gray=0.3)
    start = data.make_views._cache_size()
    v4 = data.make_views(jax.random.key(0), rgb_images, 4, **kwargs)
    data.make_views(jax.random.key(1), rgb_images[::-1], 4, **kwargs)  # New key and data.
    assert data.make_views._cache_size() == start + 1
    v1 = data.make_views(jax.random.key(0), rgb_images, 1, **kwargs)
    assert data.make_views._cache_size() == start + 2
    assert v4.shape == (6, 4, 16, 16, 3) and v1.shape == (6, 1, 16, 16, 3)


def test_full_crop_without_colour_ops_is_the_centre_view_or_its_mirror(rgb_images, gray_images):
    for images in (rgb_images, gray_images):
        size = images.shape[1]
        centre = np.asarray(data.center_view(images))
        np.testing.assert_allclose(centre, np.asarray(images) / 255.0 * 2 - 1, atol=1e-6)
        exact = data.make_views(
            jax.random.key(0),
            images,
            2,
            crop_size=size,
            min_scale=1.0,
            p_jitter=0.0,
            p_gray=0.0,
            flip=False,
        )
        np.testing.assert_allclose(exact, np.repeat(centre[:, None], 2, 1), atol=1e-5)
        flipped = np.asarray(
            data.make_views(
                jax.random.key(0),
                images,
                8,
                crop_size=size,
                min_scale=1.0,
                p_jitter=0.0,
                p_gray=0.0,
            )
        )
        is_same = np.abs(flipped - centre[:, None]).max((2, 3, 4)) < 1e-5
        is_mirror = np.abs(flipped - centre[:, None, :, ::-1]).max((2, 3, 4)) < 1e-5
        assert np.all(is_same | is_mirror) and is_mirror.any() and is_same.any()


def test_grayscale_jitter_and_blur_are_applied(rgb_images):
    common = dict(crop_size=32, min_scale=1.0, flip=False, p_gray=0.0, p_jitter=0.0)
    centre = np.asarray(data.center_view(rgb_images))[:, None]

    def views(**kwargs):
        out = np.asarray(data.make_views(jax.random.key(0), rgb_images, 2, **{**common, **kwargs}))
        assert np.all(np.isfinite(out))
        return out

    gray = views(p_gray=1.0)
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-6)
    assert np.abs(centre[..., 0] - centre[..., 2]).max() > 0.1
    jittered = views(p_jitter=1.0, jitter_strength=1.0)
    assert np.all(np.abs(jittered - centre).mean((2, 3, 4)) > 1e-2)

    def total_variation(x):
        return np.abs(np.diff(x, axis=2)).sum((2, 3, 4)) + np.abs(np.diff(x, axis=3)).sum((2, 3, 4))

    # Blur never sharpens; with sigma ~ U[0.1, 2] most draws visibly smooth the block edges.
    smoothing = total_variation(centre) - total_variation(views(p_blur=1.0))
    assert np.all(smoothing > -1e-3) and np.mean(smoothing > 1.0) > 0.5


@pytest.mark.parametrize(
    "height, width, min_scale, max_scale",
    [(32, 32, 0.08, 1.0), (32, 32, 0.05, 0.14), (24, 40, 0.2, 0.3)],
)
def test_crop_area_fraction_is_within_min_and_max_scale(height, width, min_scale, max_scale):
    u = jax.random.uniform(jax.random.key(0), (4000, augment._NUM_UNIFORMS))
    y0, x0, h, w = np.asarray(
        jax.vmap(lambda v: augment._random_box(v, height, width, min_scale, max_scale))(u)
    )
    area = h * w / (height * width)
    assert area.min() >= min_scale - 1e-6 and area.max() <= max_scale + 1e-6
    spread = 0.05 * (max_scale - min_scale)  # the draws cover the whole interval
    assert area.min() < min_scale + spread and area.max() > max_scale - spread
    assert y0.min() >= 0 and x0.min() >= 0
    assert np.all(y0 + h <= height + 1e-4) and np.all(x0 + w <= width + 1e-4)


def test_make_views_max_scale_zooms_in_and_defaults_to_full_range():
    # Red grows along x, green along y: a view's red and green ranges measure its crop box.
    ramp = np.arange(32, dtype=np.uint8) * 8
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.uint8(0)), -1)
    images = jnp.asarray(np.repeat(image[None], 4, 0))
    plain = dict(crop_size=16, p_jitter=0.0, p_gray=0.0, flip=False)

    def extents(views):  # box width * height in pixels, from the value ranges in [-1, 1]
        spans = (views.max((2, 3)) - views.min((2, 3)))[..., :2] * 255 / 2 / 8
        return np.prod(spans + 1, axis=-1)  # + 1: samples sit inside the box edges

    key = jax.random.key(0)
    full = np.asarray(data.make_views(key, images, 4, **plain))
    np.testing.assert_array_equal(full, data.make_views(key, images, 4, max_scale=1.0, **plain))
    small = np.asarray(data.make_views(key, images, 4, min_scale=0.05, max_scale=0.14, **plain))
    assert small.shape == full.shape and not np.array_equal(small, full)
    assert extents(small).max() <= 0.14 * 32 * 32 * 1.1
    assert extents(full).max() > 0.5 * 32 * 32


@pytest.mark.parametrize("min_scale, max_scale", [(0.2, 0.1), (0.08, 1.5)])
def test_make_views_rejects_max_scale_outside_min_scale_to_1(rgb_images, min_scale, max_scale):
    with pytest.raises(ValueError, match="max_scale"):
        data.make_views(
            jax.random.key(0), rgb_images, 2, crop_size=8, min_scale=min_scale, max_scale=max_scale
        )


def test_center_view_crop_and_bad_input(rgb_images):
    out = data.center_view(rgb_images, crop_size=16, crop_fraction=0.5)
    assert out.shape == (6, 16, 16, 3)
    # The central half of a 32-pixel image resampled to 16 pixels is that crop exactly.
    np.testing.assert_allclose(out, data.center_view(rgb_images[:, 8:24, 8:24]), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        data.make_views(jax.random.key(0), rgb_images.astype(jnp.float32), 2, crop_size=8)
    with pytest.raises(ValueError, match="shape"):
        data.center_view(rgb_images[0])


# --- grain workers, device prefetch, bad input ----------------------------------------------


@pytest.mark.slow  # starts two worker processes (each imports the stack)
def test_two_workers_give_the_batches_of_the_main_process_and_stop_on_close(train_source):
    import multiprocessing

    main = _take(data.BatchIterator(train_source, 64, seed=5, step=19), 6)  # Crosses epoch 1.
    workers = data.BatchIterator(train_source, 64, seed=5, step=19, num_workers=2)
    _assert_same_batches(_take(workers, 6), main)
    assert workers.get_state() == {"step": 25}
    workers.close()
    assert not multiprocessing.active_children()


class _CountingIterator:
    """A stateful host iterator whose batch at step s is s."""

    def __init__(self):
        self.step = 0

    def __next__(self):
        self.step += 1
        return self.step - 1

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = state["step"]


def test_device_prefetcher_puts_one_batch_ahead_and_saves_the_consumed_position():
    put = []
    host = _CountingIterator()
    batches = data.DevicePrefetcher(host, lambda b: put.append(b) or -b)
    assert batches.get_state() == {"step": 0}
    assert [next(batches) for _ in range(3)] == [0, -1, -2]
    assert put == [0, 1, 2, 3] and host.step == 4  # batch 3 is on its way
    assert batches.get_state() == {"step": 3}  # ... but not consumed: a restore redoes it
    batches.set_state({"step": 1})
    assert next(batches) == -1 and put[-2:] == [1, 2]
    assert data.DevicePrefetcher(_CountingIterator(), int, ahead=0).__next__() == 0


def test_workers_above_the_core_count_warn_once(train_source, monkeypatch):
    from mvcl.data import input_pipeline

    monkeypatch.setattr(input_pipeline, "available_cores", lambda: 2)
    monkeypatch.setattr(input_pipeline, "_warned_cores", False)
    with pytest.warns(UserWarning, match="num_workers=5 exceeds the 2 CPU cores") as record:
        data.BatchIterator(train_source, 8, seed=0, num_workers=5)
        data.BatchIterator(train_source, 8, seed=0, num_workers=5)
    assert len(record) == 1
    assert data.BatchIterator(train_source, 8, seed=0, num_workers=-1).num_workers == 2
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        data.BatchIterator(train_source, 8, seed=0, num_workers=-2)


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
    from mvcl.data import synthetic

    path = tmp_path_factory.mktemp("jpeg")
    settings = synthetic.Settings(num_train=12, num_validation=2, min_side=20, max_side=60)
    synthetic.prepare_synthetic_jpeg(path, dataclasses.replace(settings, corrupt=(6,)))
    return path


@pytest.fixture(scope="module")
def jpeg_source(jpeg_dir):
    return data.load_split("mvcl_synthetic_jpeg", "train", jpeg_dir)


def test_data_set_prepared_only_as_tfrecord_says_to_rebuild(jpeg_dir, tmp_path):
    import shutil

    shutil.copytree(jpeg_dir, tmp_path, dirs_exist_ok=True)
    info = tmp_path / "mvcl_synthetic_jpeg" / "1.0.0" / "dataset_info.json"
    text = info.read_text()
    assert '"fileFormat": "array_record"' in text
    info.write_text(text.replace('"fileFormat": "array_record"', '"fileFormat": "tfrecord"'))
    with pytest.raises(ValueError, match="no ArrayRecord files.*--file_format=array_record"):
        data.load_split("mvcl_synthetic_jpeg", "train", tmp_path)


def test_corrupt_record_is_named_with_its_split(jpeg_source):
    it = data.BatchIterator(jpeg_source, 12, seed=0, whole_image_size=32)
    message = r"record 6 of split 'train' of 'mvcl_synthetic_jpeg'.*'train\[:6\]\+train\[7:\]'"
    with pytest.raises(ValueError, match=message):
        next(it)
    it.close()
    probe = data.BatchIterator(jpeg_source, 3, seed=0)
    step = next(s for s in range(4) if 6 not in probe.local_indices(s))
    good = data.BatchIterator(jpeg_source, 3, seed=0, whole_image_size=32, step=step)
    batch = next(good)  # Steps whose records are readable still work.
    assert batch["image"].shape == (3, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["valid"].shape == (3, 2) and batch["valid"].max() == 32
    good.close()


def test_images_of_different_sizes_need_a_resize(jpeg_source):
    it = data.BatchIterator(jpeg_source, 3, seed=0)
    with pytest.raises(ValueError, match="differ in shape.*whole_image_size"):
        next(it)
    it.close()


# --- views over the whole image (torchvision's RandomResizedCrop) ---------------------------


def test_fit_whole_keeps_the_aspect_ratio_and_pads_with_the_edge():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)
    padded, (h, w) = data.fit_whole(image, 40)
    assert padded.shape == (40, 40, 3) and (h, w) == (15, 40)
    np.testing.assert_array_equal(padded[15:], np.broadcast_to(padded[14], (25, 40, 3)))
    tall, (h, w) = data.fit_whole(image.transpose(1, 0, 2), 160)  # upsampling works too
    assert tall.shape == (160, 160, 3) and (h, w) == (160, 60)
    np.testing.assert_array_equal(tall[:, 60:], np.broadcast_to(tall[:, 59:60], (160, 100, 3)))
    same, hw = data.fit_whole(image[:40, :40], 40)
    assert hw == (30, 40) and np.array_equal(same[:30], image[:30, :40])


def _torchvision_boxes(rng, height, width, n, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(area fraction, aspect w/h) of n boxes of torchvision's RandomResizedCrop.get_params."""
    area = height * width
    log_ratio = np.log(ratio)
    out = np.empty((n, 2))
    for k in range(n):
        for _ in range(10):
            target_area = area * rng.uniform(*scale)
            aspect = np.exp(rng.uniform(*log_ratio))
            w = int(round(np.sqrt(target_area * aspect)))
            h = int(round(np.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                break
        else:  # Fallback to a central crop.
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
        out[k] = (h * w / area, w / h)
    return out


@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (256, 256), (180, 640)])
def test_crop_boxes_over_the_whole_image_follow_torchvision(shape):
    from scipy import stats

    n, size = 20000, 320
    height, width = shape
    image = np.zeros((height, width, 3), np.uint8)
    _, (vh, vw) = data.fit_whole(image, size)
    boxes = np.asarray(
        data.crop_boxes(jax.random.key(sum(shape)), jnp.asarray([[vh, vw]]).repeat(n // 4, 0), 4)
    ).reshape(-1, 4)
    y0, x0, h, w = boxes.T
    assert np.all(y0 >= 0) and np.all(y0 + h <= vh + 1e-3)  # inside the image, not the padding
    assert np.all(x0 >= 0) and np.all(x0 + w <= vw + 1e-3)
    # Relative to the original image: the host's resize scales each axis by vh / H and vw / W.
    ours = np.stack([h * w / (vh * vw), (w / vw * width) / (h / vh * height)], axis=1)
    ref = _torchvision_boxes(np.random.default_rng(sum(shape)), height, width, n)
    area_bins = np.linspace(0, 1, 11)
    aspect_bins = np.exp(np.linspace(np.log(3 / 4), np.log(4 / 3), 11))
    aspect_bins[0], aspect_bins[-1] = 0, np.inf  # torchvision's rounding can step past them
    for column, bins in ((0, area_bins), (1, aspect_bins)):
        counts = [np.histogram(x[:, column], bins)[0] for x in (ours, ref)]
        assert sum(counts[0]) == sum(counts[1]) == n  # nothing falls outside the bins
        table = np.asarray(counts)
        table = table[:, table.sum(0) > 0]
        p_value = stats.chi2_contingency(table)[1]
        assert p_value > 1e-3, (shape, column, table)
    if shape == (180, 640):  # so elongated that torchvision often falls back to a centre crop
        fallback = np.isclose(ref[:, 1], 4 / 3, atol=0.01) & np.isclose(
            ref[:, 0], 180 * 240 / (180 * 640), atol=0.01
        )
        assert fallback.mean() > 0.01


def test_make_views_with_the_full_extent_as_valid_equals_without(rgb_images):
    key = jax.random.key(4)
    valid = jnp.full((6, 2), 32, jnp.int32)
    with_valid = data.make_views(key, rgb_images, 2, crop_size=16, valid=valid)
    np.testing.assert_allclose(
        with_valid, data.make_views(key, rgb_images, 2, crop_size=16), atol=1e-5
    )
    with pytest.raises(ValueError, match="valid must have shape"):
        data.make_views(key, rgb_images, 2, crop_size=16, valid=valid[:3])


def test_encoded_images_decoded_here_equal_tfds_decoding(jpeg_source, train_source):
    """`with_encoded_images` (PIL decoding in the pipeline, the faster path) gives the pixels of
    tfds' own decoding, for JPEG (RGB, varying sizes) and PNG (grayscale digits) data sets."""
    from mvcl.data import input_pipeline

    good = [i for i in range(len(jpeg_source)) if i != 6]  # record 6 is corrupt
    encoded = input_pipeline.with_encoded_images(jpeg_source)
    assert isinstance(encoded[0]["image"], bytes) and not isinstance(jpeg_source[0]["image"], bytes)
    for layout in ({"image_size": None, "whole_image_size": 40}, {"image_size": 24}):
        ours = input_pipeline.read_records(encoded, good, **layout)
        theirs = input_pipeline.read_records(jpeg_source, good, **layout)
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{layout} {key}")
    digits_encoded = input_pipeline.with_encoded_images(train_source)
    ours = input_pipeline.read_records(digits_encoded, np.arange(50), None)
    theirs = input_pipeline.read_records(train_source, np.arange(50), None)
    assert ours["image"].shape == (50, 8, 8, 1)
    np.testing.assert_array_equal(ours["image"], theirs["image"])
    with pytest.raises(ValueError, match=r"record 6 of split 'train' of 'mvcl_synthetic_jpeg'"):
        input_pipeline.read_records(encoded, [5, 6], None, whole_image_size=40)
    array_source = [{"image": np.zeros((2, 2, 1), np.uint8), "label": 0}]
    assert input_pipeline.with_encoded_images(array_source) is array_source
