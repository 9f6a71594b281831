"""The weighted kNN classifier on frozen features (Wu et al. 2018, InstDisc; SimCLR's kNN monitor).

Cosine similarity of each test feature to every train feature; the k most similar vote for their
label with weight ``exp(similarity / T)``; the class with the largest total wins. `knn_accuracy`
streams the train bank past the test features (sharded over the mesh) in chunks of
``config.eval.knn_chunk_size`` rows, keeping a running top-k.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvcl import parallel
from mvcl.evaluation._sharding import AXIS, _global_array, _host, _round_up


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
