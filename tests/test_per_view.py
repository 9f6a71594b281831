"""Per-view encoders (mvcl.models.per_view), digit modalities, multimodal evaluation, and the
trainer's per-view path; the shared-backbone path is checked against values it gave before the
per-view option existed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from run_helpers import xla_flags  # noqa: E402

from mvcl import data, losses, models, parallel, train  # noqa: E402
from mvcl.configs import digits, digits_multimodal  # noqa: E402
from mvcl.data import modalities  # noqa: E402
from mvcl.evaluation import multimodal  # noqa: E402
from mvcl.models import per_view  # noqa: E402
from mvcl.train.inputs import fake_source  # noqa: E402
from mvcl.train.state import learning_rate_schedule, make_optimizer  # noqa: E402
from mvcl.train.step import AXIS  # noqa: E402


def tiny(config, batch_size=4, num_steps=2):
    config.model.proj_dim = 8
    config.dataset.fake_num_examples = batch_size
    config.batch_size = batch_size
    config.num_steps = num_steps
    config.progress_bar = False
    return config


def run_steps(config, steps=2):
    """``steps`` train steps on the fake images on one device: (losses, final state)."""
    mesh = parallel.make_mesh(1)
    model = train.build_model(config, axis_name=AXIS)
    tx = make_optimizer(config, config.num_steps)
    schedule = learning_rate_schedule(config, config.num_steps)
    state = train.create_train_state(config, model, tx, mesh, channels=1)
    images = jnp.asarray(np.stack([r["image"] for r in fake_source(config)]))
    step = train.make_train_step(config, model, tx, schedule, mesh)
    values = []
    for _ in range(steps):
        state, metrics = step(state, images)
        values.append(float(metrics["loss"]))
    return values, state


# --- the shared backbone is unchanged ------------------------------------------------------------

# Two steps of digits:fake=True,width=0.125,views=3 (proj_dim 8, batch 4, seed 0) with
# the trainer as it was before per-view models existed: the losses and the sum of |params| after.
SHARED_LOSSES = [2.5344090461730957, 3.6459622383117676]
SHARED_ABS_SUM = 712.2167736472911
# Recorded on one machine; XLA's CPU kernels sum in a machine-dependent order (vector width), so
# two float32 SGD steps elsewhere differ by ~1e-6 relative. Any change of model, views or loss
# moves these values by far more than the tolerance.
REGRESSION_RTOL = 2e-5


def test_shared_backbone_path_gives_the_values_it_gave_before():
    config = tiny(digits.get_config("fake=True,width=0.125,views=3"))
    assert config.model.per_view is None
    values, state = run_steps(config)
    model = train.build_model(config, axis_name=AXIS)
    assert isinstance(model, models.ContrastiveModel)
    old = config.copy_and_resolve_references()
    del old.model["per_view"]  # a config saved before the field existed: the same model
    assert train.build_model(old, axis_name=AXIS) == model
    np.testing.assert_allclose(values, SHARED_LOSSES, rtol=REGRESSION_RTOL)
    params = jax.device_get(state.params)
    assert set(params) == {"backbone", "head"}
    abs_sum = sum(np.abs(leaf).astype(np.float64).sum() for leaf in jax.tree.leaves(params))
    np.testing.assert_allclose(abs_sum, SHARED_ABS_SUM, rtol=REGRESSION_RTOL)


# --- the model -----------------------------------------------------------------------------------


class Flat(nn.Module):
    """A user's encoder: flatten then Dense, any input shape."""

    features: int

    @nn.compact
    def __call__(self, x, train):
        del train
        return nn.Dense(self.features)(x.reshape(x.shape[0], -1))


def test_per_view_model_stacks_groups_in_view_order_with_inputs_of_different_shapes():
    model = models.PerViewModel(
        encoders=(Flat(5), Flat(7)),
        heads=(nn.Dense(3), models.ProjectionHead(out_dim=3)),
        views=((0, 2), (1,)),
        names=("image", "profile"),
    )
    keys = jax.random.split(jax.random.key(0), 3)
    inputs = [
        jax.random.normal(keys[0], (6, 4, 4, 1)),
        jax.random.normal(keys[1], (6, 10)),
        jax.random.normal(keys[2], (6, 4, 4, 1)),
    ]
    variables = model.init(jax.random.key(1), inputs, train=False)
    assert set(variables["params"]) == {"encoders_0", "encoders_1", "heads_0", "heads_1"}
    features, z = model.apply(variables, inputs, train=False)
    assert z.shape == (6, 3, 3) and z.dtype == jnp.float32
    assert [f.shape for f in features] == [(6, 5), (6, 7), (6, 5)]
    for v, g in ((0, 0), (1, 1), (2, 0)):  # view v through its group's encoder and head alone
        h, z_v = model.apply(
            variables, inputs[v], g, train=False, method=models.PerViewModel.encode
        )
        np.testing.assert_allclose(z[:, v], z_v, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(features[v], h, rtol=1e-6, atol=1e-6)
    stacked = jnp.stack([inputs[0], inputs[2]], axis=1)  # one array (N, V, ...) also works
    same = models.PerViewModel(encoders=(Flat(5),), heads=(nn.Dense(3),), views=((0, 1),))
    _, z2 = same.apply(same.init(jax.random.key(2), stacked, train=False), stacked, train=False)
    assert z2.shape == (6, 2, 3)


def test_encoders_of_different_widths_without_projection_name_the_views():
    model = models.PerViewModel(
        encoders=(Flat(5), Flat(7)), heads=(None, None), views=((0,), (1, 2)), names=("a", "b")
    )
    x = jnp.ones((2, 3, 4))
    with pytest.raises(
        ValueError,
        match=r"'a' \(views \[0\]\) gives 5 .*no projection head.*"
        r"'b' \(views \[1, 2\]\) gives 7",
    ):
        model.init(jax.random.key(0), x, train=False)
    mixed = models.PerViewModel(
        encoders=(Flat(5), Flat(7)), heads=(nn.Dense(4), None), views=((0,), (1,))
    )
    with pytest.raises(ValueError, match="'group0' .*gives 4 from its head.*'group1'.*gives 7"):
        mixed.init(jax.random.key(0), [jnp.ones((2, 3)), jnp.ones((2, 3))], train=False)


def test_config_with_a_head_off_and_different_widths_fails_naming_the_views():
    config = tiny(digits_multimodal.get_config("fake=True,width=0.125"))
    config.model.per_view[2]["head"] = False  # the profile MLP gives 64 * 0.125 = 8 features
    config.model.proj_dim = 16
    model = train.build_model(config)
    with pytest.raises(ValueError, match=r"'profile' \(views \[2\]\) gives 8 from its encoder"):
        train.create_train_state(
            config, model, make_optimizer(config, 1), parallel.make_mesh(1), channels=1
        )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c.model.per_view[1].update(views=[0]),
            r"views missing \[1\]; in two groups \[0\]",
        ),
        (lambda c: c.model.per_view[0].update(views=[0, 5]), r"outside 0\.\.2 \[5\]"),
        (lambda c: c.model.per_view[0].update(encoder="vit"), r"per_view\[0\]\.encoder: unknown"),
        (lambda c: c.model.per_view[2].update(input="audio"), r"per_view\[2\]\.input: unknown"),
        (lambda c: c.model.per_view[1].update(colour=1), r"per_view\[1\]\.colour: unknown field"),
        (lambda c: c.model.per_view[1].pop("views"), r"per_view\[1\]\.views: required"),
        (lambda c: c.model.per_view[1].update(name="image"), "names must be unique"),
        (lambda c: c.augment.multicrop.update(num_small=2), "multi-crop"),
        (lambda c: setattr(c.model, "per_view", []), "non-empty list"),
    ],
)
def test_bad_per_view_config_names_the_field(change, message):
    config = digits_multimodal.get_config("fake=True")
    change(config)
    with pytest.raises(ValueError, match=message):
        train.build_model(config)


def test_the_model_layer_takes_its_modalities_from_the_caller():
    """mvcl.models does not import mvcl.data: the trainer gives per_view.from_config the input
    transforms by name; without them only "image" is known."""
    config = digits_multimodal.get_config("fake=True")
    with pytest.raises(
        ValueError, match=r"per_view\[1\]\.input: unknown modality 'gradient'; known: image$"
    ):
        per_view.from_config(config)
    model = per_view.from_config(config, inputs=modalities.MODALITIES)
    assert model == train.build_model(config, axis_name=None)
    code = "import sys, mvcl.models; print(sorted(m for m in sys.modules if 'mvcl.data' in m))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-2000:]


def test_multimodal_config_arguments():
    config = digits_multimodal.get_config("loss=mv_infonce")
    assert config.name == "digits_mm_all_mv_infonce_v3"
    assert [s["input"] for s in config.model.per_view] == ["image", "gradient", "profile"]
    baseline = digits_multimodal.get_config("modality=profile,views=4")
    (spec,) = baseline.model.per_view
    assert spec["views"] == [0, 1, 2, 3] and spec["encoder"] == "mlp"
    with pytest.raises(ValueError, match="views=3"):
        digits_multimodal.get_config("views=2")
    with pytest.raises(ValueError, match="modality='audio'"):
        digits_multimodal.get_config("modality=audio")


# --- modalities and retrieval against NumPy -----------------------------------------------------


def test_modalities_match_numpy():
    x = np.random.default_rng(0).normal(size=(3, 5, 6, 2))
    g = np.asarray(modalities.gradient_field(jnp.asarray(x)))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    dx = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / 2
    dy = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / 2
    np.testing.assert_allclose(g, np.concatenate([dx, dy], -1), rtol=1e-5, atol=1e-6)
    # the interior is np.gradient's central difference
    np.testing.assert_allclose(g[:, :, 1:-1, :2], np.gradient(x, axis=2)[:, :, 1:-1], atol=1e-5)
    p = np.asarray(modalities.projection_profile(jnp.asarray(x)))
    np.testing.assert_allclose(p[:, :5], x.mean(axis=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(p[:, 5:], x.mean(axis=(1, 3)), atol=1e-6)
    assert p.shape == (3, 11)
    with pytest.raises(ValueError, match="'profile' takes a .B, H, W, C. batch"):
        modalities.projection_profile(jnp.ones((3, 4)))


def numpy_retrieval(queries, keys):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    return float(np.mean(np.argmax(q @ k.T, axis=1) == np.arange(len(q))))


def test_retrieval_accuracy_matches_numpy_oracle():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(50, 8))
    queries = keys + rng.normal(scale=1.2, size=keys.shape)  # some rows retrieve, some do not
    expected = numpy_retrieval(queries.astype(np.float64), keys.astype(np.float64))
    assert 0.1 < expected < 0.9
    assert multimodal.retrieval_accuracy(queries, keys, chunk_size=7) == expected
    assert multimodal.retrieval_accuracy(keys, 3.0 * keys) == 1.0  # scale-free
    results = multimodal.cross_modal_retrieval({"a": keys, "b": queries, "c": -keys})
    assert set(results) == {f"retrieval/{a}->{b}" for a in "abc" for b in "abc" if a != b} | {
        "retrieval/mean"
    }
    assert results["retrieval/b->a"] == numpy_retrieval(queries, keys)
    assert results["retrieval/a->c"] == numpy_retrieval(keys, -keys) == 0.0
    np.testing.assert_allclose(
        results["retrieval/mean"], np.mean([v for k, v in results.items() if k != "retrieval/mean"])
    )
    with pytest.raises(ValueError, match="row-aligned"):
        multimodal.retrieval_accuracy(keys, keys[:10])


# --- the trainer's per-view path ----------------------------------------------------------------


def test_per_view_train_step_equals_a_direct_computation():
    """The loss of one step: each instance's V views from its key, view v through encoder v,
    (N, 3, D) into the loss."""
    config = tiny(digits_multimodal.get_config("fake=True,width=0.125"), num_steps=1)
    mesh = parallel.make_mesh(1)
    model = train.build_model(config, axis_name=AXIS)
    tx, schedule = make_optimizer(config, 1), learning_rate_schedule(config, 1)
    state = train.create_train_state(config, model, tx, mesh, channels=1)
    images = np.stack([record["image"] for record in fake_source(config)])
    # The step donates the state: keep host copies of what the direct computation needs.
    rng, variables = np.asarray(state.rng), jax.tree.map(np.array, state.variables())
    _, metrics = train.make_train_step(config, model, tx, schedule, mesh)(state, images)

    augment = {k: v for k, v in config.augment.to_dict().items() if k != "multicrop"}
    step_key = jax.random.fold_in(rng, 0)
    views = jnp.concatenate(
        [
            data.make_views(jax.random.fold_in(step_key, i), images[i : i + 1], 3, **augment)
            for i in range(4)
        ]
    )
    (_, z), _ = train.build_model(config).apply(
        variables, views, train=True, mutable=["batch_stats"]
    )
    assert z.shape == (4, 3, 8)
    expected = losses.get("mv_dhel")(z, temperature=config.loss.temperature)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


@pytest.mark.slow
def test_per_view_run_on_4_simulated_devices_matches_one_device(tmp_path):
    """mvcl-pretrain --config=digits_multimodal: same losses on 1 and 4
    devices (each device holds 2 of the 8 instances; BatchNorm statistics are global)."""
    args = [
        "--config=digits_multimodal:fake=True,width=0.125,loss=mv_infonce",
        "--config.dataset.fake_num_examples=8",
        "--config.batch_size=8",
        "--config.model.proj_dim=8",
        "--config.optim.lr=0.05",
        "--config.num_steps=3",
        "--config.log_every_steps=1",
        "--config.progress_bar=False",
    ]
    procs = []
    for devices in (1, 4):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=xla_flags(devices),
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mvcl.pretrain",
                    *args,
                    f"--workdir={tmp_path / str(devices)}",
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    assert "on 4 device(s)" in out

    def losses_of(workdir):
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["train/loss"] for line in lines]

    one, four = losses_of(tmp_path / "1"), losses_of(tmp_path / "4")
    assert len(one) == 3 and np.all(np.isfinite(one))
    np.testing.assert_allclose(four, one, rtol=1e-4)


@pytest.mark.slow
def test_multimodal_digits_run_reports_probes_and_retrieval(tmp_path):
    config = digits_multimodal.get_config("width=0.125")
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.model.proj_dim = 16
    config.batch_size, config.num_steps, config.progress_bar = 64, 2, False
    config.eval.probe_epochs = 2
    results = train.train_and_evaluate(config, tmp_path / "run")["eval"]
    pairs = [
        f"retrieval/{a}->{b}"
        for a in per_view.group_inputs(config)
        for b in per_view.group_inputs(config)
        if a != b
    ]
    assert set(results) == {
        f"{m}/{measure}"
        for m in ("image", "gradient", "profile")
        for measure in ("linear_probe", "knn", "raw_linear_probe")
    } | set(pairs) | {"retrieval/mean"}
    assert all(0.0 <= v <= 1.0 for v in results.values())
    assert results["image/raw_linear_probe"] > 0.9  # the pixels alone separate digits
    report = multimodal.format_report(results)
    assert "profile->gradient" in report and "raw-input probe" in report
    step, variables = train.restore_variables(tmp_path / "run")
    assert step == 2 and set(variables["params"]) >= {"encoders_0", "heads_2"}
