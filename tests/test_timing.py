"""mvcl.timing: the timer of the loss benchmark and the studies' kernel costs (no timing claims)."""

import jax
import jax.numpy as jnp
import numpy as np

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
