"""What every sweep config shares (``mvcl-sweep --config=sweeps/<name>``).

A sweep config is a tiny program, like a pretraining config::

    def get_config(arg=None):
        args = common.parse_arg(arg, **sweeps.sweep_args())
        config = sweeps.sweep_config("cifar10", "cifar10")
        config.grid.main = sweeps.block(["mv_dhel", "pwe"], views=[2, 4], batch_sizes=[256])
        return sweeps.apply_args(config, args)

Fields (see `mvcl.studies`): ``base`` / ``base_arg`` (the pretraining config, named as for
``--config``, see `mvcl.configs.path`, and extra arguments), ``grid`` (named blocks of losses x
views x batch sizes x seeds), ``overrides`` (nested config fields set in every cell: the fixed
budget goes here), ``targets`` (published linear-probe accuracies, optional), ``loss_cost``
(where each loss's time and memory come from, `mvcl.studies.loss_cost`:
``experiments/bench_losses.py``'s JSON, relative to the working directory, if present; its
earlier name ``kernel_cost`` still works until 0.2.0, with a FutureWarning: see `SweepConfig`),
``save_embeddings``, ``cell_progress_bar``.

Arguments understood by every sweep config (``apply_args``):

  fake=True   smoke version: random images, tiny backbones, 2 steps of batch 8 per cell, no
              evaluation (the base config's ``fake``), tiny loss timings. For tests.
  seeds=S     seeds 0 .. S-1 of every cell (default 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import absl
import ml_collections
from ml_collections import config_dict

from mvcl import _deprecation, losses

BENCH_JSON = "experiments/results/bench_losses.json"
# Every multi-view loss, MV-DHEL (the paper's method) first.
MULTI_VIEW_LOSSES = ("mv_dhel",) + tuple(n for n in losses.MULTI_VIEW if n != "mv_dhel")
# At V = 2, pwe = avg = pvc = multipos_infonce = infonce and dhel = mv_dhel (each record's
# `same_at_two_views`, docs/losses.md): the two-view block runs each distinct loss once.
TWO_VIEW_LOSSES = tuple(
    n for n in MULTI_VIEW_LOSSES + losses.TWO_VIEW if losses.spec(n).same_at_two_views is None
)
FAKE_WIDTH = 0.0625  # backbone channel multiplier of smoke runs
FAKE_BATCH = 8


# Frames a moved field's warning skips: it points at the config file's line that used the field.
_LIBRARY_FRAMES = tuple(
    os.path.dirname(module.__file__) + os.sep for module in (ml_collections, absl)
) + (__file__,)


class SweepConfig(config_dict.ConfigDict):
    """A sweep config: a ConfigDict that still answers to the field names of earlier releases
    (`mvcl._deprecation.MOVED_SWEEP_FIELDS`: ``kernel_cost`` is ``loss_cost``) until 0.2.0, with
    a FutureWarning naming the new one; ``config.loss_cost.ns = (256,)`` in a config file of
    one's own and ``--config.loss_cost.ns=256`` set ``config.loss_cost.ns``. Only the new
    names are fields (``to_dict``, iteration, ``in``)."""

    @staticmethod
    def _field(key: Any) -> Any:
        new = _deprecation.MOVED_SWEEP_FIELDS.get(key) if isinstance(key, str) else None
        if new is None:
            return key
        _deprecation.warn_moved_field(f"config.{key}", f"config.{new}", skip=_LIBRARY_FRAMES)
        return new

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._field(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(self._field(key), value)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(self._field(key))


def sweep_args(**defaults: Any) -> dict[str, Any]:
    """Defaults of the arguments every sweep config understands, updated with ``defaults``."""
    args = {"fake": False, "seeds": 1}
    args.update(defaults)
    return args


def block(
    losses: Sequence[str], views: Sequence[int], batch_sizes: Sequence[int]
) -> config_dict.ConfigDict:
    """A grid block: every loss x V x batch size (seeds are set by `apply_args`)."""
    return config_dict.ConfigDict(
        {
            "losses": tuple(losses),
            "views": tuple(views),
            "batch_sizes": tuple(batch_sizes),
            "seeds": (0,),
        }
    )


def sweep_config(name: str, base: str) -> config_dict.ConfigDict:
    """An empty sweep over the pretraining config ``base`` (``"digits"``: `mvcl.configs`)."""
    config = SweepConfig()
    config.name = name
    config.base = base
    config.base_arg = ""
    config.grid = config_dict.ConfigDict()
    config.overrides = config_dict.ConfigDict()
    config.targets = config_dict.ConfigDict()  # empty: no published numbers to compare with
    config.save_embeddings = True  # test-set features of each cell, for notebooks
    config.cell_progress_bar = False  # the sweep shows one bar over the cells

    config.loss_cost = config_dict.ConfigDict()
    config.loss_cost.enabled = True
    config.loss_cost.bench_json = BENCH_JSON  # used if present (see above)
    config.loss_cost.backend = "dense"  # the benchmark rows to use, or the backend timed here
    config.loss_cost.ns = (256, 1024)  # else: instances N timed here, at every V of the grid
    config.loss_cost.d = 128
    config.loss_cost.repeats = 3
    return config


def paper_sweep(
    name: str,
    base: str,
    *,
    epochs: int,
    mv_dhel: tuple[float, float],
    best_baseline: tuple[float, float],
) -> config_dict.ConfigDict:
    """A reproduction sweep of the paper's tables on ``base`` (the paper setup): the distinct
    losses at V = 2 and every multi-view loss at V = 4, batch 256, ``epochs`` each (the paper's
    budget, stated here so ``--config.overrides.num_epochs`` can shorten it), with the published
    linear-probe accuracies (%) of MV-DHEL and of the best baseline at V = 2 and 4 as targets."""
    config = sweep_config(name, base)
    config.overrides.num_epochs = epochs
    config.grid.two_views = block(TWO_VIEW_LOSSES, views=(2,), batch_sizes=(256,))
    config.grid.multi_views = block(MULTI_VIEW_LOSSES, views=(4,), batch_sizes=(256,))
    config.targets = config_dict.ConfigDict(
        {"views": (2, 4), "mv_dhel": mv_dhel, "best_baseline": best_baseline}
    )
    return config


def apply_args(config: config_dict.ConfigDict, args: config_dict.ConfigDict):
    """Applies ``seeds`` and ``fake`` (see the module docstring) to a sweep config."""
    for name in config.grid:
        config.grid[name].seeds = tuple(range(args.seeds))
    if args.fake:
        config.name = f"{config.name}_fake"
        config.base_arg = f"fake=True,width={FAKE_WIDTH}"
        for name in config.grid:
            config.grid[name].batch_sizes = (FAKE_BATCH,)
        config.overrides.num_steps = 2
        config.overrides.log_every_steps = 1
        config.overrides.checkpoint_every_steps = 1
        config.overrides.dataset = config_dict.ConfigDict({"fake_num_examples": 4 * FAKE_BATCH})
        config.loss_cost.bench_json = ""
        config.loss_cost.ns = (FAKE_BATCH,)
        config.loss_cost.d = 8
        config.loss_cost.repeats = 1
    return config
