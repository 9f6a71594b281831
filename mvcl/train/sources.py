"""The data of a run: its training source, opened (or faked) and checked before the first step.

`open_sources` opens the training split (and checks that the evaluation split opens when
evaluation is on), or makes `fake_source`'s random images; a split that cannot be read fails as
``config.dataset.name``. `global_batch` assembles the processes' rows into one global array.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from ml_collections import config_dict

from mvcl import data
from mvcl.train.config_checks import require
from mvcl.train.errors import ConfigError


def fake_source(config: config_dict.ConfigDict) -> list[dict[str, Any]]:
    """``config.dataset.fake_num_examples`` random uint8 images of ``fake_shape`` (seeded)."""
    rng = np.random.default_rng(config.seed)
    shape = (config.dataset.fake_num_examples, *config.dataset.fake_shape)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    return [{"image": image, "label": i % 10} for i, image in enumerate(images)]


def open_split(config: config_dict.ConfigDict, field: str) -> data.input_pipeline.Source:
    """The split ``config.dataset.<field>``; a ConfigError naming the fields if it cannot open."""
    ds = config.dataset
    if not ds.name:
        raise ConfigError(
            "config.dataset.name: empty; name the data set, e.g. --config=own_data:name=my_photos "
            "for one imported with mvcl-import --name=my_photos"
        )
    try:
        data.fashion_mnist.prepare_from_config(ds)  # from config.dataset.source_dir
        return data.load_split(ds.name, ds[field], ds.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(
            f"config.dataset.name: cannot read split {ds[field]!r} (config.dataset.{field}) of "
            f"{ds.name!r} in {ds.data_dir!r}: {e}"
        ) from e


def open_sources(config: config_dict.ConfigDict) -> data.input_pipeline.Source:
    """The training source; also checks that the evaluation split opens if evaluation is on."""
    if config.dataset.fake:
        source = fake_source(config)
    else:
        source = open_split(config, "train_split")
        if config.eval.enabled:
            open_split(config, "test_split")
    require(
        config.batch_size <= len(source),
        "batch_size",
        f"{config.batch_size} exceeds the {len(source)} training examples; set a smaller one "
        f"(--config.batch_size, or batch= of the own_data config)",
    )
    return source


def global_batch(images: np.ndarray, sharding: NamedSharding, batch_size: int) -> jax.Array:
    """This process's uint8 images as its rows of the global (batch_size, H, W, C) array."""
    return jax.make_array_from_process_local_data(sharding, images, (batch_size, *images.shape[1:]))
