"""Global-batch losses on simulated CPU devices (1, 3, 8) and across 2 processes.

Each test starts a fresh interpreter (the device count is fixed when JAX starts) running
tests/multidevice_worker.py or tests/distributed_worker.py, and checks what it reports against
the dense single-device result.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mvcl
from mvcl import parallel

HERE = Path(__file__).parent
TOLERANCE = {"float64": 1e-9, "float32": 1e-5}


def run_worker(*args, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(HERE / "multidevice_worker.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def assert_all_match(rows):
    bad = [
        r
        for r in rows
        if not (
            r["loss_err"] <= TOLERANCE[r.get("dtype", "float64")]
            and r["grad_err"] <= TOLERANCE[r.get("dtype", "float64")]
            and r["spread"] <= TOLERANCE[r.get("dtype", "float64")]
        )
    ]
    assert not bad, f"{len(bad)} of {len(rows)} cases differ from one device: {bad[:5]}"


def grid_groups(cases, cost=10):
    """The grid's cases (multidevice_worker.CASES: the records' multi-device test cases, in
    registry order) in consecutive groups of at least ``cost`` (V, dtype) pairs (5 for a
    multi-view case, 2 for a two-view one; the last group may be smaller), one worker process
    each, so that pytest-xdist can spread them; each group runs on 3 and 8 devices (and on 1,
    see ``multidevice_worker.single_device_too``)."""
    groups, group, total = [], [], 0
    for index, (spec, _) in enumerate(cases):
        group.append(index)
        total += 2 if spec.two_view else 5
        if total >= cost:
            groups.append(tuple(group))
            group, total = [], 0
    return groups + ([tuple(group)] if group else [])


GRID_GROUPS = grid_groups(mvcl.losses.registry.MULTIDEVICE_CASES)
GRID_DEVICES = {1, 3, 8}


@pytest.mark.parametrize("cases", GRID_GROUPS, ids=lambda g: "cases" + "-".join(map(str, g)))
def test_every_loss_and_backend_equals_one_device(cases):
    selection = "--cases=" + ",".join(map(str, cases))
    header, *rows = run_worker("grid", *sorted(GRID_DEVICES), selection)
    assert sorted(sum(GRID_GROUPS, ())) == list(range(header["num_cases"])), "a case is untested"
    assert {r["case"] for r in rows} == set(cases)
    assert {r["devices"] for r in rows} == GRID_DEVICES
    assert {r["backend"] for r in rows} == {"gather", "ring"}
    for case in cases:
        mine = [r for r in rows if r["case"] == case]
        multi_view = mine[0]["loss"] not in mvcl.losses.TWO_VIEW
        assert {r["views"] for r in mine} == ({2, 3, 5} if multi_view else {2})
        assert {r["dtype"] for r in mine} == {"float64", "float32"}
        # (V, dtype) entries: (2, 3) x (f64, f32) + (5, f64) or (2,) x (f64, f32), each on 3 and
        # 8 devices, one of them on 1 device too; x 2 backends.
        entries = 5 if multi_view else 2
        assert len(mine) == 2 * ((len(GRID_DEVICES) - 1) * entries + 1)
        assert {(r["views"], r["dtype"]) for r in mine if r["devices"] == 1} == {
            (3 if multi_view else 2, "float64")
        }
    assert_all_match(rows)


def test_shard_loss_pmap_recipe_and_sharded_jit_equal_one_device():
    rows = run_worker("recipes", 3, 8)
    assert {r["recipe"] for r in rows} == {"shard_loss", "pmap", "jit_sharded_input"}
    assert {r["devices"] for r in rows} == {3, 8}
    assert_all_match(rows)


def test_blockwise_and_ring_memory_is_linear_dense_is_quadratic():
    rows = run_worker("memory", 3)
    growth = {}
    for backend in ("dense", "blockwise", "ring"):
        small, large = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["rows"])
        assert large["rows"] == 2 * small["rows"]
        growth[backend] = large["temp_bytes"] / small["temp_bytes"]
    assert growth["dense"] > 3.5, growth
    assert growth["blockwise"] <= 2.1, growth
    assert growth["ring"] <= 2.1, growth


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    port, env = free_port(), dict(os.environ, JAX_PLATFORMS="cpu")
    outs = [tmp_path / f"process{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "distributed_worker.py"), str(port), str(i), str(out)],
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
    assert results[0].keys() == {
        "mv_infonce/gather",
        "mv_infonce/ring",
        "mv_dhel/gather",
        "mv_dhel/ring",
        "features",
        "labels",
    }

    # The evaluation's features, extracted with the batches sharded over both processes, equal
    # one device's, and both processes hold the whole bank.
    from distributed_worker import eval_case

    from mvcl import evaluation

    model, variables, source, indices = eval_case()
    bank, labels = evaluation.extract_features(
        model,
        variables,
        source,
        indices,
        mesh=parallel.make_mesh(1),
        crop_size=8,
        batch_size=8,
        dtype="float32",
    )
    assert labels.tolist() == [i % 10 for i in indices]
    for result in results:
        assert result["labels"] == labels.tolist()
        assert result["features"].keys() == bank.keys() == {"backbone", "projector"}
        for name, features in bank.items():
            np.testing.assert_allclose(result["features"][name], features, rtol=1e-5, atol=1e-6)

    z = np.random.default_rng(0).standard_normal((12, 3, 5))  # as in the worker
    with jax.enable_x64(True):
        for key, got in results[0].items():
            if key in ("features", "labels"):
                continue
            loss = mvcl.losses.get(key.split("/")[0])
            ref, ref_grad = jax.value_and_grad(lambda z: loss(z, temperature=0.4))(z)
            assert abs(got["loss"] - float(ref)) < 1e-9, key
            np.testing.assert_allclose(got["grad"], ref_grad, atol=1e-9, err_msg=key)
            assert results[1][key]["loss"] == got["loss"], key  # both processes agree
