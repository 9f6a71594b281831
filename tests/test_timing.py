"""mvcl.timing: the timer of the loss benchmark and the studies' loss costs (no timing claims)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvcl import losses, timing


def test_time_value_and_grad_counts_and_compiles_the_gradient():
    fn = losses.spec("mv_dhel").bind(temperature=0.5)
    z = jnp.asarray(np.random.default_rng(0).standard_normal((6, 3, 4)), jnp.float32)
    out = timing.time_value_and_grad(fn, z, repeats=4)
    assert len(out.times_s) == 4 and all(t > 0 for t in out.times_s)
    assert out.median_s == float(np.median(out.times_s))
    assert out.temp_bytes is None or out.temp_bytes >= 0
    value, grad = out.compiled(z)
    ref_value, ref_grad = jax.value_and_grad(fn)(z)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
    # A budget far below one call's time leaves one timed call; no warm-up times the first only.
    assert len(timing.time_value_and_grad(fn, z, repeats=4, budget_s=0.0).times_s) == 1
    cold = timing.time_value_and_grad(fn, z, warmup=False)
    assert cold.times_s == (cold.first_call_s,)


def test_loss_benchmark_keeps_each_rows_fastest_pass():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "experiments" / "bench_losses.py"
    module_spec = importlib.util.spec_from_file_location("bench_losses", path)
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)

    def row(loss, time_s=None, **extra):
        r = dict(loss=loss, backend="blockwise", n=8, v=2, **extra)
        return r if time_s is None else dict(r, time_s=time_s)

    first = [row("pwe", 2.0, local_gflops=100.0), row("avg", 1.0), row("dcl", error="boom")]
    second = [row("pwe", 1.5, local_gflops=200.0), row("avg", 3.0), row("dcl", error="again")]
    best = {r["loss"]: r for r in bench.best_of([first, second])}
    assert best["pwe"]["time_s"] == 1.5 and best["pwe"]["local_gflops"] == 200.0
    assert best["pwe"]["round_times_s"] == [2.0, 1.5]
    assert best["avg"]["time_s"] == 1.0 and best["avg"]["round_times_s"] == [1.0, 3.0]
    assert best["dcl"]["error"] == "boom" and "time_s" not in best["dcl"]


def test_matmul_rate_and_time_calls():
    rates = timing.matmul_rate(repeats=2, shapes=("square_2048",), calls=2)
    assert set(rates) == {"square_2048", "gflops"}
    assert 0 < rates["gflops"] == rates["square_2048"] < 1e7
    highest = timing.matmul_rate(
        repeats=1, shapes=("rows_8192_d128",), precision=jax.lax.Precision.HIGHEST
    )
    assert highest["gflops"] > 0
    assert timing.time_calls(lambda: jnp.ones(3), calls=3) > 0
    with pytest.raises(ValueError, match="calls must be >= 1"):
        timing.time_calls(lambda: None, calls=0)
