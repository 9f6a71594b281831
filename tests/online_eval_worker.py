"""The online evaluation of one tiny run on several meshes, or as one of two processes.

    python tests/online_eval_worker.py devices N [N ...]   # simulated CPU devices: max(N)
    python tests/online_eval_worker.py process PORT PROCESS_ID OUT.json   # 2 processes x 2 devices

``devices``: for each N, the train state of `case` is created on a mesh of the first N devices
(as a run places it) and evaluated by an `mvcl.train.online_eval.OnlineEvaluator` on that mesh;
prints one JSON line ``{"devices": N, "results": {...}}`` each. ``process``: the same on a mesh
of the 4 devices of both processes; writes the results to OUT.json. tests/test_online_eval.py
compares them with one device.
"""

import json
import os
import sys


def case():
    """The config of the tiny run: 50 fake 8x8 digits images, a narrow CNN, subsets of 41 train
    and 23 test images (46 view rows) and feature batches of 10: sizes no device count here
    divides, so every padding path runs."""
    from mvcl import configs

    config = configs.load("digits", "fake=True,width=0.125")
    config.model.proj_dim = 16
    config.dataset.fake_num_examples = 50
    config.batch_size = 8
    config.eval.online_train_examples = 41
    config.eval.online_test_examples = 23
    config.eval.batch_size = 10
    config.eval.knn_k = 5
    config.eval.feature_dtype = "float32"
    return config


def evaluate_on(mesh):
    from mvcl.train import online_eval
    from mvcl.train.state import build_model, create_train_state, make_optimizer
    from mvcl.train.step import AXIS

    config = case()
    model = build_model(config, axis_name=AXIS)
    state = create_train_state(config, model, make_optimizer(config, 1), mesh, 1)
    return online_eval.OnlineEvaluator(config, model, mesh).evaluate(state.variables())


def main() -> None:
    mode = sys.argv[1]
    if mode == "devices":
        counts = [int(a) for a in sys.argv[2:]]
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} "
            f"--xla_force_host_platform_device_count={max(counts)}"
        )
        from mvcl import parallel

        for count in counts:
            results = evaluate_on(parallel.make_mesh(count))
            print(json.dumps({"devices": count, "results": results}), flush=True)
    elif mode == "process":
        port, process_id, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        import jax

        jax.config.update("jax_num_cpu_devices", 2)
        from mvcl import parallel

        parallel.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
        assert jax.process_count() == 2 and jax.device_count() == 4
        results = evaluate_on(parallel.make_mesh())
        with open(out, "w", encoding="utf-8") as f:
            json.dump(results, f)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
