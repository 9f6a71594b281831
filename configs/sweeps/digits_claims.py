"""The paper's claims at laptop scale: digits, 5 multi-view losses x V in {2, 4, 6, 8}.

    mvcl-sweep --config=sweeps/digits_claims \
        --workdir=workdirs/sweeps/digits_claims --outdir=experiments/results/digits_claims

Every cell is the bundled digits setup (``--config=digits``: small CNN, batch 256, SGD lr 0.5,
τ = 0.5) for the same number of epochs (20 by default, ``epochs=E``), followed by the evaluation
(linear probe, kNN, geometry). The views block is 20 cells; a small batch-size block adds MV-DHEL
and PWE at V = 4 with batches of 64 and 128. About 40 minutes on a 2-core CPU (see
``experiments/results/digits_claims/README.md`` for the measured time and the results).
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common
from mvcl.configs.sweeps import common as sweeps

LOSSES = ("mv_dhel", "mv_infonce", "pwe", "avg", "pvc")


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **sweeps.sweep_args(epochs=20))
    config = sweeps.sweep_config("digits_claims", "digits")
    config.grid.views = sweeps.block(LOSSES, views=(2, 4, 6, 8), batch_sizes=(256,))
    config.grid.batch = sweeps.block(("mv_dhel", "pwe"), views=(4,), batch_sizes=(64, 128))
    config.overrides.num_epochs = args.epochs
    config.overrides.checkpoint_every_steps = 25
    config.overrides.keep_checkpoints = 2
    config.loss_cost.ns = (256, 1024)
    return sweeps.apply_args(config, args)
