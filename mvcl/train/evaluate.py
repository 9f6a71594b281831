"""Evaluation of a pretrained encoder: linear probe, weighted kNN and embedding geometry.

Everything here reads a frozen encoder (BatchNorm running statistics, ``train=False``). `evaluate`
streams: no split is ever held as images.

* **features** (`extract_features`): the split is read batch by batch (``config.eval.batch_size``
  images; every process reads only the rows of its own devices, and the next batch is read while
  the devices run the current one); the centre views go through the encoder with the batch
  sharded over a mesh of every device of every process, and the backbone features (M, F) and
  projections (M, D) are kept on the host as float16 (``config.eval.feature_dtype``): a feature
  bank of M·(F + D)·2 bytes instead of the images' M·H·W·C. Every process ends with the whole
  bank. The train split can be cut to a fixed random subset of ``config.eval.train_examples``
  images (None: all), the same subset for every evaluation.
* **linear probe** (`minibatch_probe_accuracy`): multinomial logistic regression on the features
  standardised with the train mean and standard deviation, minimising mean cross-entropy +
  ``½ λ ||W||²`` (the bias is not penalised) by minibatch Adam (optax) with a cosine-decayed
  learning rate (``config.eval.probe_epochs``, ``probe_batch_size``, ``probe_lr``,
  ``probe_weight_decay``); minibatches are sharded over the mesh. `linear_probe_accuracy` fits the
  same objective by full-batch L-BFGS: a reference for small feature sets (the two are compared
  in ``experiments/results/probe_comparison.json``).
* **weighted kNN** (Wu et al. 2018, InstDisc; the SimCLR kNN monitor): cosine similarity of each
  test feature to every train feature; the k most similar vote for their label with weight
  ``exp(similarity / T)``; the class with the largest total wins. `knn_accuracy` streams the
  train bank past the test features (sharded over the mesh) in chunks of
  ``config.eval.knn_chunk_size`` rows, keeping a running top-k.
* **raw-pixel baseline**: the same probe and kNN on the flattened centre views, stored like the
  features (float16, S·S·C values per image: twice the bytes of the uint8 images, so only for
  small images; the ImageNet configs turn it off).
* **geometry** (``mvcl.metrics.all_metrics``) of backbone features and projections of V random
  views (the training augmentation; with multi-crop, the V large crops) of the first
  ``config.eval.geometry_examples`` test images, a bounded subset (the pairwise metrics hold
  (M, M) matrices): alignment, uniformity, effective rank, covariance rank, Wasserstein
  uniformity. The views are made from the whole subset at once and the encoder runs on them
  sharded over the mesh (`view_embeddings`), so they are the same on any number of devices.

The jitted encoder passes take the variables as arguments and are compiled once per model,
mesh and shape, so repeated evaluations (`mvcl.train.online_eval`, every few training steps)
do not compile again.

`evaluate` does all of it from a config and the encoder's variables; `format_report` prints it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict

from mvcl import data, metrics, parallel
from mvcl.data import input_pipeline

FEATURE_SETS = ("backbone", "projector", "pixels")
FEATURE_DTYPES = ("float16", "float32")
_GEOMETRY_SEED = 1234  # views for the geometry metrics: fixed, so evaluations are comparable
_SUBSET_SEED = 0  # the fixed subset of config.eval.train_examples train images
_PROBE_SEED = 0  # minibatch order of the linear probe
AXIS = parallel.DEFAULT_AXIS

Source = Sequence[Mapping[str, Any]]


# --- sharding helpers ---------------------------------------------------------------------------


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _global_array(mesh: jax.sharding.Mesh, host: np.ndarray, spec: P) -> jax.Array:
    """A global array of ``host`` (the same on every process) laid out as ``spec`` on ``mesh``."""
    return jax.make_array_from_callback(
        host.shape, NamedSharding(mesh, spec), lambda index: host[index]
    )


def _local_rows(sharding: NamedSharding, rows: int) -> tuple[int, int]:
    """The range [lo, hi) of axis-0 rows of a (rows, ...) array this process's devices hold."""
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map((rows,)).values():
        start, stop, _ = index[0].indices(rows)
        starts.append(start)
        stops.append(stop)
    lo, hi = min(starts), max(stops)
    if sum(b - a for a, b in set(zip(starts, stops))) != hi - lo:
        raise ValueError("this process's devices do not hold a contiguous block of the batch")
    return lo, hi


def _host(x: jax.Array) -> np.ndarray:
    """A replicated (fully addressable) array as numpy."""
    return np.asarray(x.addressable_data(0))


# --- features -----------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model", "crop_size"))
def _forward(model: nn.Module, variables, images, *, crop_size: int):
    return model.apply(variables, data.center_view(images, crop_size=crop_size), train=False)


def embed(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    crop_size: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features (M, F) and projections (M, D) of the centre views of uint8 images.

    For image arrays already in memory, on the default device; `extract_features` streams a
    split over a mesh. The last chunk is padded to ``batch_size`` so one compilation serves all.
    """
    features, projections = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.concatenate([chunk, np.zeros_like(images[: batch_size - len(chunk)])])
        h, z = jax.device_get(_forward(model, variables, padded, crop_size=crop_size))
        features.append(h[: len(chunk)])
        projections.append(z[: len(chunk)])
    return np.concatenate(features), np.concatenate(projections)


def pixels(images: np.ndarray, *, crop_size: int) -> np.ndarray:
    """Flattened centre views in [-1, 1], (M, S·S·C): the raw-pixel baseline's features."""
    views = data.center_view(jnp.asarray(images), crop_size=crop_size)
    return np.asarray(views).reshape(len(images), -1)


@functools.lru_cache(maxsize=8)
def _sharded_forward(model: nn.Module, mesh: jax.sharding.Mesh, crop_size: int, with_pixels: bool):
    """The jitted ``(variables, images) -> {"backbone", "projector"[, "pixels"]}`` of the centre
    views, replicated on ``mesh``: one compilation per (model, mesh, crop, batch shape), shared
    by every call of `extract_features` (repeated evaluations, e.g. `mvcl.train.online_eval`)."""

    def forward(variables, images):
        h, z = model.apply(variables, data.center_view(images, crop_size=crop_size), train=False)
        out = {"backbone": h, "projector": z}
        if with_pixels:
            out["pixels"] = data.center_view(images, crop_size=crop_size).reshape(len(images), -1)
        return out

    return jax.jit(forward, out_shardings=NamedSharding(mesh, P()))


def _to_bank_dtype(x: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``x`` cast for the host bank; a ValueError instead of inf where float16 overflows."""
    with np.errstate(over="ignore"):  # reported below
        out = x.astype(dtype)
    if not np.all(np.isfinite(out)):
        what = "non-finite values" if not np.all(np.isfinite(x)) else f"values beyond {dtype}"
        with warnings.catch_warnings():  # all NaN: the largest magnitude is NaN, say no more
            warnings.simplefilter("ignore", RuntimeWarning)
            largest = np.nanmax(np.abs(x))
        raise ValueError(
            f"the {name} features hold {what} (largest magnitude {largest:.3g}); "
            f"set config.eval.feature_dtype='float32' or check the checkpoint"
        )
    return out


def extract_features(
    model: nn.Module,
    variables: Mapping[str, Any],
    source: Source,
    indices: np.ndarray,
    *,
    mesh: jax.sharding.Mesh,
    crop_size: int,
    batch_size: int,
    image_size: int | None = None,
    with_pixels: bool = False,
    dtype: str = "float16",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of the records ``indices`` of ``source``, streamed batch by batch over ``mesh``.

    Each global batch of ``batch_size`` records (the last one padded; rounded up to a multiple
    of the mesh size) is read by the processes, each only the rows of its own devices, and the
    encoder runs with the batch sharded over the mesh's axis; the next batch is read on a host
    thread while the devices work. Only the features stay on the host.

    Args:
      model, variables: the encoder (``train=False``) and its ``{"params", "batch_stats"}``.
      source: random-access records (``"image"`` uint8 (H, W, C), ``"label"``), as
        `mvcl.data.load_split` returns.
      indices: the records to embed, in output order.
      mesh: a 1-D mesh over ``parallel.DEFAULT_AXIS``.
      crop_size: side of the centre view.
      batch_size: images per global batch.
      image_size: host-side resize + centre crop of records of varying size (as in training).
      with_pixels: also keep the flattened centre views (the raw-pixel baseline).
      dtype: "float16" or "float32", the dtype of the host bank.

    Returns:
      ``({"backbone": (M, F), "projector": (M, D)[, "pixels": (M, S·S·C)]}, labels int32 (M,))``
      on every process.
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(
            f"config.eval.feature_dtype must be one of {FEATURE_DTYPES}, got {dtype!r}"
        )
    if batch_size < 1:
        raise ValueError(f"config.eval.batch_size must be >= 1, got {batch_size}")
    indices = np.asarray(indices, np.int64)
    source = input_pipeline.with_encoded_images(source)
    batch_size = _round_up(min(batch_size, max(len(indices), 1)), mesh.size)
    sharding = NamedSharding(mesh, P(AXIS))
    lo, hi = _local_rows(sharding, batch_size)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))  # no copy if already there
    run = functools.partial(_sharded_forward(model, mesh, crop_size, with_pixels), variables)

    def read(start: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's rows [lo, hi) of the global batch at ``start``, zero-padded."""
        rows = indices[start + lo : min(start + hi, len(indices))]
        if not len(rows):  # the padded tail of the last batch is all this process's
            rows, keep = indices[:1], 0
        else:
            keep = len(rows)
        batch = input_pipeline.read_records(source, rows, image_size)
        images = batch["image"][:keep]
        pad = hi - lo - keep
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)])
        return images, batch["label"][:keep]

    starts = list(range(0, len(indices), batch_size))
    if not starts:
        raise ValueError("no examples to embed (empty split or subset)")
    bank: dict[str, np.ndarray] = {}
    labels = np.zeros(len(indices), np.int32)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read, starts[0])
        for i, start in enumerate(starts):
            images, _ = local = pending.result()
            if i + 1 < len(starts):
                pending = reader.submit(read, starts[i + 1])
            global_images = jax.make_array_from_process_local_data(
                sharding, images, (batch_size, *images.shape[1:])
            )
            out = run(global_images)
            count = min(batch_size, len(indices) - start)
            labels[start + lo : min(start + hi, len(indices))] = local[1]
            for name, value in out.items():
                value = _host(value)[:count]
                if name not in bank:
                    bank[name] = np.zeros((len(indices), value.shape[1]), dtype)
                bank[name][start : start + count] = _to_bank_dtype(value, np.dtype(dtype), name)
    if jax.process_count() > 1:  # every process read only its rows' labels
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

        labels = np.asarray(multihost_utils.process_allgather(labels)).max(axis=0)
    return bank, labels


# --- linear probe -------------------------------------------------------------------------------


def _standardizer(train_x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (+ 1e-6) of the rows of ``train_x``, float64, chunk by chunk."""
    total = np.zeros(train_x.shape[1])
    squares = np.zeros(train_x.shape[1])
    for start in range(0, len(train_x), chunk):
        x = train_x[start : start + chunk].astype(np.float64)
        total += x.sum(0)
        squares += (x * x).sum(0)
    mean = total / len(train_x)
    var = np.maximum(squares / len(train_x) - mean * mean, 0.0)
    return mean, np.sqrt(var) + 1e-6


def _objective(params, x, y, weight_decay):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * weight_decay * jnp.sum(params["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_logistic(x, y, *, num_classes: int, weight_decay: float, steps: int):
    """Weights (F, C) and bias (C,) minimising mean cross-entropy + ½ λ ||W||² by L-BFGS."""
    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    objective = functools.partial(_objective, x=x, y=y, weight_decay=weight_decay)
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=objective)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), length=steps)
    return params


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    weight_decay: float = 1e-4,
    steps: int = 300,
) -> float:
    """Test accuracy of the L2-regularised logistic regression fitted by full-batch L-BFGS.

    The whole standardised train set is on one device: for small feature sets (the reference
    of `minibatch_probe_accuracy`).

    Args:
      train_x, test_x: (M, F) features; standardised with the train mean and std.
      train_y, test_y: (M,) integer labels in [0, num_classes).
      num_classes: number of classes C.
      weight_decay: λ of the penalty ``½ λ ||W||²`` (the bias is not penalised).
      steps: L-BFGS iterations (each with a zoom line search).
    """
    mean, std = _standardizer(train_x)
    params = _fit_logistic(
        jnp.asarray((train_x - mean) / std, jnp.float32),
        jnp.asarray(train_y),
        num_classes=num_classes,
        weight_decay=weight_decay,
        steps=steps,
    )
    logits = jnp.asarray((test_x - mean) / std, jnp.float32) @ params["w"] + params["b"]
    return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == test_y))


def minibatch_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    weight_decay: float = 1e-4,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 0.01,
    mesh: jax.sharding.Mesh | None = None,
    seed: int = _PROBE_SEED,
) -> float:
    """Test accuracy of the L2-regularised logistic regression fitted by minibatch Adam.

    The objective is that of `linear_probe_accuracy` (mean cross-entropy + ``½ λ ||W||²`` on
    features standardised with the train mean and std); Adam's learning rate decays from
    ``learning_rate`` to 0 by a cosine over ``epochs`` epochs of ``len(train_x) // batch_size``
    steps (epoch e visits the rows in the order ``default_rng([seed, e]).permutation``; the
    remainder is dropped). Features stay on the host (any float dtype); each minibatch is
    standardised on the device, sharded over ``mesh`` (default: every device).

    Args:
      train_x, test_x: (M, F) features; train_y, test_y: (M,) labels in [0, num_classes).
      num_classes: number of classes C.
      weight_decay: λ of ``½ λ ||W||²`` (the bias is not penalised).
      epochs, batch_size, learning_rate: the optimisation (``batch_size`` is rounded down to a
        multiple of the mesh size and capped at ``len(train_x)``).
      mesh: a 1-D mesh over ``parallel.DEFAULT_AXIS``.
      seed: the minibatch order.
    """
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError(
            "config.eval.probe_epochs and probe_batch_size must be >= 1 and probe_lr > 0, got "
            f"{epochs}, {batch_size} and {learning_rate}"
        )
    mesh = parallel.make_mesh() if mesh is None else mesh
    m = len(train_x)
    batch_size = min(batch_size, m) // mesh.size * mesh.size
    if batch_size < 1:
        raise ValueError(f"{m} train examples cannot fill a minibatch over {mesh.size} devices")
    steps_per_epoch = m // batch_size
    mean, std = _standardizer(train_x)
    replicated = NamedSharding(mesh, P())
    mean, inv_std = jax.device_put((np.float32(mean), np.float32(1.0 / std)), replicated)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch))
    params = {
        "w": jnp.zeros((train_x.shape[1], num_classes)),
        "b": jnp.zeros((num_classes,)),
    }
    params = jax.device_put(params, replicated)
    opt_state = jax.jit(tx.init, out_shardings=replicated)(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1), out_shardings=replicated)
    def step(params, opt_state, x, y):
        x = (x.astype(jnp.float32) - mean) * inv_std
        grads = jax.grad(_objective)(params, x, y, weight_decay)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @functools.partial(jax.jit, out_shardings=replicated)
    def predict(params, x):
        x = (x.astype(jnp.float32) - mean) * inv_std
        return jnp.argmax(x @ params["w"] + params["b"], axis=-1)

    rows = P(AXIS)
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(m)
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * batch_size : (b + 1) * batch_size])  # sorted: faster gather
            x = _global_array(mesh, np.ascontiguousarray(train_x[idx]), rows)
            y = _global_array(mesh, np.asarray(train_y[idx], np.int32), rows)
            params, opt_state = step(params, opt_state, x, y)

    correct = 0
    chunk = _round_up(max(batch_size, 1024), mesh.size)
    for start in range(0, len(test_x), chunk):
        x = test_x[start : start + chunk]
        count = len(x)
        x = np.concatenate([x, np.zeros((chunk - count, x.shape[1]), x.dtype)])
        predicted = _host(predict(params, _global_array(mesh, x, rows)))[:count]
        correct += int(np.sum(predicted == test_y[start : start + count]))
    return correct / len(test_x)


# --- weighted kNN -------------------------------------------------------------------------------


def _unit(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k",), donate_argnums=(0, 1))
def _knn_merge(top_sim, top_label, queries, keys, key_labels, key_valid, *, k: int):
    """The running top-k (similarity, label) of each query row, updated with one key chunk."""
    similarity = _unit(queries) @ _unit(keys).T
    similarity = jnp.where(key_valid[None, :], similarity, -jnp.inf)
    chunk_sim, chunk_idx = jax.lax.top_k(similarity, k)
    sims = jnp.concatenate([top_sim, chunk_sim], axis=1)
    labels = jnp.concatenate([top_label, key_labels[chunk_idx]], axis=1)
    top_sim, pick = jax.lax.top_k(sims, k)
    return top_sim, jnp.take_along_axis(labels, pick, axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _knn_vote(top_sim, top_label, *, num_classes: int, temperature: float):
    weights = jnp.where(jnp.isfinite(top_sim), jnp.exp(top_sim / temperature), 0.0)
    votes = jax.nn.one_hot(top_label, num_classes) * weights[..., None]
    return jnp.argmax(votes.sum(axis=1), axis=-1)


@functools.lru_cache(maxsize=8)
def _knn_voter(mesh: jax.sharding.Mesh, num_classes: int):
    """`_knn_vote` with its predictions replicated on ``mesh``, compiled once per mesh, class
    count and shape (not once per `knn_accuracy` call)."""
    return jax.jit(
        lambda top_sim, top_label, temperature: _knn_vote(
            top_sim, top_label, num_classes=num_classes, temperature=temperature
        ),
        out_shardings=NamedSharding(mesh, P()),
    )


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 8192,
    mesh: jax.sharding.Mesh | None = None,
) -> float:
    """Test accuracy of the weighted kNN classifier (cosine similarity, weights exp(s / T)).

    The test features go to the devices once, sharded over ``mesh`` (default: every device);
    the train features (any float dtype, on the host) follow in chunks of ``chunk_size`` rows,
    each sent once and replicated, and every test row keeps a running top-k of (similarity,
    label). Device memory: the test features, their top-k and one (test rows / devices,
    chunk_size) similarity block.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    k = min(k, len(train_x))
    if k < 1:
        raise ValueError("the kNN classifier needs at least one train example")
    rows, replicated = P(AXIS), P()
    q = _round_up(len(test_x), mesh.size)
    queries = np.zeros((q, test_x.shape[1]), test_x.dtype)
    queries[: len(test_x)] = test_x
    queries = _global_array(mesh, queries, rows)
    top_sim = _global_array(mesh, np.full((q, k), -np.inf, np.float32), rows)
    top_label = _global_array(mesh, np.zeros((q, k), np.int32), rows)
    chunk_size = max(min(chunk_size, len(train_x)), k)
    for start in range(0, len(train_x), chunk_size):
        keys = np.zeros((chunk_size, train_x.shape[1]), train_x.dtype)
        key_labels = np.zeros(chunk_size, np.int32)
        valid = np.zeros(chunk_size, bool)
        count = min(chunk_size, len(train_x) - start)
        keys[:count] = train_x[start : start + count]
        key_labels[:count] = train_y[start : start + count]
        valid[:count] = True
        top_sim, top_label = _knn_merge(
            top_sim,
            top_label,
            queries,
            _global_array(mesh, keys, replicated),
            _global_array(mesh, key_labels, replicated),
            _global_array(mesh, valid, replicated),
            k=k,
        )
    predicted = _knn_voter(mesh, num_classes)(top_sim, top_label, temperature)
    return float(np.mean(_host(predicted)[: len(test_x)] == test_y))


# --- geometry -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _view_forward(model: nn.Module, mesh: jax.sharding.Mesh, num_views: int, augment_items: tuple):
    """The jitted ``(variables, images) -> (h, z)`` of `view_embeddings`, replicated on ``mesh``."""
    augment = dict(augment_items)

    def forward(variables, images):
        # The views are made from the whole (replicated) batch, so they do not depend on the mesh.
        views = data.make_views(jax.random.key(_GEOMETRY_SEED), images, num_views, **augment)
        n = views.shape[0]
        rows = views.reshape(n * num_views, *views.shape[2:])
        pad = _round_up(len(rows), mesh.size) - len(rows)
        rows = jnp.concatenate([rows, jnp.zeros((pad, *rows.shape[1:]), rows.dtype)])
        rows = jax.lax.with_sharding_constraint(rows, NamedSharding(mesh, P(AXIS)))
        h, z = model.apply(variables, rows, train=False)
        return (
            h[: n * num_views].reshape(n, num_views, -1),
            z[: n * num_views].reshape(n, num_views, -1),
        )

    return jax.jit(forward, out_shardings=NamedSharding(mesh, P()))


def view_embeddings(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    num_views: int,
    augment: Mapping[str, Any],
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features (N, V, F) and projections (N, V, D) of ``num_views`` random views of
    each uint8 image, as float32 on the host of every process.

    The views are made with the training augmentation ``augment`` (the keyword arguments of
    `mvcl.data.make_views`) from a fixed key, from the whole batch ``images`` (the same on every
    process), so they are the same on any mesh; the encoder then runs on the N·V views sharded
    over ``mesh`` (default: every device). ``variables`` may already be replicated on ``mesh``
    (a train state's): they are not copied then.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    replicated = NamedSharding(mesh, P())
    variables = jax.device_put(variables, replicated)
    forward = _view_forward(model, mesh, num_views, tuple(sorted(augment.items())))
    h, z = forward(variables, _global_array(mesh, np.asarray(images), P()))
    return _host(h).astype(np.float32), _host(z).astype(np.float32)


@jax.jit
def _all_metrics(h, z):
    return {"backbone": metrics.all_metrics(h), "projector": metrics.all_metrics(z)}


def view_geometry(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    num_views: int,
    augment: Mapping[str, Any],
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, float]:
    """``mvcl.metrics.all_metrics`` of backbone features and projections of random views.

    Every image gets ``num_views`` views made with the training augmentation ``augment`` (the
    keyword arguments of `mvcl.data.make_views`) from a fixed key; the encoder runs sharded over
    ``mesh`` (`view_embeddings`), the metrics on each process's default device. Keys are
    ``"backbone/<metric>"`` and ``"projector/<metric>"``.
    """
    h, z = view_embeddings(
        model, variables, images, num_views=num_views, augment=augment, mesh=mesh
    )
    results = jax.device_get(_all_metrics(h, z))
    return {
        f"{part}/{name}": float(v) for part, values in results.items() for name, v in values.items()
    }


# --- everything ---------------------------------------------------------------------------------


# Defaults of the streaming evaluation's fields, for configs saved before they existed.
EVAL_DEFAULTS = {
    "train_examples": None,
    "feature_dtype": "float16",
    "knn_chunk_size": 8192,
    "probe_epochs": 100,
    "probe_batch_size": 256,
    "probe_lr": 0.01,
    # the online evaluation (mvcl.train.online_eval)
    "every_steps": 0,
    "online_train_examples": 1000,
    "online_test_examples": 500,
    "collapse_check": True,
    "collapse_rank_fraction": 0.02,
    "collapse_std": 0.01,
}


def eval_settings(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """``config.eval`` with `EVAL_DEFAULTS` for the fields it lacks (older saved configs)."""
    settings = config_dict.ConfigDict(EVAL_DEFAULTS)
    settings.update(config.eval.to_dict())
    return settings


def train_subset(size: int, train_examples: int | None, *, seed: int = _SUBSET_SEED) -> np.ndarray:
    """Record ids of the train split the evaluation uses: all, or a fixed random subset.

    ``train_examples`` images drawn without replacement by ``default_rng(seed)`` (default 0: the
    same subset for every evaluation of the split), in increasing order.
    """
    if train_examples is None:
        return np.arange(size)
    if not 1 <= train_examples <= size:
        raise ValueError(
            f"config.eval.train_examples must be None (all) or in [1, {size}] (the size of the "
            f"train split), got {train_examples}"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, train_examples, replace=False))


def evaluate(
    config: config_dict.ConfigDict,
    model: nn.Module,
    variables: Mapping[str, Any],
    *,
    sources: Mapping[str, Source] | None = None,
) -> dict[str, float]:
    """Linear probe, kNN (encoder and raw pixels) and geometry on ``config.dataset``, streamed.

    Args:
      config: a pretraining config (``configs/common.py``): the data set and its splits, the
        augmentation, ``num_views``, ``num_devices`` and ``config.eval``.
      model: the ``ContrastiveModel`` (any ``axis_name``: it runs with ``train=False``).
      variables: ``{"params", "batch_stats"}`` of the model.
      sources: ``{"train": ..., "test": ...}`` random-access records to use instead of opening
        ``config.dataset``'s splits (tests, custom data).

    Returns:
      Flat ``{"<features>/<measure>": value}`` with features in ``backbone``, ``projector``,
      ``pixels`` (if ``config.eval.pixel_baseline``) and measures ``linear_probe`` and ``knn``
      (accuracies in [0, 1]), plus the geometry metrics of `view_geometry`.
    """
    ds, ev = config.dataset, eval_settings(config)
    if sources is None:
        sources = {
            "train": data.load_split(ds.name, ds.train_split, ds.data_dir),
            "test": data.load_split(ds.name, ds.test_split, ds.data_dir),
        }
    mesh = parallel.make_mesh(None if config.num_devices == -1 else config.num_devices)
    extract = functools.partial(
        extract_features,
        model,
        variables,
        mesh=mesh,
        crop_size=config.augment.crop_size,
        batch_size=ev.batch_size,
        image_size=ds.image_size,
        with_pixels=ev.pixel_baseline,
        dtype=ev.feature_dtype,
    )
    train_ids = train_subset(len(sources["train"]), ev.train_examples)
    train_bank, train_y = extract(sources["train"], train_ids)
    test_bank, test_y = extract(sources["test"], np.arange(len(sources["test"])))
    num_classes = int(max(train_y.max(), test_y.max())) + 1

    results = {}
    for name in FEATURE_SETS:
        if name not in train_bank:
            continue
        train_x, test_x = train_bank[name], test_bank[name]
        results[f"{name}/linear_probe"] = minibatch_probe_accuracy(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=num_classes,
            weight_decay=ev.probe_weight_decay,
            epochs=ev.probe_epochs,
            batch_size=ev.probe_batch_size,
            learning_rate=ev.probe_lr,
            mesh=mesh,
        )
        results[f"{name}/knn"] = knn_accuracy(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=num_classes,
            k=ev.knn_k,
            temperature=ev.knn_temperature,
            chunk_size=ev.knn_chunk_size,
            mesh=mesh,
        )
    num_views, augment = data.view_groups(config.num_views, config.augment.to_dict())[0]  # large
    geometry_ids = np.arange(min(ev.geometry_examples, len(sources["test"])))
    geometry_images = input_pipeline.read_records(sources["test"], geometry_ids, ds.image_size)[
        "image"
    ]
    results.update(
        view_geometry(
            model, variables, geometry_images, num_views=num_views, augment=augment, mesh=mesh
        )
    )
    return results


def format_report(results: Mapping[str, float], *, knn_k: int | None = None) -> str:
    """A table of the accuracies (features x probe/kNN) and one of the geometry metrics."""
    knn = "kNN" if knn_k is None else f"kNN (k={knn_k})"
    lines = [f"{'test accuracy':<16}{'linear probe':>14}{knn:>14}"]
    for name in FEATURE_SETS:
        if f"{name}/linear_probe" in results:
            label = "raw pixels" if name == "pixels" else name
            probe, neighbours = results[f"{name}/linear_probe"], results[f"{name}/knn"]
            lines.append(f"{label:<16}{probe:>14.2%}{neighbours:>14.2%}")
    geometry = sorted(
        {k.split("/")[1] for k in results if k.split("/")[1] not in ("linear_probe", "knn")}
    )
    lines += ["", f"{'geometry':<24}{'backbone':>12}{'projector':>12}"]
    for name in geometry:
        lines.append(
            f"{name:<24}{results[f'backbone/{name}']:>12.4g}{results[f'projector/{name}']:>12.4g}"
        )
    return "\n".join(lines)
