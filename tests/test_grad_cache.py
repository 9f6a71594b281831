"""Gradient caching (``config.train.micro_batch``): config checks and equal gradients.

The equal-gradient checks run tests/grad_cache_worker.py in a fresh interpreter on 8 simulated
CPU devices (meshes of 1, 3 and 8 of them): a model without batch statistics must give the
one-pass step's gradients, a BatchNorm model those of a one-pass step whose BatchNorm batches are
the chunks.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from mvcl import losses, parallel  # noqa: E402
from mvcl.configs import digits  # noqa: E402
from mvcl.train import grad_cache  # noqa: E402
from mvcl.train.config_checks import validate_config  # noqa: E402
from mvcl.train.state import build_model, create_train_state, learning_rate_schedule, make_optimizer  # noqa: E402  # noqa: E402
from mvcl.train.step import AXIS, make_train_step  # noqa: E402

TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 1e-2}


def run_worker(mode: str, timeout: float = 1800) -> list[dict]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "grad_cache_worker.py"), mode],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def assert_equal_gradients(rows: list[dict]) -> None:
    bad = [
        r
        for r in rows
        if not max(r["loss_err"], r["grad_err"], r["stats_err"]) <= TOLERANCE[r["precision"]]
        or not r["grad_norm"] > 0
    ]
    assert not bad, f"{len(bad)} of {len(rows)} cached steps differ from their reference: {bad}"


def tiny_config(**train):
    config = digits.get_config("fake=True,width=0.125")
    config.model.proj_dim = 8
    config.batch_size = config.dataset.fake_num_examples = 8
    config.train.update(train)
    return config


# --- config -------------------------------------------------------------------------------------


def test_micro_batch_is_off_by_default_and_a_divisor_passes():
    assert digits.get_config().train.micro_batch is None
    validate_config(tiny_config(micro_batch=2), device_count=2, process_count=1)


@pytest.mark.parametrize(
    "micro_batch, devices, message",
    [
        (3, 1, "3 does not divide the 8 images per device"),
        (4, 4, "4 does not divide the 2 images per device"),
        (0, 1, "got 0 with 8 images per device"),
        (-2, 2, "got -2 with 4 images per device"),
    ],
)
def test_bad_micro_batch_is_a_value_error_naming_both_numbers(micro_batch, devices, message):
    config = tiny_config(micro_batch=micro_batch)
    with pytest.raises(ValueError, match=r"config\.train\.micro_batch: .*" + re.escape(message)):
        validate_config(config, device_count=devices, process_count=1)


# --- gradients ----------------------------------------------------------------------------------


def test_one_chunk_is_the_one_pass_step_and_more_chunks_change_batchnorm_only():
    """micro_batch = all images: the same step; smaller chunks: BatchNorm sees less, so the loss
    moves, but the step still trains (finite, different) in this process's one device."""
    mesh = parallel.make_mesh(1)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), np.uint8))
    results = {}
    for micro_batch in (None, 8, 2):
        config = tiny_config(micro_batch=micro_batch)
        model = build_model(config, axis_name=AXIS)
        tx, schedule = make_optimizer(config, 1), learning_rate_schedule(config, 1)
        state = create_train_state(config, model, tx, mesh, channels=1)
        step = make_train_step(config, model, tx, schedule, mesh)
        results[micro_batch] = jax.device_get(step(state, images))
    (one_state, one), (chunk_state, chunk), (_, small) = results[None], results[8], results[2]
    np.testing.assert_allclose(chunk["loss"], one["loss"], rtol=1e-6)
    np.testing.assert_allclose(chunk["grad_norm"], one["grad_norm"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        (chunk_state.params, chunk_state.batch_stats),
        (one_state.params, one_state.batch_stats),
    )
    assert np.isfinite(small["loss"]) and abs(small["loss"] - one["loss"]) > 1e-4


def test_micro_batch_of_reads_configs_saved_before_the_field():
    config = tiny_config(micro_batch=4)
    assert grad_cache.micro_batch_of(config) == 4
    del config["train"]
    assert grad_cache.micro_batch_of(config) is None


def test_cached_gradients_equal_the_reference_on_1_3_and_8_devices():
    rows = run_worker("quick")
    assert {r["devices"] for r in rows} == {1, 3, 8}
    assert {r["reference"] for r in rows} == {"one_pass", "chunked_bn"}
    assert {r["precision"] for r in rows} == {"float64", "float32", "bfloat16"}
    assert any(r["small"] for r in rows) and {r["backend"] for r in rows} == {"gather", "ring"}
    assert_equal_gradients(rows)


@pytest.mark.slow
def test_every_loss_caches_exactly_on_3_devices_with_each_backend_in_turn():
    rows = run_worker("grid", timeout=3600)
    assert sorted(r["loss"] for r in rows) == sorted(losses.NAMES)  # each loss once
    assert {(r["backend"], r["devices"], r["encoder"]) for r in rows} == {
        ("gather", 3, "tiny"),
        ("ring", 3, "tiny_bn"),
    }
    assert_equal_gradients(rows)
