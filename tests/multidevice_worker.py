"""Runs the losses sharded over simulated CPU devices and prints their errors against one device.

Started by tests/test_multidevice.py in a fresh interpreter (the device count must be set before
JAX starts): ``python tests/multidevice_worker.py MODE DEVICES [DEVICES ...] [--cases=I,J,...]``.
Prints one JSON line per case with the loss and gradient errors relative to the dense
single-device result (float64 unless the line says otherwise) and the spread of the loss over the
devices.

Modes:
  grid     every multi-device test case of the loss records (mvcl.losses.LossSpec.cases) ×
           {gather, ring} × V ∈ {2, 3, 5} × {float64, float32 (V < 5)} on every device count
           given but 1; one device (the ring of one) only at the first V of three views or more
           (two for a two-view loss) in float64, as `single_device_too` says. With ``--cases``
           only those entries of CASES (the tests split the grid to balance workers).
           The first line is ``{"num_cases": len(CASES)}``.
  recipes  the ways to call a loss on many devices: mvcl.parallel.shard_loss, jax.pmap with the
           documented gradient recipe, and plain jax.jit on NamedSharding-ed inputs.
  errors   the error message of each misuse that needs several devices (one JSON line each).
  memory   compiled per-device temporary memory of mv_infonce's value and gradient (float32,
           D = 128) at N·V and 2·N·V for dense (1 device), blockwise (1) and ring (all devices).
"""

import json
import os
import sys

mode = sys.argv[1]
counts = [int(a) for a in sys.argv[2:] if not a.startswith("--")]
selected = next((a.removeprefix("--cases=") for a in sys.argv[2:] if a.startswith("--cases=")), "")
# Without LLVM's optimisations: the grid's tiny programs are mostly compile time (the HLO
# programs, what mvcl builds, are the same; compared with each other, not with a fixed value).
os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(counts)}"
    " --xla_backend_optimization_level=0"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

jax.config.update("jax_enable_x64", True)

import mvcl  # noqa: E402
from mvcl import parallel  # noqa: E402

# The multi-device test cases of every loss's record, as (registry name, options).
CASES = [(spec.name, case.kwargs) for spec, case in mvcl.losses.registry.MULTIDEVICE_CASES]
# A 5-row tile cuts every ring block into several padded tiles, so the tiling is exercised too.
BACKENDS = {"gather": "gather", "ring": mvcl.backends.get("ring", tile=5)}
N, D = 24, 6  # N divides over 1, 3 and 8 devices


def loss_kwargs(name, options):
    return mvcl.losses.spec(name).kwargs(temperature=0.3, **options)


def every_device(loss, mesh, backends, **kwargs):
    """One jitted function of z: for each backend, every device's copy of the loss (devices,) and
    the gradient of their mean (all backends in one program: one compilation, not one each)."""

    def mean_over_devices(backend):
        per_device = jax.shard_map(
            lambda z: loss(z, axis_name="data", backend=backend, **kwargs)[None],
            mesh=mesh,
            in_specs=P("data"),
            out_specs=P("data"),
        )

        def mean(z):
            values = per_device(z)
            return jnp.mean(values), values

        return mean

    def value_and_grad(z):
        results = []
        for backend in backends:
            (_, values), grad = jax.value_and_grad(mean_over_devices(backend), has_aux=True)(z)
            results.append((values, grad))
        return results

    return jax.jit(value_and_grad)


def reference(loss, **kwargs):
    """The dense single-device loss and gradient, jitted (eager dispatch is many times slower)."""
    return jax.jit(jax.value_and_grad(lambda z: loss(z, **kwargs)))


def report(ref, ref_grad, values, grad, **case):
    values, ref = np.asarray(values), float(ref)
    scale = max(1.0, float(np.max(np.abs(ref_grad))))
    case.update(
        loss_err=float(np.max(np.abs(values - ref))) / max(1.0, abs(ref)),
        grad_err=float(np.max(np.abs(np.asarray(grad) - np.asarray(ref_grad)))) / scale,
        spread=float(np.ptp(values)),
    )
    print(json.dumps(case), flush=True)


def single_device_too(views, dtype, two_view):
    """Whether a (V, dtype) entry of the grid also runs on one device: a ring of one device
    goes through the same code whatever V and dtype, so one entry per case covers it."""
    return dtype == "float64" and views == (2 if two_view else 3)


def grid():
    print(json.dumps({"num_cases": len(CASES)}), flush=True)
    indices = [int(i) for i in selected.split(",")] if selected else range(len(CASES))
    for index in indices:
        name, options = CASES[index]
        loss, kwargs = mvcl.losses.get(name), loss_kwargs(name, options)
        rng = np.random.default_rng(index)
        for v in [v for v in (2, 3, 5) if mvcl.losses.spec(name).accepts_views(v)]:
            z64 = rng.standard_normal((N, v, D))
            for dtype in ("float64", "float32") if v < 5 else ("float64",):
                z = jnp.asarray(z64, dtype)
                ref, ref_grad = reference(loss, **kwargs)(z)
                two_view = mvcl.losses.spec(name).two_view
                for count in counts:
                    if count == 1 and not single_device_too(v, dtype, two_view):
                        continue
                    mesh = parallel.make_mesh(count)
                    results = every_device(loss, mesh, list(BACKENDS.values()), **kwargs)(z)
                    for backend_name, (values, grad) in zip(BACKENDS, results):
                        report(
                            ref,
                            ref_grad,
                            values,
                            grad,
                            case=index,
                            loss=name,
                            options=options,
                            backend=backend_name,
                            devices=count,
                            views=v,
                            dtype=dtype,
                        )


def recipes():
    z = jnp.asarray(np.random.default_rng(1).standard_normal((N, 3, D)))
    for name in ("mv_infonce", "mv_dhel", "pvc"):
        loss, kwargs = mvcl.losses.get(name), loss_kwargs(name, {})
        ref, ref_grad = reference(loss, **kwargs)(z)
        for count in counts:
            mesh = parallel.make_mesh(count)
            for backend_name, backend in BACKENDS.items():
                case = dict(loss=name, devices=count, backend=backend_name)
                value, grad = jax.value_and_grad(
                    parallel.shard_loss(loss, mesh, backend=backend, **kwargs)
                )(z)
                report(ref, ref_grad, [value], grad, recipe="shard_loss", **case)

                # The pmap recipe of the README: every device differentiates its own copy of the
                # global loss, so the sum of the P copies' gradients is divided by P.
                def pmap_loss(z_local):
                    return loss(z_local, axis_name="data", backend=backend, **kwargs)

                local = z.reshape(count, N // count, *z.shape[1:])
                values = jax.pmap(pmap_loss, axis_name="data", devices=list(mesh.devices))(local)
                grads = jax.pmap(
                    lambda z_local: jax.grad(pmap_loss)(z_local) / jax.lax.axis_size("data"),
                    axis_name="data",
                    devices=list(mesh.devices),
                )(local)
                report(ref, ref_grad, values, grads.reshape(z.shape), recipe="pmap", **case)

            # No axis_name: plain jit over inputs sharded on the batch axis (the partitioner's job).
            sharded = jax.device_put(z, parallel.batch_sharding(mesh))
            for backend in ("dense", "blockwise"):
                value, grad = jax.jit(
                    jax.value_and_grad(lambda z: loss(z, backend=backend, **kwargs))
                )(sharded)
                report(
                    ref,
                    ref_grad,
                    [value],
                    grad,
                    recipe="jit_sharded_input",
                    loss=name,
                    devices=count,
                    backend=backend,
                )


def memory():
    v, d = 4, 128
    for backend, count in (("dense", 1), ("blockwise", 1), ("ring", max(counts))):
        mesh = parallel.make_mesh(count)
        for n in (384 * count, 768 * count):
            z = jax.ShapeDtypeStruct((n, v, d), jnp.float32)
            if count == 1:
                f = lambda z: mvcl.losses.mv_infonce(z, temperature=0.5, backend=backend)
            else:
                f = parallel.shard_loss(
                    mvcl.losses.mv_infonce, mesh, backend=backend, temperature=0.5
                )
            stats = jax.jit(jax.value_and_grad(f)).lower(z).compile().memory_analysis()
            print(
                json.dumps(
                    dict(
                        backend=backend,
                        devices=count,
                        rows=n * v,
                        temp_bytes=int(stats.temp_size_in_bytes),
                    )
                ),
                flush=True,
            )


def errors():
    mesh = parallel.make_mesh(max(counts))
    f = parallel.shard_loss(mvcl.losses.mv_dhel, mesh, temperature=0.5)
    try:
        f(jnp.ones((8, 2, 4)))
    except ValueError as e:
        print(json.dumps(dict(case="shard_loss", error=str(e))), flush=True)


if __name__ == "__main__":
    {"grid": grid, "recipes": recipes, "memory": memory, "errors": errors}[mode]()
