r"""Evaluates the newest checkpoint of a pretraining run: linear probe, kNN, geometry.

    mvcl-evaluate --workdir=workdirs/digits_mv_dhel_v4
    mvcl-evaluate --workdir=... --config=digits \
        --config.eval.knn_k=50

Without ``--config`` the run's own config (``<workdir>/config.json``) is used. Results are
printed and appended to ``<workdir>/metrics.jsonl`` and the TensorBoard events as ``eval/*``.
"""

from absl import flags

from mvcl import configs, train
from mvcl.train import cli

_CONFIG = configs.define_flag(
    "config", None, "Config name[:args] or .py file; default: the config saved in the workdir."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv)
    train.evaluate_workdir(_WORKDIR.value, _CONFIG.value)


def run() -> None:
    """The console script ``mvcl-evaluate`` (also ``python -m mvcl.evaluate``)."""
    cli.show_in_help(_CONFIG, _WORKDIR)
    cli.run(main)


if __name__ == "__main__":
    run()
