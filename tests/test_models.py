"""Tests for mvcl.models: shapes, channel counts, BatchNorm modes, global-batch BN, dtypes."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvcl.models import ContrastiveModel, ProjectionHead, SmallCNN, get_backbone, get_model


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _num_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init_shapes(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


# --- architecture -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, backbone_params, feature_dim",
    [
        ("resnet18", dict(stem="cifar"), 11_168_832, 512),
        ("resnet50", dict(stem="imagenet"), 23_508_032, 2048),
    ],
)
def test_full_width_parameter_counts(name, kwargs, backbone_params, feature_dim):
    # torchvision's counts without the classifier.
    # Head: F*F + 2F (BN scale, bias) + F*128 + 128 (BN scale only).
    variables = _init_shapes(get_model(name, **kwargs), (1, 32, 32, 3))
    assert _num_params(variables["params"]["backbone"]) == backbone_params
    head_params = feature_dim * feature_dim + 2 * feature_dim + feature_dim * 128 + 128
    assert _num_params(variables["params"]["head"]) == head_params


@pytest.mark.parametrize(
    "name, kwargs, shape, feature_dim",
    [
        ("small_cnn", {}, (3, 8, 8, 1), 128),
        ("small_cnn", {}, (3, 32, 32, 3), 128),
        ("convnet", {}, (3, 28, 28, 1), 512),
        ("convnet", dict(width=0.5), (3, 32, 32, 3), 256),
        ("resnet18", dict(width=1 / 8, stem="cifar"), (3, 8, 8, 1), 64),
        ("resnet18", dict(width=1 / 8, stem="cifar"), (3, 32, 32, 3), 64),
        ("resnet50", dict(width=1 / 8, stem="imagenet"), (3, 8, 8, 1), 256),
        ("resnet50", dict(width=1 / 8, stem="imagenet"), (3, 64, 64, 3), 256),
    ],
)
def test_output_shapes(name, kwargs, shape, feature_dim):
    # Shapes by abstract evaluation (no compilation); the tests below run real forwards.
    model = get_model(name, **kwargs)
    variables = _init_shapes(model, shape)
    h, z = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape), train=False), variables)
    assert h.shape == (shape[0], feature_dim) and h.dtype == jnp.float32
    assert z.shape == (shape[0], 128) and z.dtype == jnp.float32


def _stage_outputs(model, shape):
    """Abstract init + train-mode forward: params and (H, W, C) after each stage."""
    variables = _init_shapes(model, shape)
    _, state = jax.eval_shape(
        lambda v: model.apply(
            v, jnp.zeros(shape), train=True, capture_intermediates=True, mutable=["batch_stats"]
        ),
        variables,
    )
    last = {}
    for block, out in state["intermediates"].items():
        if block.startswith("stage"):
            last[block.split("_")[0]] = out["__call__"][0].shape[1:]
    return variables["params"], [last[f"stage{i}"] for i in range(1, 5)]


def test_resnet50_imagenet_stem_reduced_width_channels():
    model = get_backbone("resnet50", width=1 / 8, stem="imagenet")
    params, stages = _stage_outputs(model, (2, 64, 64, 3))
    # 64 -> 32 (7x7 stride 2) -> 16 (max-pool) -> stages at 16, 8, 4, 2;
    # output channels 4 * (8, 16, 32, 64).
    assert stages == [(16, 16, 32), (8, 8, 64), (4, 4, 128), (2, 2, 256)]
    assert params["stem_conv"]["kernel"].shape == (7, 7, 3, 8)
    block = params["stage1_block1"]
    assert [block[f"Conv_{i}"]["kernel"].shape for i in range(3)] == [
        (1, 1, 8, 8),
        (3, 3, 8, 8),
        (1, 1, 8, 32),
    ]
    assert block["shortcut_conv"]["kernel"].shape == (1, 1, 8, 32)
    assert params["stage4_block3"]["Conv_2"]["kernel"].shape == (1, 1, 64, 256)
    assert "shortcut_conv" not in params["stage1_block2"]
    assert len([k for k in params if k.startswith("stage")]) == 3 + 4 + 6 + 3


def test_resnet18_cifar_stem_keeps_resolution():
    model = get_backbone("resnet18", width=1 / 8, stem="cifar")
    params, stages = _stage_outputs(model, (2, 32, 32, 3))
    assert stages == [(32, 32, 8), (16, 16, 16), (8, 8, 32), (4, 4, 64)]
    assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 8)
    assert "shortcut_conv" not in params["stage1_block1"]
    assert params["stage2_block1"]["shortcut_conv"]["kernel"].shape == (1, 1, 8, 16)
    assert len([k for k in params if k.startswith("stage")]) == 8


def test_projection_head_structure():
    params = _init_shapes(ProjectionHead(), (2, 48))["params"]
    assert params["Dense_0"]["kernel"].shape == (48, 48)  # hidden defaults to the input dim
    assert params["Dense_1"]["kernel"].shape == (48, 128)
    assert "bias" not in params["Dense_0"] and "bias" not in params["Dense_1"]
    assert set(params["BatchNorm_0"]) == {"scale", "bias"}
    assert set(params["BatchNorm_1"]) == {"scale"}  # final BN: scale, no bias
    params = _init_shapes(ProjectionHead(hidden_dim=16, out_dim=8), (2, 48))["params"]
    assert params["Dense_0"]["kernel"].shape == (48, 16)
    assert params["Dense_1"]["kernel"].shape == (16, 8)


def test_get_model_composes_backbone_and_head():
    model = get_model("small_cnn", proj_dim=32, proj_hidden_dim=64, axis_name="data")
    assert isinstance(model, ContrastiveModel)
    assert isinstance(model.backbone, SmallCNN)
    assert model.backbone.axis_name == "data" and model.head.axis_name == "data"
    variables = _init_shapes(get_model("small_cnn", proj_dim=32, proj_hidden_dim=64), (2, 8, 8, 1))
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]) == {"backbone", "head"}
    assert variables["params"]["head"]["Dense_1"]["kernel"].shape == (64, 32)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown model name"):
        get_model("resnet101")
    with pytest.raises(ValueError, match="stem"):
        _init_shapes(get_backbone("resnet18", stem="tiny"), (1, 8, 8, 3))
    with pytest.raises(ValueError, match="width"):
        _init_shapes(get_backbone("small_cnn", width=0.0), (1, 8, 8, 3))


# --- BatchNorm modes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_and_variables():
    model = get_model("resnet18", width=1 / 8, stem="cifar")
    x = _images((6, 8, 8, 3))
    return model, model.init(jax.random.key(1), x, train=False), x


def _assert_blocks_start_as_identity(model, variables, x, last_bn):
    """Last BN scale of every block is 0, every other BN scale 1; so a block without a
    projection shortcut maps its (post-ReLU, non-negative) input to itself at initialisation."""
    params = variables["params"]
    blocks = [k for k in params if k.startswith("stage")]
    assert len(blocks) >= 8
    for block in blocks:
        for layer, p in params[block].items():
            if "scale" in p:
                expected = 0.0 if layer == last_bn else 1.0
                np.testing.assert_array_equal(p["scale"], expected, err_msg=f"{block}/{layer}")
    np.testing.assert_array_equal(params["stem_norm"]["scale"], 1.0)
    _, state = model.apply(variables, x, train=False, capture_intermediates=True)
    inter = state["intermediates"]
    block_in = inter["stage1_block1"]["__call__"][0]
    block_out = inter["stage1_block2"]["__call__"][0]
    assert float(jnp.max(block_in)) > 0
    np.testing.assert_array_equal(block_out, block_in)


def test_resnet18_zero_init_residual(resnet18_and_variables):
    model, variables, x = resnet18_and_variables
    backbone_vars = {k: v["backbone"] for k, v in variables.items()}
    _assert_blocks_start_as_identity(model.backbone, backbone_vars, x, "BatchNorm_1")


def test_resnet50_zero_init_residual():
    model = get_backbone("resnet50", width=1 / 8, stem="cifar")
    x = _images((2, 8, 8, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    _assert_blocks_start_as_identity(model, variables, x, "BatchNorm_2")


def test_train_mode_updates_batch_stats_and_normalises_with_the_batch(resnet18_and_variables):
    model, variables, x = resnet18_and_variables
    (_, z), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert jax.tree.structure(old) == jax.tree.structure(new)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(old), jax.tree.leaves(new)):
        assert not np.allclose(a, b), f"{jax.tree_util.keystr(path)} was not updated"
    # The final BN (scale 1, no bias) uses batch statistics: zero mean, unit variance per dimension.
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.var(0), 1.0, rtol=1e-3)
    # Running mean = 0.9 * 0 + 0.1 * batch mean, running var = 0.9 * 1 + 0.1 * batch var.
    head_old = old["head"]["BatchNorm_1"]
    head_new = new["head"]["BatchNorm_1"]
    np.testing.assert_array_equal(head_old["mean"], 0.0)
    assert np.all(np.abs(head_new["mean"]) > 0) and np.all(head_new["var"] != 1.0)


def test_eval_mode_uses_running_stats_only(resnet18_and_variables):
    model, variables, x = resnet18_and_variables
    h, z = model.apply(variables, x, train=False)  # no mutable collection needed: nothing updates
    other = x.at[1:].set(_images((5, 8, 8, 3), seed=7))
    h2, z2 = model.apply(variables, other, train=False)
    np.testing.assert_allclose(h2[0], h[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z2[0], z[0], rtol=1e-5, atol=1e-6)
    # In train mode the same row does depend on the rest of the batch.
    (_, zt), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    (_, zt2), _ = model.apply(variables, other, train=True, mutable=["batch_stats"])
    assert not np.allclose(zt[0], zt2[0], atol=1e-3)
    # ...and eval mode reads the running statistics.
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    _, z3 = model.apply({**variables, **updates}, x, train=False)
    assert not np.allclose(z3, z, atol=1e-3)


def test_bfloat16_compute_float32_params_and_outputs():
    x = _images((4, 8, 8, 1))
    model32 = get_model("small_cnn")
    model16 = get_model("small_cnn", dtype=jnp.bfloat16)
    variables = model16.init(jax.random.key(0), x, train=False)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    (h16, z16), state = model16.apply(variables, x, train=False, capture_intermediates=True)
    conv_out = state["intermediates"]["backbone"]["Conv_0"]["__call__"][0]
    assert conv_out.dtype == jnp.bfloat16
    assert h16.dtype == jnp.float32 and z16.dtype == jnp.float32
    h32, z32 = model32.apply(variables, x, train=False)
    np.testing.assert_allclose(h16, h32, rtol=5e-2, atol=5e-2)
    np.testing.assert_allclose(z16, z32, rtol=5e-2, atol=5e-2)


# --- global-batch BatchNorm under shard_map -----------------------------------------------------

_SHARDED_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from mvcl.models import BasicBlock, ContrastiveModel, ProjectionHead, ResNet, get_model

    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 8, 8, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((8, 128)), jnp.float32)

    def max_diff(a, b):
        return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
                   for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    def train_forward(model, variables, xs):
        (h, z), upd = model.apply(variables, xs, train=True, mutable=["batch_stats"])
        return h, z, upd["batch_stats"]

    def shard(model, out_specs):
        return jax.shard_map(lambda v, xs: train_forward(model, v, xs)[:len(out_specs)],
                             mesh=mesh, in_specs=(P(), P("data")), out_specs=out_specs,
                             check_vma=True)

    def tiny_resnet(axis_name=None):  # two BasicBlock stages (one with a projection shortcut)
        backbone = ResNet(stage_sizes=(1, 1), block=BasicBlock, width=1 / 16, axis_name=axis_name)
        return ContrastiveModel(backbone=backbone, head=ProjectionHead(axis_name=axis_name))

    out = {}
    for name, make in [("small_cnn", lambda **kw: get_model("small_cnn", **kw)),
                       ("resnet", tiny_resnet)]:
        single = make()
        synced = shard(make(axis_name="data"), (P("data"), P("data"), P()))
        local = shard(single, (P("data"), P("data")))  # stats differ per device: not returned
        variables = jax.jit(lambda xs: single.init(jax.random.key(0), xs, train=False))(x)

        def loss(params, forward):
            return jnp.sum(jnp.sin(forward({**variables, "params": params}, x)[1]) * w)

        ref = jax.jit(lambda v, xs: train_forward(single, v, xs))(variables, x)
        got = jax.jit(synced)(variables, x)
        grad = jax.jit(jax.grad(loss), static_argnums=1)
        g_ref = grad(variables["params"], lambda v, xs: train_forward(single, v, xs))
        g_syn = grad(variables["params"], synced)
        out[name] = {
            "features": max_diff(got[0], ref[0]),
            "projections": max_diff(got[1], ref[1]),
            "batch_stats": max_diff(got[2], ref[2]),
            "grad": max_diff(g_syn, g_ref),
            "grad_scale": max(float(np.max(np.abs(g))) for g in jax.tree.leaves(g_ref)),
            "local_projections": max_diff(jax.jit(local)(variables, x)[1], ref[1]),
        }
    print(json.dumps(out))
    """
)


def test_axis_name_gives_global_batch_norm_under_shard_map():
    env = dict(os.environ)
    flag = "--xla_force_host_platform_device_count=4"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == {"small_cnn", "resnet"}
    for name, r in results.items():
        assert r["features"] < 1e-4, (name, r)
        assert r["projections"] < 1e-4, (name, r)
        assert r["batch_stats"] < 1e-5, (name, r)
        assert r["grad"] < 1e-4 * max(1.0, r["grad_scale"]), (name, r)
        # Without axis_name each device normalises with its own 2 samples: visibly different.
        assert r["local_projections"] > 1e-2, (name, r)


def test_convnet_layers_parameters_and_resolutions():
    # stem 3x3 (C -> 32), per stage 3x3 (strided) + 3x3, then 1x1 -> 512; bias-free convs, each
    # followed by a BatchNorm (scale and bias).
    channels, layers = 1, [(32, 3)] + [(c, 3) for c in (64, 64, 128, 128)] + [(512, 1)]
    expected, c_in = 0, channels
    for c_out, k in layers:
        expected += k * k * c_in * c_out + 2 * c_out
        c_in = c_out
    model = get_backbone("convnet")
    variables = _init_shapes(model, (1, 28, 28, channels))
    assert _num_params(variables["params"]) == expected
    _, state = jax.eval_shape(
        lambda v: model.apply(
            v,
            jnp.zeros((2, 28, 28, 1)),
            train=True,
            capture_intermediates=True,
            mutable=["batch_stats", "intermediates"],
        ),
        variables,
    )
    sizes = [v["__call__"][0].shape[1:] for k, v in state["intermediates"].items() if "Conv" in k]
    assert sizes == [
        (28, 28, 32),
        (14, 14, 64),
        (14, 14, 64),
        (7, 7, 128),
        (7, 7, 128),
        (7, 7, 512),
    ]


# --- loop-friendly convolution (gradient caching on the CPU) ----------------------------------

CONV_CASES = [  # (kernel, stride, padding, input side)
    (3, 1, ((1, 1), (1, 1)), 9),
    (3, 2, ((1, 1), (1, 1)), 9),
    (3, 2, ((1, 1), (1, 1)), 8),
    (1, 2, ((0, 0), (0, 0)), 7),
    (7, 2, ((3, 3), (3, 3)), 11),
    (3, 1, "SAME", 6),
    (3, 2, "VALID", 10),
    (2, 3, ((0, 1), (2, 0)), 10),
]


@pytest.mark.parametrize("kernel, stride, padding, side", CONV_CASES)
def test_loop_friendly_convolution_equals_xla_value_and_gradients_in_float64(
    x64, kernel, stride, padding, side
):
    """Its value and both gradients equal lax.conv_general_dilated's to float64 rounding, at the
    top level and inside a scan (where it is used)."""
    from jax import lax

    from mvcl.models import loop_conv as conv

    rng = np.random.default_rng(kernel * 10 + stride)
    xs = jnp.asarray(rng.standard_normal((2, 3, side, side + 1, 4)))
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 4, 5)))
    dn = lax.conv_dimension_numbers(xs.shape[1:], w.shape, ("NHWC", "HWIO", "NHWC"))

    def loss(fn, w, x):
        y = fn(x, w, (stride, stride), padding, dimension_numbers=dn)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape))

    def scanned(fn):
        def body(total, x):
            value, grads = jax.value_and_grad(functools.partial(loss, fn), argnums=(0, 1))(w, x)
            return total + value, grads

        return jax.jit(lambda xs: lax.scan(body, 0.0, xs))(xs)

    ours, theirs = scanned(conv.conv_general_dilated), scanned(lax.conv_general_dilated)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(b))))
    top = jax.grad(functools.partial(loss, conv.conv_general_dilated), argnums=(0, 1))(w, xs[0])
    np.testing.assert_allclose(top[0], theirs[1][0][0], rtol=1e-12, atol=1e-10)


def test_loop_friendly_convolution_only_inside_its_block_and_only_where_it_applies(x64):
    from jax import lax

    from mvcl.models import layers
    from mvcl.models import loop_conv as conv

    assert (
        conv.current() is None and layers.conv(4, 3, dtype=jnp.float32).conv_general_dilated is None
    )
    with conv.loop_friendly():
        assert conv.current() is conv.conv_general_dilated
        assert (
            layers.conv(4, 3, dtype=jnp.float32).conv_general_dilated is conv.conv_general_dilated
        )
    assert conv.current() is None
    # Feature groups are not covered: XLA's convolution, with its own gradients.
    x, w = (
        jnp.ones((1, 5, 5, 4)),
        jnp.asarray(np.random.default_rng(0).standard_normal((3, 3, 2, 4))),
    )
    kwargs = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
    ours = jax.grad(lambda w: jnp.sum(conv.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)))
    theirs = jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)))
    np.testing.assert_array_equal(ours(w), theirs(w))
