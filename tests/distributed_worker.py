"""One of two processes computing global-batch losses with ``jax.distributed`` on 127.0.0.1.

``python tests/distributed_worker.py PORT PROCESS_ID OUT.json``: 2 processes × 2 simulated CPU
devices. Each process holds half the instances of the same global batch; the losses run over a
mesh of all 4 devices. Writes the loss and the full gradient (gathered from both processes) for
mv_infonce and mv_dhel on the gather and ring backends.
"""

import json
import sys

port, process_id, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)

import mvcl  # noqa: E402
from mvcl import parallel  # noqa: E402

parallel.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())

N, V, D = 12, 3, 5
z = np.random.default_rng(0).standard_normal((N, V, D))  # the same global batch everywhere
mesh = parallel.make_mesh()
half = N // 2
z_global = jax.make_array_from_process_local_data(
    parallel.batch_sharding(mesh), z[process_id * half : (process_id + 1) * half], z.shape
)
results = {}
for name in ("mv_infonce", "mv_dhel"):
    for backend in ("gather", "ring"):
        f = parallel.shard_loss(mvcl.losses.get(name), mesh, backend=backend, temperature=0.4)
        value, grad = jax.value_and_grad(f)(z_global)
        grad = multihost_utils.process_allgather(grad, tiled=True)
        results[f"{name}/{backend}"] = {"loss": float(value), "grad": np.asarray(grad).tolist()}
with open(out, "w") as f:
    json.dump(results, f)
