"""The divergence guard inside the jitted step, on this process's (simulated) devices.

``python tests/guard_worker.py MICRO_BATCH`` (``0``: no gradient caching) builds the train step
of a tiny config twice, once as it is and once with a NaN injected into the embeddings of one
device's shard (the second device), and prints one JSON line:

* ``bad_finite``: the ``finite`` metric of the poisoned step (must be False);
* ``unchanged``: whether params, batch_stats and opt_state after the poisoned step are bitwise
  those before it;
* ``step``: the step counter before and after the poisoned step;
* ``good_finite`` and ``changed``: the same for a clean step from the same state (it is applied);
* ``devices``: the mesh size.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from run_helpers import tiny_config

from mvcl import parallel
from mvcl.train import state as state_lib
from mvcl.train import step as step_lib
from mvcl.train.state import learning_rate_schedule, make_optimizer

micro_batch = int(sys.argv[1]) or None
devices = jax.device_count()
config = tiny_config(
    batch_size=2 * devices,
    dataset__fake_num_examples=2 * devices,
    train__micro_batch=micro_batch,
)
mesh = parallel.make_mesh()
model = state_lib.build_model(config, axis_name=step_lib.AXIS)
tx = make_optimizer(config, 10)
schedule = learning_rate_schedule(config, 10)

clean = step_lib.make_train_step(config, model, tx, schedule, mesh)
make_loss_fn = step_lib.make_loss_fn


def poisoned_loss_fn(config):
    loss_fn = make_loss_fn(config)

    def poisoned(z):
        poison = jnp.where(jax.lax.axis_index(step_lib.AXIS) == 1, jnp.nan, 0.0)
        return loss_fn(z + poison.astype(z.dtype))

    return poisoned


step_lib.make_loss_fn = poisoned_loss_fn
poisoned = step_lib.make_train_step(config, model, tx, schedule, mesh)
step_lib.make_loss_fn = make_loss_fn

rng = np.random.default_rng(0)
shape = tuple(config.dataset.fake_shape)
images = rng.integers(0, 256, (config.batch_size, *shape), dtype=np.uint8)
images = jax.device_put(images, parallel.batch_sharding(mesh, step_lib.AXIS))


def fresh_state():
    return state_lib.create_train_state(config, model, tx, mesh, channels=shape[-1])


def host(state):
    return jax.device_get((state.params, state.batch_stats, state.opt_state))


def same(a, b) -> bool:
    return all(
        np.array_equal(x, y, equal_nan=True) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


before = fresh_state()
before_host, before_step = host(before), int(before.step)
after_bad, metrics_bad = poisoned(before, images)  # `before` is donated
after_good, metrics_good = clean(fresh_state(), images)
print(
    json.dumps(
        {
            "devices": mesh.size,
            "bad_finite": bool(metrics_bad["finite"]),
            "unchanged": same(host(after_bad), before_host),
            "step": [before_step, int(after_bad.step)],
            "good_finite": bool(metrics_good["finite"]),
            "changed": not same(host(after_good), before_host),
            "good_loss": float(metrics_good["loss"]),
        }
    )
)
