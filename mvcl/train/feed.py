"""The training loop's input: the config's host pipeline, each batch put on the devices ahead.

`train_batches` builds the `mvcl.data.BatchIterator` that ``config.dataset`` and ``config.data``
describe and wraps it in a `mvcl.data.DevicePrefetcher` that turns each host batch into global
``jax.Array`` s sharded over the mesh's batch axis, one step ahead of the loop. Its
``get_state()`` is the position after the batches the loop has taken (what a checkpoint stores).
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

DeviceBatch = jax.Array | dict[str, jax.Array]


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
