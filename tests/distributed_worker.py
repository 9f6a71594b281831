"""One of two processes computing global-batch losses with ``jax.distributed`` on 127.0.0.1.

``python tests/distributed_worker.py PORT PROCESS_ID OUT.json``: 2 processes × 2 simulated CPU
devices. Each process holds half the instances of the same global batch; the losses run over a
mesh of all 4 devices. Writes the loss and the full gradient (gathered from both processes) for
mv_infonce and mv_dhel on the gather and ring backends, and the evaluation's feature bank of a
small encoder over 37 fake images (`eval_case`), extracted with the batches sharded over both
processes (each reads only its devices' rows).
"""

import json
import sys

import numpy as np


def eval_case():
    """(model, variables, source, indices) of the feature-extraction check; the test process
    builds the same and extracts on one device."""
    import jax

    from mvcl.configs import digits
    from mvcl.train.state import build_model

    config = digits.get_config("fake=True,width=0.125")
    model = build_model(config, axis_name=None)
    variables = model.init(jax.random.key(3), np.zeros((2, 8, 8, 1), np.float32), train=False)
    rng = np.random.default_rng(4)
    source = [
        {"image": rng.integers(0, 256, (8, 8, 1), np.uint8), "label": i % 10} for i in range(40)
    ]
    indices = np.arange(37)[::-1]  # not a multiple of the batch: the last batch is padded
    return model, variables, source, indices


def main(port: str, process_id: int, out: str) -> None:
    import jax
    from jax.experimental import multihost_utils

    jax.config.update("jax_num_cpu_devices", 2)

    import mvcl
    from mvcl import evaluation, parallel

    parallel.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    assert jax.process_count() == 2 and jax.device_count() == 4, (
        jax.process_count(),
        jax.devices(),
    )
    mesh = parallel.make_mesh()

    # Features first, in float32 (the model's dtype), then the losses in float64.
    model, variables, source, indices = eval_case()
    bank, labels = evaluation.extract_features(
        model, variables, source, indices, mesh=mesh, crop_size=8, batch_size=8, dtype="float32"
    )
    results = {
        "features": {k: v.tolist() for k, v in bank.items()},
        "labels": labels.tolist(),
    }

    jax.config.update("jax_enable_x64", True)
    n, v, d = 12, 3, 5
    z = np.random.default_rng(0).standard_normal((n, v, d))  # the same global batch everywhere
    half = n // 2
    z_global = jax.make_array_from_process_local_data(
        parallel.batch_sharding(mesh), z[process_id * half : (process_id + 1) * half], z.shape
    )
    for name in ("mv_infonce", "mv_dhel"):
        for backend in ("gather", "ring"):
            f = parallel.shard_loss(mvcl.losses.get(name), mesh, backend=backend, temperature=0.4)
            value, grad = jax.value_and_grad(f)(z_global)
            grad = multihost_utils.process_allgather(grad, tiled=True)
            results[f"{name}/{backend}"] = {"loss": float(value), "grad": np.asarray(grad).tolist()}
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
