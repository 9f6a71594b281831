"""The paper's claims with error bars: Fashion-MNIST, 3 losses x V in {2, 4, 8} x 3 seeds.

    mvcl-sweep --config=sweeps/fashion_mnist_claims \
        --workdir=workdirs/sweeps/fashion_mnist_claims \
        --outdir=experiments/results/fashion_mnist_claims

MV-DHEL against MV-InfoNCE and PWE at V = 2, 4 and 8 views, 256 images per batch, seeds 0, 1
and 2 of every cell: 27 runs, each the ``fashion_mnist`` config setup (``convnet``
backbone, crops of scale [0.2, 1], flips, brightness/contrast jitter, SGD lr 0.5, τ = 0.5) for
the same number of epochs, then its evaluation (linear probe and kNN on backbone and projector
features, raw-pixel baselines, effective rank). The report gives mean ± standard deviation over
the seeds. Cells run seed by seed (all 9 at seed 0 first). Rerunning the command resumes:
finished cells are skipped and an interrupted cell continues from its checkpoint (every 100
steps), so the sweep can run across sessions. Every done cell's ``result.json`` is also kept in
``<outdir>/cells/``, committed with the results, so the sweep continues on another machine too.
No test-set embeddings are kept (``save_embeddings = False``): 10,000 features of 256 + 128
dimensions per cell would be about 200 MB for the sweep; ``result.json`` holds every metric the
report and plots use.

Arguments: ``epochs=E`` (default 4), ``width=W`` (backbone channel multiplier, default 0.5),
``seeds=S`` (default 3), ``more_losses=True`` (adds AVG and PVC: 45 runs, 5/3 of the time),
``fake=True`` (smoke version).

Budget (about 8 hours of a quiet 2-core CPU). XLA counts 18.5, 37.1 and 74.2 GFLOP for a
training step of the width-0.5 backbone at V = 2, 4 and 8 (``experiments/bench_step.py
--config=fashion_mnist:width=0.5,views=V --steps=0``): cost grows linearly with V,
so one seed of one loss at V = 2, 4 and 8 costs 3.5 times its V = 4 run, and the sweep
3 losses x 3 seeds x 3.5 = 31.5 V = 4 runs of 4 epochs x 234 steps: 273 TFLOP. The digits CNN
on the same 28x28 images (105 GFLOP per step) ran at 2.0 s per step on this machine when quiet,
52 GFLOP/s; at that rate the training is 5.8 hours, and at 40 GFLOP/s (an assumed lower
efficiency of the narrower layers, not measured) 7.6 hours. The evaluation of every cell
(features of 70,000 images, linear probes and kNN on 60,000) adds about 1.5 minutes, 40
minutes for 27 cells: 6.5 to 8.3 hours in all. A busier machine takes longer; the cells and
their budget do not change, only the wall time. ``more_losses=True`` multiplies it by 5/3;
``epochs=3`` by 3/4.
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common
from mvcl.configs.sweeps import common as sweeps

LOSSES = ("mv_dhel", "mv_infonce", "pwe")
MORE_LOSSES = ("avg", "pvc")
VIEWS = (2, 4, 8)
RAW_PIXELS = {"knn_k20_cosine": 0.845, "logistic_regression_standardised": 0.836}


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(
        arg, **sweeps.sweep_args(seeds=3, epochs=4, width=0.5, more_losses=False)
    )
    config = sweeps.sweep_config("fashion_mnist_claims", "fashion_mnist")
    config.base_arg = f"width={args.width}"
    losses = LOSSES + (MORE_LOSSES if args.more_losses else ())
    config.grid.views = sweeps.block(losses, views=VIEWS, batch_sizes=(256,))
    config.save_embeddings = False  # see the module docstring
    config.overrides.num_epochs = args.epochs
    config.overrides.checkpoint_every_steps = 100
    config.overrides.keep_checkpoints = 2
    config.overrides.log_every_steps = 20
    config.loss_cost.ns = (256, 1024)
    config = sweeps.apply_args(config, args)
    # Seed-major order (blocks run in name order): every loss x V at seed 0, then at seed 1, ...;
    # a sweep stopped early has whole seeds of every cell rather than some losses only.
    views = config.grid.views
    config.grid = config_dict.ConfigDict(
        {f"seed{s}": dict(views.to_dict(), seeds=(s,)) for s in views.seeds}
    )
    return config
