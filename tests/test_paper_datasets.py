"""The paper's data sets load end to end: CIFAR-10/100 and ImageNet in their tfds formats.

Each test writes a tiny data set with tfds's own builder of that data set (its features, feature
names, version and split names; random images instead of the real ones) as ArrayRecord in a
temporary data_dir, then runs one training step of the packaged config (a tiny CNN
instead of its ResNet, small images) and the evaluation on it: the path a real prepared data
set takes.
"""

import importlib
import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from mvcl import data, train


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def fake_builder(name: str, sizes: dict[str, int], make_example, *, info=None):
    """tfds's builder ``name`` with ``_split_generators`` replaced by random examples."""
    base = tfds.builder_cls(name)
    attrs = {
        "name": name,
        "_split_generators": lambda self, dl_manager: {
            split: self._generate_examples(split, n) for split, n in sizes.items()
        },
        "_generate_examples": lambda self, split, n: (
            (f"{split}_{i}", make_example(np.random.default_rng([len(split), i]), i))
            for i in range(n)
        ),
    }
    if info is not None:
        attrs["_info"] = info
    return type(f"Fake{base.__name__}", (base,), attrs, skip_registration=True)


def prepare(cls, data_dir: Path) -> None:
    builder = cls(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    assert builder.is_prepared()


def cifar_example(num_classes: int):
    def make(rng, i):
        example = {
            "id": f"train_{i:05d}",
            "image": encoded(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "PNG"),
            "label": i % num_classes,
        }
        if num_classes == 100:
            example["coarse_label"] = i % 20
        return example

    return make


def imagenet_example(num_classes: int):
    def make(rng, i):
        h, w = int(rng.integers(40, 72)), int(rng.integers(40, 72))  # varying sizes, as ImageNet
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        return {
            "image": encoded(image, "JPEG"),
            "label": int(i * 7 % num_classes),
            "file_name": f"n{i:08d}_{i}.JPEG",
        }

    return make


def imagenet100_info(self):
    """ImageNet-2012's features with the 100 classes of ImageNet-100."""
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=100),
                "file_name": tfds.features.Text(),
            }
        ),
        supervised_keys=("image", "label"),
    )


CASES = {
    # config -> (tfds name, split sizes, example maker, _info override, feature keys)
    "cifar10": ("cifar10", {"train": 16, "test": 8}, cifar_example(10), None),
    "cifar100": ("cifar100", {"train": 16, "test": 8}, cifar_example(100), None),
    "imagenet1k": (
        "imagenet2012",
        {"train": 16, "validation": 8, "test": 2},
        imagenet_example(1000),
        None,
    ),
    "imagenet100": (
        "imagenet100",
        {"train": 16, "validation": 8},
        imagenet_example(100),
        imagenet100_info,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("config_name", sorted(CASES))
def test_paper_dataset_trains_a_step_and_evaluates(config_name, tmp_path):
    tfds_name, sizes, make_example, info = CASES[config_name]
    base = "imagenet2012" if tfds_name == "imagenet100" else tfds_name
    cls = fake_builder(base, sizes, make_example, info=info)
    if tfds_name == "imagenet100":
        cls = type("Imagenet100", (cls,), {"name": "imagenet100"}, skip_registration=True)
    prepare(cls, tmp_path / "tfds")

    config = importlib.import_module(f"mvcl.configs.{config_name}").get_config("width=0.0625")
    assert config.dataset.name == tfds_name
    source = data.load_split(tfds_name, config.dataset.train_split, tmp_path / "tfds")
    assert len(source) == sizes["train"]
    record = source[0]
    assert record["image"].dtype == np.uint8 and record["image"].shape[-1] == 3
    if base == "cifar10" or base == "cifar100":
        assert record["image"].shape == (32, 32, 3)
    else:  # ImageNet images keep their sizes; the config resizes them on the host.
        assert record["image"].shape[0] >= 40 and config.dataset.image_size == 224
        config.dataset.image_size = 32  # small images for a fast test
        config.augment.crop_size = 32
        config.augment.p_blur = 0.0

    config.dataset.data_dir = str(tmp_path / "tfds")
    # The data path is under test, not the backbone (every config's own backbone runs a step in
    # test_train.py): a tiny CNN keeps compilation short.
    config.model.name = "small_cnn"
    config.model.kwargs = {"width": 0.125}
    config.model.proj_dim = 16
    config.batch_size = 8
    config.num_steps = 1
    config.progress_bar = False
    config.eval.batch_size = 8
    config.eval.probe_epochs = 2
    config.eval.geometry_examples = 8
    config.eval.knn_k = 3
    result = train.train_and_evaluate(config, tmp_path / "run")
    assert result["step"] == 1 and not result["preempted"]
    evaluation = result["eval"]
    for features in ("backbone", "projector"):
        for measure in ("linear_probe", "knn"):
            assert 0.0 <= evaluation[f"{features}/{measure}"] <= 1.0
        assert np.isfinite(evaluation[f"{features}/effective_rank"])
    x, y = data.load_numpy(
        tfds_name, config.dataset.test_split, config.dataset.data_dir, image_size=32
    )
    assert x.shape == (sizes[config.dataset.test_split], 32, 32, 3)
    assert y.max() < (10 if base == "cifar10" else 100 if tfds_name != "imagenet2012" else 1000)
