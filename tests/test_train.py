"""Tests for mvcl.train: optimiser, evaluation, checkpoints, config checks, and whole runs.

Whole runs use tiny random images and narrow models. Runs that need their own device count or a
crash (8 simulated devices, 2 processes, SIGKILL, SIGTERM) start `mvcl.pretrain` in fresh
interpreters; the others call `mvcl.train.train_and_evaluate` in this process.
"""

import json
import logging
import re
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from run_helpers import (
    EVALUATE,
    TINY_RUN,
    checkpoint_steps,
    finish,
    get_config,
    logged_steps,
    processes,
    read_metrics,
    saved_state,
    start,
    tensorboard_steps,
    tiny_config,
    train_losses,
)

from mvcl import configs, data, evaluation, losses, parallel, train
from mvcl.studies import runner
from mvcl.train.inputs import fake_source
from mvcl.train.state import (
    OPTIMIZERS,
    learning_rate_schedule,
    make_optimizer,
    weight_matrix_mask,
)
from mvcl.train.step import AXIS

CONFIGS = [name for name in configs.names() if "/" not in name]


# --- optimiser ----------------------------------------------------------------------------------


def test_schedule_warms_up_linearly_then_decays_to_zero_by_cosine():
    config = get_config("digits")
    config.optim.lr, config.optim.warmup_fraction = 2.0, 0.1
    lr = learning_rate_schedule(config, total_steps=100)
    np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 1.0, 2.0], atol=1e-6)
    np.testing.assert_allclose([lr(55), lr(100)], [1.0, 0.0], atol=1e-6)
    assert all(lr(s) > lr(s + 1) for s in range(10, 100))


PARAMS = {
    "Conv_0": {"kernel": jnp.full((3, 3, 1, 2), 2.0)},
    "BatchNorm_0": {"scale": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)},
    "Dense_0": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 2.0)},
}


def test_weight_matrix_mask_selects_only_convolution_and_dense_kernels():
    mask = weight_matrix_mask(PARAMS)
    assert mask == {
        "Conv_0": {"kernel": True},
        "BatchNorm_0": {"scale": False, "bias": False},
        "Dense_0": {"kernel": True, "bias": False},
    }


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_and_trust_ratio_skip_biases_and_batchnorm(name):
    config = get_config("digits")
    config.optim.name, config.optim.lr, config.optim.warmup_fraction = name, 0.5, 0.0
    config.optim.weight_decay, config.optim.trust_coefficient = 0.1, 0.01
    tx = make_optimizer(config, total_steps=1000)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    lr = 0.5  # step 0 of 1000 without warmup: the peak rate
    for leaf in ("scale", "bias"):  # plain SGD step: no decay, no trust ratio
        np.testing.assert_allclose(updates["BatchNorm_0"][leaf], -lr, rtol=1e-6)
    np.testing.assert_allclose(updates["Dense_0"]["bias"], -lr, rtol=1e-6)
    for layer in ("Conv_0", "Dense_0"):
        p = PARAMS[layer]["kernel"]
        decayed = grads[layer]["kernel"] + 0.1 * p  # 1 + 0.1 * 2
        if name == "lars":
            decayed = decayed * 0.01 * jnp.linalg.norm(p) / jnp.linalg.norm(decayed)
        np.testing.assert_allclose(updates[layer]["kernel"], -lr * decayed, rtol=1e-5)


# --- evaluation pieces --------------------------------------------------------------------------


def test_weighted_knn_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.standard_normal((60, 5)), rng.standard_normal((25, 5))
    train_y, test_y = rng.integers(0, 3, 60), rng.integers(0, 3, 25)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit(test_x) @ unit(train_x).T
    top = np.argsort(-sim, axis=1)[:, :7]
    votes = np.zeros((25, 3))
    for i in range(25):
        for j in top[i]:
            votes[i, train_y[j]] += np.exp(sim[i, j] / 0.1)
    expected = np.mean(votes.argmax(1) == test_y)
    got = evaluation.knn_accuracy(
        train_x, train_y, test_x, test_y, num_classes=3, k=7, temperature=0.1, chunk_size=10
    )
    assert got == pytest.approx(expected)


def test_linear_probe_separates_gaussian_classes():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, 10)) * 3.0
    y = rng.integers(0, 4, 400)
    x = centres[y] + rng.standard_normal((400, 10)) + 100.0  # standardisation removes the offset
    acc = evaluation.linear_probe_accuracy(
        x[:300], y[:300], x[300:], y[300:], num_classes=4, steps=50
    )
    assert acc >= 0.95


# --- checkpoints --------------------------------------------------------------------------------


def small_state(value: float, width: int = 4) -> dict:
    return {"w": jnp.full((3, width), value), "step": jnp.int32(value)}


def save_steps(directory, steps) -> None:
    checkpointer = train.Checkpointer(directory, max_to_keep=5)
    for step in steps:
        checkpointer.save(step, small_state(float(step)), {"step": step})
    checkpointer.close()


@pytest.mark.parametrize("damage", ["metadata", "arrays"])
def test_corrupt_checkpoint_is_quarantined_and_the_previous_one_restored(tmp_path, caplog, damage):
    save_steps(tmp_path, (1, 2))
    original = sorted(f.relative_to(tmp_path / "2") for f in (tmp_path / "2").rglob("*"))
    files = [f for f in (tmp_path / "2" / "state").rglob("*") if f.is_file()]
    if damage == "metadata":  # every file overwritten: nothing of it reads
        for f in files:
            f.write_bytes(b"not a checkpoint")
    else:  # metadata intact, array data truncated (a disk that filled up)
        for f in files:
            if f.parent.name == "d":
                f.write_bytes(f.read_bytes()[:3])

    checkpointer = train.Checkpointer(tmp_path, max_to_keep=5)
    with caplog.at_level(logging.WARNING):
        step, restored, data_state = checkpointer.restore_latest(small_state(0.0))
    checkpointer.close()
    assert step == 1 and data_state == {"step": 1}
    np.testing.assert_array_equal(restored["w"], np.full((3, 4), 1.0))
    assert "step 2" in caplog.text and "quarantine" in caplog.text
    quarantine = tmp_path / "quarantine"
    assert sorted(p.name for p in quarantine.iterdir()) == ["2", "2.error.txt"]
    moved = sorted(f.relative_to(quarantine / "2") for f in (quarantine / "2").rglob("*"))
    assert moved == original  # every file of the checkpoint, as it was
    error = (quarantine / "2.error.txt").read_text()
    assert "step 2" in error and "Traceback" in error
    assert [p.name for p in tmp_path.iterdir() if p.name.isdigit()] == ["1"]  # 2 can be rewritten

    save_steps(tmp_path, (2,))  # the same step damaged again: a second quarantine entry
    for f in (tmp_path / "2" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    checkpointer = train.Checkpointer(tmp_path, max_to_keep=5)
    assert checkpointer.restore_latest(small_state(0.0))[0] == 1
    checkpointer.close()
    assert {"2", "2.2"} <= {p.name for p in quarantine.iterdir()}


def test_read_only_restore_of_a_corrupt_checkpoint_moves_nothing(tmp_path):
    save_steps(tmp_path, (1, 2))
    for f in (tmp_path / "2" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"not a checkpoint")
    checkpointer = train.Checkpointer(tmp_path, max_to_keep=5, read_only=True)
    assert checkpointer.restore_latest(small_state(0.0))[0] == 1
    checkpointer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_checkpoint_of_another_structure_is_a_config_error_and_nothing_moves(tmp_path):
    save_steps(tmp_path, (1, 2))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    checkpointer = train.Checkpointer(tmp_path, max_to_keep=5)
    with pytest.raises(train.CheckpointMismatchError, match=r"w is \(3, 4\) float32 in the"):
        checkpointer.restore_latest(small_state(0.0, width=5))
    with pytest.raises(ValueError, match="another structure"):  # also a ValueError
        checkpointer.restore_latest({"w": jnp.zeros((3, 4))})
    checkpointer.close()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --- config checks ------------------------------------------------------------------------------


BAD_CONFIGS = {
    "unknown loss": ({"loss__name": "no_such_loss"}, "config.loss.name"),
    "one view": ({"num_views": 1}, "config.num_views"),
    "two-view loss with 4 views": ({"loss__name": "infonce", "num_views": 4}, "config.num_views"),
    "unknown backend": ({"loss__backend": "dense"}, "config.loss.backend"),
    "unknown model": ({"model__name": "vgg"}, "config.model.name"),
    "unknown optimiser": ({"optim__name": "adam"}, "config.optim.name"),
    "batch larger than the data": ({"batch_size": 4}, "config.batch_size"),
    "missing data set": (
        {"dataset__fake": False, "dataset__name": "cifar10"},
        "config.dataset.name",
    ),
    "unknown data set": ({"dataset__fake": False, "dataset__name": "nope"}, "config.dataset.name"),
    "negative small crops": (
        {"augment__multicrop__num_small": -1},
        "config.augment.multicrop.num_small",
    ),
    "multi-crop for a two-view loss": (
        {"loss__name": "infonce", "num_views": 2, "augment__multicrop__num_small": 2},
        "config.augment.multicrop.num_small",
    ),
    "small crops larger than the large": (
        {"augment__multicrop__num_small": 2, "augment__multicrop__small_size": 9},
        "config.augment.multicrop.small_size",
    ),
    "small crop scale 0": (
        {"augment__multicrop__num_small": 2, "augment__multicrop__small_min_scale": 0.0},
        "config.augment.multicrop.small_min_scale",
    ),
    "small crop scales reversed": (
        {"augment__multicrop__num_small": 2, "augment__multicrop__small_max_scale": 0.05},
        "config.augment.multicrop.small_max_scale",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_fails_before_training_naming_the_field(case, tmp_path):
    overrides, field = BAD_CONFIGS[case]
    config = tiny_config(**overrides)
    config.dataset.data_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError, match=re.escape(field)):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_batch_that_does_not_divide_over_the_devices_is_rejected():
    config = tiny_config(batch_size=12)
    train.validate_config(config, device_count=4, process_count=1)
    with pytest.raises(ValueError, match=r"config\.batch_size: 12 images do not divide over 8"):
        train.validate_config(config, device_count=8, process_count=1)


# --- multi-crop ---------------------------------------------------------------------------------


def test_multicrop_argument_sets_the_small_crops_and_names_the_run():
    assert get_config("digits").augment.multicrop.num_small == 0
    config = get_config("digits", "views=2,multicrop=3")
    assert (config.num_views, config.augment.multicrop.num_small) == (2, 3)
    assert config.name == "digits_mv_dhel_v2_mc3"
    assert get_config("imagenet100").augment.multicrop.small_size == 96  # SwAV's 96 of 224


def test_multicrop_step_gives_the_loss_large_and_small_crops_and_keeps_large_crop_statistics():
    """One step against a direct computation: per-instance keys split into a large-crop and a
    small-crop key, one model pass per resolution, the loss on (N, 2 + 3, D)."""
    config = tiny_config(num_views=2, augment__multicrop__num_small=3, batch_size=4)
    config.dataset.fake_num_examples = 4
    mesh = parallel.make_mesh(1)
    model = train.build_model(config, axis_name=AXIS)
    tx, schedule = make_optimizer(config, 1), learning_rate_schedule(config, 1)
    state = train.create_train_state(config, model, tx, mesh, channels=1)
    images = np.stack([record["image"] for record in fake_source(config)])
    step = train.make_train_step(config, model, tx, schedule, mesh)
    rng, variables = jax.device_get((state.rng, state.variables()))  # the step donates `state`
    new_state, metrics = step(state, jnp.asarray(images))

    large = {k: v for k, v in config.augment.to_dict().items() if k != "multicrop"}
    small = dict(large, crop_size=4, min_scale=0.1, max_scale=0.3)  # configs/digits.py
    step_key = jax.random.fold_in(rng, 0)
    views = {"large": [], "small": []}
    for i in range(4):
        large_key, small_key = jax.random.split(jax.random.fold_in(step_key, i))
        views["large"].append(data.make_views(large_key, images[i : i + 1], 2, **large))
        views["small"].append(data.make_views(small_key, images[i : i + 1], 3, **small))
    z, stats = [], {}
    for name, group in views.items():
        x = jnp.concatenate(group)  # (4, V_group, S, S, 1)
        (_, z_group), stats[name] = train.build_model(config).apply(
            variables, x.reshape(-1, *x.shape[2:]), train=True, mutable=["batch_stats"]
        )
        z.append(z_group.reshape(4, -1, z_group.shape[-1]))
    z = jnp.concatenate(z, axis=1)
    assert z.shape == (4, 5, 16)
    expected = losses.get(config.loss.name)(z, temperature=config.loss.temperature)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        jax.device_get(new_state.batch_stats),
        stats["large"]["batch_stats"],
    )
    step(new_state, jnp.asarray(images))  # the state is donated: its buffers are reused
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(new_state))


# --- whole runs in this process -----------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_runs_a_training_step_on_random_images(name, tmp_path):
    config = tiny_config(name)
    result = train.train_and_evaluate(config, tmp_path)
    assert result["step"] == 1 and not result["preempted"]
    (line,) = read_metrics(tmp_path)
    assert line["step"] == 1 and np.isfinite(line["train/loss"])
    assert (tmp_path / "checkpoints" / "1").is_dir()
    assert train.load_config(tmp_path).model.name == config.model.name


def test_digits_run_reports_probe_knn_pixels_and_geometry_and_evaluate_cli_agrees(tmp_path):
    config = get_config("digits", "width=0.125")
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.model.proj_dim = 16
    config.batch_size, config.num_steps, config.progress_bar = 64, 2, False
    config.eval.probe_epochs, config.eval.geometry_examples = 20, 64
    result = train.train_and_evaluate(config, tmp_path / "run")
    results = result["eval"]
    for features in ("backbone", "projector", "pixels"):
        for measure in ("linear_probe", "knn"):
            assert 0.0 <= results[f"{features}/{measure}"] <= 1.0
    assert results["pixels/knn"] > 0.9 and results["pixels/linear_probe"] > 0.9
    for part in ("backbone", "projector"):
        for metric in ("alignment", "uniformity", "effective_rank", "covariance_rank"):
            assert np.isfinite(results[f"{part}/{metric}"])
    logged = read_metrics(tmp_path / "run")[-1]
    assert logged["step"] == 2 and logged["eval/backbone/knn"] == results["backbone/knn"]
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))

    out, err = finish(start([f"--workdir={tmp_path / 'run'}"], script=EVALUATE))
    assert "read only" not in err and "OpenCV" not in err  # orbax's and tfds's notes are quiet
    report = evaluation.format_report(results, knn_k=config.eval.knn_k)
    assert report.splitlines()[1] in out  # the backbone row: the same accuracies
    assert "raw pixels" in out and "effective_rank" in out

    step, variables = train.restore_variables(tmp_path / "run")
    assert step == 2
    jax.tree.map(
        np.testing.assert_array_equal, variables, jax.device_get(result["state"].variables())
    )
    embeddings = runner.embed_test_split(config, tmp_path / "run")  # a sweep's restore path
    assert embeddings["projector"].shape == (360, 16) and embeddings["labels"].shape == (360,)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.restore_variables(tmp_path / "nothing", config)


# --- whole runs in fresh interpreters -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("small_crops", [0, 2], ids=["views", "multicrop"])
def test_losses_match_on_1_and_8_devices_and_across_2_processes(tmp_path, small_crops):
    run = [*TINY_RUN, f"--config.augment.multicrop.num_small={small_crops}"]
    one = start([*run, f"--workdir={tmp_path / 'one'}"], devices=1)
    eight = start([*run, f"--workdir={tmp_path / 'eight'}"], devices=8)
    two_processes = [
        start([*run, f"--workdir={tmp_path / 'two'}"], devices=2, env=env) for env in processes(2)
    ]
    outputs = [finish(p)[0] for p in (one, eight, *two_processes)]
    assert "on 8 device(s) in 1 process(es)" in outputs[1]
    assert "on 4 device(s) in 2 process(es)" in outputs[2]
    reference = train_losses(tmp_path / "one")
    assert len(reference) == 20 and np.all(np.isfinite(reference))
    np.testing.assert_allclose(train_losses(tmp_path / "eight"), reference, rtol=1e-4)
    np.testing.assert_allclose(train_losses(tmp_path / "two"), reference, rtol=1e-4)


@pytest.mark.slow
def test_rerun_after_sigkill_ends_bitwise_as_an_uninterrupted_run_and_logs_each_step_once(
    tmp_path,
):
    run = [*TINY_RUN, "--config.checkpoint_every_steps=5"]
    summary = tmp_path / "results" / "result.json"
    uninterrupted = start([*run, f"--workdir={tmp_path / 'uninterrupted'}", f"--summary={summary}"])
    crashing = start([*run, f"--workdir={tmp_path / 'resumed'}"], worker=["kill", "13", "10"])
    crashing.communicate(timeout=600)
    assert crashing.returncode == -signal.SIGKILL
    assert checkpoint_steps(tmp_path / "resumed") == [5, 10]
    assert logged_steps(tmp_path / "resumed") == list(range(1, 14))  # 11-13 are lost
    out, _ = finish(start([*run, f"--workdir={tmp_path / 'resumed'}"]))
    assert "Resumed from the checkpoint at step 10" in out
    finish(uninterrupted)

    expected = saved_state(tmp_path / "uninterrupted", 20)
    got = saved_state(tmp_path / "resumed", 20)
    assert int(got["step"]) == 20
    for name in ("params", "batch_stats", "opt_state"):  # the same device count: bitwise
        jax.tree.map(np.testing.assert_array_equal, got[name], expected[name])
    # Steps 11-13 ran twice (before the crash and after the restart); both logs hold them once.
    for workdir in (tmp_path / "resumed", tmp_path / "uninterrupted"):
        assert logged_steps(workdir) == list(range(1, 21))
        assert tensorboard_steps(workdir) == list(range(1, 21))
    np.testing.assert_array_equal(
        train_losses(tmp_path / "resumed"), train_losses(tmp_path / "uninterrupted")
    )
    # --summary: the finished run in one file (fake data: no evaluation)
    written = json.loads(summary.read_text())
    assert written["command"].startswith("mvcl-pretrain --config=digits:fake=True")
    assert written["step"] == 20 and written["eval"] == {} and written["seconds"] > 0
    assert written["train_loss"] == train_losses(tmp_path / "uninterrupted")[-1]
    assert written["config"]["batch_size"] == 16 and written["machine"]["devices"] == 1


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    summary = tmp_path / "result.json"
    proc = start(
        [*TINY_RUN, "--config.num_steps=100000", f"--workdir={tmp_path}", f"--summary={summary}"]
    )
    metrics, deadline = tmp_path / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = finish(proc, timeout=300)
    step = int(re.search(r"SIGTERM: saved the checkpoint at step (\d+)", out).group(1))
    assert 3 <= step < 100000
    assert checkpoint_steps(tmp_path) == [step]
    assert int(saved_state(tmp_path, step)["step"]) == step
    assert not summary.exists()  # a stopped run is not a finished one
