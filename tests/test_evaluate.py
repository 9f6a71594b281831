"""Streaming evaluation: features batch by batch over a mesh, chunked kNN, minibatch probe."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from eval_memory_worker import FakeSplit

from mvcl import evaluation, parallel

REPO = Path(__file__).resolve().parents[1]


class Linear:
    """A stand-in encoder: backbone features = flattened centre view @ W, projections = tanh."""

    def __init__(self, features: int = 5):
        self.features = features

    def apply(self, variables, x, train):
        del train
        h = x.reshape(len(x), -1) @ variables["params"]["w"]
        return h, jnp.tanh(h[:, :3])

    def __hash__(self):
        return hash(self.features)

    def __eq__(self, other):
        return isinstance(other, Linear) and other.features == self.features


def test_streamed_features_equal_the_in_memory_embedding_and_keep_stored_order():
    source = FakeSplit(37, 4)
    ids = np.array([5, 3, 30, 0, 11, 36, 2, 9, 17, 8, 21])
    model = Linear()
    w = np.random.default_rng(0).standard_normal((4 * 4 * 3, 5)).astype(np.float32)
    variables = {"params": {"w": w}}
    bank, labels = evaluation.extract_features(
        model,
        variables,
        source,
        ids,
        mesh=parallel.make_mesh(),
        crop_size=4,
        batch_size=4,  # 11 ids: the last batch is padded
        with_pixels=True,
        dtype="float32",
    )
    images = np.stack([r["image"] for r in source.__getitems__(ids)])
    h, z = evaluation.embed(model, variables, images, crop_size=4, batch_size=11)
    np.testing.assert_allclose(bank["backbone"], h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bank["projector"], z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bank["pixels"], evaluation.pixels(images, crop_size=4), atol=1e-6)
    np.testing.assert_array_equal(labels, ids % 10)

    half, _ = evaluation.extract_features(
        model, variables, source, ids, mesh=parallel.make_mesh(), crop_size=4, batch_size=8
    )
    assert half["backbone"].dtype == np.float16  # the default bank
    np.testing.assert_allclose(half["backbone"], h, rtol=2e-3, atol=2e-3)


def test_features_beyond_float16_raise_instead_of_becoming_inf():
    model = Linear()
    variables = {"params": {"w": np.full((4 * 4 * 3, 5), 1e7, np.float32)}}
    with pytest.raises(ValueError, match="feature_dtype='float32'"):
        evaluation.extract_features(
            model,
            variables,
            FakeSplit(8, 4),
            np.arange(8),
            mesh=parallel.make_mesh(),
            crop_size=4,
            batch_size=8,
        )


def test_train_subset_is_fixed_sorted_and_checked():
    a, b = evaluation.train_subset(1000, 100), evaluation.train_subset(1000, 100)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0) and a[-1] < 1000
    np.testing.assert_array_equal(evaluation.train_subset(7, None), np.arange(7))
    with pytest.raises(ValueError, match="config.eval.train_examples"):
        evaluation.train_subset(10, 11)


def test_chunked_knn_on_a_float16_bank_matches_one_chunk_and_a_numpy_reference():
    rng = np.random.default_rng(2)
    train_x = rng.standard_normal((301, 6)).astype(np.float16)
    test_x = rng.standard_normal((53, 6)).astype(np.float16)
    train_y, test_y = rng.integers(0, 4, 301), rng.integers(0, 4, 53)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit(test_x.astype(np.float64)) @ unit(train_x.astype(np.float64)).T
    top = np.argsort(-sim, axis=1)[:, :9]
    votes = np.zeros((53, 4))
    for i in range(53):
        np.add.at(votes[i], train_y[top[i]], np.exp(sim[i, top[i]] / 0.2))
    expected = np.mean(votes.argmax(1) == test_y)
    kwargs = dict(num_classes=4, k=9, temperature=0.2)
    chunked = evaluation.knn_accuracy(train_x, train_y, test_x, test_y, chunk_size=40, **kwargs)
    whole = evaluation.knn_accuracy(train_x, train_y, test_x, test_y, chunk_size=1000, **kwargs)
    assert chunked == whole == pytest.approx(expected)


def test_minibatch_probe_agrees_with_lbfgs_on_gaussian_classes():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((5, 12)) * 1.5
    y = rng.integers(0, 5, 3000)
    x = (centres[y] + rng.standard_normal((3000, 12)) + 50.0).astype(np.float16)
    split = dict(train_x=x[:2000], train_y=y[:2000], test_x=x[2000:], test_y=y[2000:])
    lbfgs = evaluation.linear_probe_accuracy(**split, num_classes=5, steps=100)
    adam = evaluation.minibatch_probe_accuracy(**split, num_classes=5, epochs=20, batch_size=200)
    assert lbfgs > 0.7  # the classes overlap, so the two probes are compared where it matters
    assert abs(adam - lbfgs) <= 0.01


@pytest.mark.slow
def test_evaluating_200k_images_holds_far_less_host_memory_than_the_images(tmp_path):
    """Streams 200,000 16x16x3 train images (153.6 MB as uint8) and 5,000 test images; the
    process's peak resident memory during the evaluation (host and, on the CPU backend, device
    buffers) grows by less than what the train images alone would take."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, str(REPO / "tests" / "eval_memory_worker.py"), "200000", "5000", "16"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["train_images_bytes"] == 200_000 * 16 * 16 * 3
    # Holding the train split as images would take train_images_bytes on top of the baseline.
    assert 0 < result["peak_growth_bytes"] < result["train_images_bytes"], result
    assert 0.0 <= result["knn"] <= 1.0
