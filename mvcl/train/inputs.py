"""The data of a run: its training source, opened and checked, and its batches on the devices.

`open_sources` opens the training split (and checks that the evaluation split opens when
evaluation is on), or makes `fake_source`'s random images; a split that cannot be read fails as
``config.dataset.name`` before the first step.

`train_batches` builds the `mvcl.data.BatchIterator` that ``config.dataset`` and ``config.data``
describe and wraps it in a `mvcl.data.DevicePrefetcher` that turns each host batch into global
``jax.Array`` s sharded over the mesh's batch axis (`put_batch`), one step ahead of the loop. Its
``get_state()`` is the position after the batches the loop has taken (what a checkpoint stores).
`global_batch` assembles the processes' rows of an image batch into one global array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from ml_collections import config_dict

from mvcl import data, parallel
from mvcl.train.config_checks import require
from mvcl.train.errors import ConfigError

DeviceBatch = jax.Array | dict[str, jax.Array]


# --- the source ---------------------------------------------------------------------------------


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


# --- the batches on the devices -----------------------------------------------------------------


def global_batch(images: np.ndarray, sharding: NamedSharding, batch_size: int) -> jax.Array:
    """This process's uint8 images as its rows of the global (batch_size, H, W, C) array."""
    return jax.make_array_from_process_local_data(sharding, images, (batch_size, *images.shape[1:]))


def put_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding, batch_size: int):
    """This process's rows as the global arrays of the train step's input.

    Returns the uint8 images (batch_size, H, W, C), or ``{"image": ..., "valid": int32
    (batch_size, 2)}`` if the host sent the whole-image layout. The copies are asynchronous.
    """

    def put(x: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(sharding, x, (batch_size, *x.shape[1:]))

    if "valid" not in batch:
        return put(batch["image"])
    return {"image": put(batch["image"]), "valid": put(batch["valid"])}


def train_batches(
    config: config_dict.ConfigDict, source: Any, mesh: jax.sharding.Mesh, axis_name: str
) -> data.DevicePrefetcher[DeviceBatch]:
    """The endless, resumable stream of global batches of ``config`` on ``mesh``.

    Each process reads only its rows of every global batch: grain's ``ShardByJaxProcess`` names
    the shard (``jax.process_index()`` of ``jax.process_count()``), and `mvcl.data.BatchIterator`
    reads shard ``p``'s contiguous rows of each global batch, so the processes together follow
    one process's epoch order. (grain's record-level sharding would give each process a
    contiguous range of the data set with its own shuffle, an order that changes with the
    process count.) Fake data (``config.dataset.fake``) is already in memory and is read in the
    main process.
    """
    whole = config.dataset.get("whole_image_size")
    options = config.get("data", config_dict.ConfigDict({"num_workers": 0, "prefetch": 2}))
    shard = grain.sharding.ShardByJaxProcess()  # this process's share of every global batch
    iterator = data.BatchIterator(
        source,
        config.batch_size,
        seed=config.seed,
        process_index=shard.shard_index,
        process_count=shard.shard_count,
        image_size=None if whole else config.dataset.image_size,
        whole_image_size=whole,
        num_workers=0 if config.dataset.fake else options.num_workers,
        prefetch=options.prefetch,
    )
    sharding = parallel.batch_sharding(mesh, axis_name)
    return data.DevicePrefetcher(
        iterator, lambda batch: put_batch(batch, sharding, config.batch_size)
    )
