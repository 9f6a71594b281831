"""The memory planner compiles the real train step for abstract inputs (nothing runs)."""

import importlib

import jax
import pytest

from mvcl import parallel, train
from mvcl.train import memory_plan
from mvcl.train.state import make_optimizer


def tiny(name: str, batch_size: int = 8):
    config = importlib.import_module(f"mvcl.configs.{name}").get_config("width=0.0625")
    config.model.proj_dim = 8
    config.batch_size = batch_size
    return config


@pytest.mark.parametrize("name", ["digits", pytest.param("cifar10", marks=pytest.mark.slow)])
def test_plan_counts_the_state_and_the_images_and_grows_with_the_batch(name):
    config = tiny(name)
    small, large = memory_plan.plan(config, 2), memory_plan.plan(config, 8)
    h, w, c = config.dataset.fake_shape
    assert small.image_shape == (h, w, c)
    assert (small.input_bytes, large.input_bytes) == (2 * h * w * c, 8 * h * w * c)

    # The state's bytes are those of a real train state of the config.
    tx = make_optimizer(config, 1)
    model = train.build_model(config, axis_name="data")
    state = train.create_train_state(config, model, tx, parallel.make_mesh(), channels=c)
    assert small.state_bytes == sum(x.nbytes for x in jax.tree.leaves(state))

    assert small.argument_bytes == small.state_bytes + small.input_bytes  # one device
    assert small.alias_bytes == small.state_bytes  # the donated state is reused by the new one
    assert small.output_bytes >= small.state_bytes
    assert 0 < small.temp_bytes < large.temp_bytes  # activations grow with the batch
    assert small.total_bytes == (
        small.argument_bytes
        + small.output_bytes
        - small.alias_bytes
        + small.temp_bytes
        + small.code_bytes
    )
    assert "temporaries" in memory_plan.format_plan(small)


def test_plan_feeds_the_whole_image_layout_and_counts_its_extents():
    """With ``whole_image_size`` (ImageNet's layout) the step takes ``{"image", "valid"}``: the
    plan compiles that input, at the whole-image side, and counts the extents' bytes."""
    config = tiny("digits")
    square = memory_plan.plan(config, 4)
    config.dataset.whole_image_size = 12
    whole = memory_plan.plan(config, 4)
    assert whole.image_shape == (12, 12, 1)
    assert whole.input_bytes == 4 * 12 * 12 * 1 + 4 * 2 * 4  # uint8 images + int32 (h, w)
    assert whole.argument_bytes == whole.state_bytes + whole.input_bytes
    assert whole.state_bytes == square.state_bytes


def test_plan_accounts_for_gradient_caching():
    """The planner compiles the step the config runs: with ``config.train.micro_batch`` the
    encoder's temporaries are one chunk's, so the plan is well below the one-pass step's (what
    remains grows with the loss's similarity tile, up to its size, and the embeddings; the
    flat curve at real sizes is in experiments/results/bench_grad_cache.json)."""
    config = tiny("digits")
    config.loss.backend = "ring"  # a streamed loss: the encoder's activations dominate
    one_pass = {b: memory_plan.plan(config, b).temp_bytes for b in (16, 64)}
    config.train.micro_batch = 4
    cached = {b: memory_plan.plan(config, b).temp_bytes for b in (16, 64)}
    assert one_pass[64] > 3.5 * one_pass[16]  # activations of every image
    assert cached[16] < one_pass[16] / 3 and cached[64] < one_pass[64] / 5


def test_largest_batch_is_the_largest_that_fits_the_budget():
    config = tiny("digits")
    budget = (
        memory_plan.plan(config, 4).total_bytes + memory_plan.plan(config, 5).total_bytes
    ) // 2
    batch, plans = memory_plan.largest_batch(config, budget)
    assert batch == 4
    totals = {p.batch_per_device: p.total_bytes for p in plans}
    assert totals[4] <= budget < totals[5]  # the answer and its neighbour were compiled
    assert len(plans) <= 6
    assert memory_plan.largest_batch(config, 1)[0] == 0  # not even two images fit in one byte


def test_bad_batch_and_budget_are_rejected():
    config = tiny("digits")
    with pytest.raises(ValueError, match="batch_per_device"):
        memory_plan.plan(config, 0)
    with pytest.raises(ValueError, match="device memory"):
        memory_plan.largest_batch(config, 0)
