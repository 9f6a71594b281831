"""Online evaluation (mvcl.train.online_eval): metrics against float64 NumPy, fixed subsets, the
collapse alarm, and the same results on 1, 3 and 8 devices and on two processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict
from online_eval_worker import case

from mvcl import configs, data, evaluation, parallel
from mvcl.configs import digits as digits_config
from mvcl.configs import fashion_mnist as fashion_config
from mvcl.data import digits, fashion_mnist
from mvcl.train import ConfigError, inputs, online_eval
from mvcl.train.state import build_model, create_train_state, make_optimizer
from mvcl.train.step import AXIS

HERE = Path(__file__).parent


def build(config, mesh=None):
    mesh = parallel.make_mesh(1) if mesh is None else mesh
    model = build_model(config, axis_name=AXIS)
    state = create_train_state(config, model, make_optimizer(config, 1), mesh, 1)
    return model, mesh, jax.device_get(state.variables())


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def knn_reference(train_x, train_y, test_x, test_y, k, temperature, num_classes):
    sim = unit(test_x.astype(np.float64)) @ unit(train_x.astype(np.float64)).T
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test_x), num_classes))
    for i in range(len(test_x)):
        np.add.at(votes[i], train_y[top[i]], np.exp(sim[i, top[i]] / temperature))
    return float(np.mean(votes.argmax(1) == test_y))


def geometry_reference(x):
    """Effective rank, alignment and uniformity of (N, V, D) float64, by their definitions."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    sigma = np.linalg.svd(rows, compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    u = unit(x.astype(np.float64))
    alignment = np.mean(np.sum((u[:, 0] - u[:, 1]) ** 2, axis=-1))
    flat = u.reshape(-1, u.shape[-1])
    sq = np.sum((flat[:, None] - flat[None]) ** 2, axis=-1)
    pairs = sq[np.triu_indices(len(flat), k=1)]
    return {
        "effective_rank": np.exp(-np.sum(p * np.log(p))),
        "alignment": alignment,
        "uniformity": np.log(np.mean(np.exp(-2.0 * pairs))),
        "std": unit(rows).std(axis=0),
    }


def test_online_metrics_match_float64_numpy_on_a_tiny_run():
    config = case()
    model, mesh, variables = build(config)
    evaluator = online_eval.OnlineEvaluator(config, model, mesh)
    results = evaluator.evaluate(variables)
    assert tuple(results) == online_eval.KEYS

    # kNN on the centre views' features, embedded here on one device
    embed = lambda images: evaluation.embed(model, variables, images, crop_size=8, batch_size=64)
    h_train, z_train = embed(evaluator.train_images)
    h_test, z_test = embed(evaluator.test_images)
    for part, train_x, test_x in (("backbone", h_train, h_test), ("projector", z_train, z_test)):
        expected = knn_reference(
            train_x, evaluator.train_labels, test_x, evaluator.test_labels, 5, 0.07, 10
        )
        assert results[f"online/knn_{part}"] == pytest.approx(expected, abs=1e-12), part
    assert 0 < results["online/knn_backbone"] < 1  # not a trivial 0 or 1 on random images

    # geometry on two views of every test image, made and embedded here without a mesh
    num_views, augment = data.view_groups(config.num_views, config.augment.to_dict())[0]
    assert num_views == 4  # the run's V; the online evaluation uses 2 views (module docstring)
    views = data.make_views(jax.random.key(1234), jnp.asarray(evaluator.test_images), 2, **augment)
    n = len(evaluator.test_images)
    h, z = model.apply(variables, views.reshape(2 * n, *views.shape[2:]), train=False)
    h, z = np.asarray(h).reshape(n, 2, -1), np.asarray(z).reshape(n, 2, -1)
    for part, x in (("backbone", h), ("projector", z)):
        ref = geometry_reference(x)
        for name in ("effective_rank", "alignment", "uniformity"):
            assert results[f"online/{name}_{part}"] == pytest.approx(
                ref[name], rel=1e-4, abs=1e-6
            ), (part, name)
    ref = geometry_reference(z)
    assert results["online/projector_std_min"] == pytest.approx(ref["std"].min(), rel=1e-4)
    assert results["online/projector_std_mean"] == pytest.approx(ref["std"].mean(), rel=1e-4)
    assert evaluator.proj_dim == 16

    line = online_eval.summary_line(results)
    assert line.startswith(f"knn_backbone={100 * results['online/knn_backbone']:.1f}% ")
    assert f"rank_projector={results['online/effective_rank_projector']:.1f}" in line

    # a second call (nothing recompiled, nothing drawn anew) gives the same numbers
    assert evaluator.evaluate(variables) == results


def test_subsets_are_fixed_random_and_capped_at_the_split():
    config = case()
    model, mesh, _ = build(config)
    a = online_eval.OnlineEvaluator(config, model, mesh)
    b = online_eval.OnlineEvaluator(config, model, mesh)  # a resumed run builds it anew
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_images, b.test_images)
    fake = inputs.fake_source(config)
    train_ids = evaluation.train_subset(50, 41, seed=online_eval.TRAIN_SUBSET_SEED)
    test_ids = evaluation.train_subset(50, 23, seed=online_eval.TEST_SUBSET_SEED)
    assert not np.array_equal(train_ids[:23], test_ids)  # two different draws
    np.testing.assert_array_equal(a.train_images, np.stack([fake[i]["image"] for i in train_ids]))
    np.testing.assert_array_equal(a.test_images, np.stack([fake[i]["image"] for i in test_ids]))
    np.testing.assert_array_equal(a.test_labels, test_ids % 10)

    config.eval.online_test_examples = 500  # more than the 50 images: the whole split
    whole = online_eval.OnlineEvaluator(config, model, mesh)
    assert len(whole.test_images) == 50
    np.testing.assert_array_equal(whole.test_labels, np.arange(50) % 10)


def _alarm_config(**fields):
    config = case()
    for key, value in fields.items():
        config.eval[key] = value
    return config


def test_collapse_alarm_fires_on_collapsed_embeddings_and_not_on_healthy_ones():
    rng = np.random.default_rng(0)
    d, config = 128, _alarm_config()
    healthy = online_eval.geometry(
        rng.standard_normal((500, 2, 64)), rng.standard_normal((500, 2, d))
    )
    # uniform directions: per-dimension std 1/sqrt(D), effective rank near D
    assert healthy["online/projector_std_mean"] * np.sqrt(d) == pytest.approx(1.0, abs=0.05)
    assert healthy["online/effective_rank_projector"] > 0.8 * d
    assert online_eval.collapse_warning(healthy, config, proj_dim=d) is None

    point = np.tile(rng.standard_normal(d), (500, 2, 1))  # every input to one point
    point = point + 1e-7 * rng.standard_normal(point.shape)
    collapsed = online_eval.geometry(point[..., :64], point)
    warning = online_eval.collapse_warning(collapsed, config, proj_dim=d)
    assert warning is not None and "\n" not in warning
    assert "effective rank" in warning and "std" in warning

    line = rng.standard_normal((500, 2, 1)) * rng.standard_normal(d)  # rank 1, both signs
    rank_one = online_eval.geometry(line[..., :64], line)
    assert rank_one["online/projector_std_mean"] * np.sqrt(d) > 0.5  # spread along the line
    warning = online_eval.collapse_warning(rank_one, config, proj_dim=d)
    assert "effective rank" in warning and "std" not in warning

    off = _alarm_config(collapse_check=False)
    assert online_eval.collapse_warning(collapsed, off, proj_dim=d) is None
    no_rank = _alarm_config(collapse_rank_fraction=0.0)
    assert online_eval.collapse_warning(rank_one, no_rank, proj_dim=d) is None


def test_collapse_alarm_on_a_run_whose_projection_head_maps_everything_to_one_point():
    config = _alarm_config(collapse_rank_fraction=0.2)  # D = 16: 2 % would be below rank 1
    model, mesh, variables = build(config)
    evaluator = online_eval.OnlineEvaluator(config, model, mesh)
    assert evaluator.collapse_warning(evaluator.evaluate(variables)) is None
    head = variables["params"]["head"]
    head["Dense_1"]["kernel"] = np.zeros_like(head["Dense_1"]["kernel"])
    stats = variables["batch_stats"]["head"]["BatchNorm_1"]
    stats["mean"] = np.random.default_rng(1).standard_normal(stats["mean"].shape)
    results = evaluator.evaluate(variables)
    assert results["online/projector_std_mean"] < 1e-6
    assert results["online/effective_rank_projector"] < 1.01
    warning = evaluator.collapse_warning(results)
    assert "effective rank" in warning and "std" in warning
    assert results["online/knn_backbone"] > 0  # the backbone is untouched


def test_a_diverged_encoder_gets_nan_metrics_and_no_alarm():
    config = case()
    model, mesh, variables = build(config)
    evaluator = online_eval.OnlineEvaluator(config, model, mesh)
    kernel = variables["params"]["backbone"]["Conv_0"]["kernel"]
    variables["params"]["backbone"]["Conv_0"]["kernel"] = np.full_like(kernel, np.nan)
    results = evaluator.evaluate(variables)
    assert tuple(results) == online_eval.KEYS and all(np.isnan(v) for v in results.values())
    assert evaluator.collapse_warning(results) is None  # no dimension seen yet
    assert online_eval.collapse_warning(results, config, proj_dim=16) is None


def test_digits_and_fashion_mnist_evaluate_every_10_epochs_and_every_epoch():
    assert configs.load("digits").eval.every_steps == 10 * (1437 // 256) == 50
    assert configs.load("digits:fake=True").eval.every_steps == 50
    assert digits_config.TRAIN_EXAMPLES == len(digits.digits_split_indices("train"))
    assert fashion_config.TRAIN_EXAMPLES == fashion_mnist.SIZES["train"]
    fashion = configs.load("fashion_mnist")
    assert fashion.eval.every_steps == 60000 // 256 == 234
    fashion.batch_size = 500
    assert fashion.eval.every_steps == 120
    fashion.eval.every_steps = 7  # still a plain field to set
    assert fashion.eval.every_steps == 7 and fashion.batch_size == 500
    from mvcl.configs import common

    assert common.base_config().eval.every_steps == 0  # off unless a config turns it on


@pytest.mark.slow
def test_three_and_eight_devices_give_the_one_device_metrics():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(HERE / "online_eval_worker.py"), "devices", "1", "3", "8"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = {r["devices"]: r["results"] for r in map(json.loads, done.stdout.splitlines())}
    assert set(rows) == {1, 3, 8}
    for count in (3, 8):
        for key, value in rows[1].items():
            assert rows[count][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (count, key)


@pytest.mark.slow
def test_two_processes_give_the_one_device_metrics(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    outs = [tmp_path / f"process{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "online_eval_worker.py"), "process", str(port), str(i)]
            + [str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    results = [json.loads(out.read_text()) for out in outs]
    config = case()
    model, mesh, variables = build(config)
    expected = online_eval.OnlineEvaluator(config, model, mesh).evaluate(variables)
    for result in results:
        assert result.keys() == expected.keys()
        for key, value in expected.items():
            assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize(
    "field, value",
    [
        ("every_steps", -1),
        ("every_steps", 2.5),
        ("online_train_examples", 0),
        ("online_test_examples", None),
        ("collapse_check", "yes"),
        ("collapse_rank_fraction", 1.5),
        ("collapse_std", -0.1),
    ],
)
def test_invalid_online_fields_name_the_field(field, value):
    config = case()
    online_eval.check_settings(config)  # the valid config passes
    fields = config.to_dict()
    fields["eval"][field] = value  # any type: a config read from JSON is not type-checked
    config = config_dict.ConfigDict(fields)
    with pytest.raises(ConfigError, match=f"config.eval.{field}:"):
        online_eval.check_settings(config)
