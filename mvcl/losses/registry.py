"""Losses by name, for configs: ``mvcl.losses.get("mv_dhel")``; one :class:`LossSpec` each.

Everything else the code knows about a loss (the lists below, the benchmark's FLOP floors, the
test cases, the sweep configs' loss lists) is derived from these records: adding a loss means
writing its function and adding its record to :data:`SPECS`.
"""

from __future__ import annotations

import types
from typing import Callable

from mvcl.losses import baselines, multiview, two_view
from mvcl.losses import spec as s
from mvcl.losses.spec import Case, LossSpec


def _kcl_case(kernel: str, t: float, gamma: float = 16.0, multidevice: bool = False) -> Case:
    options = {"kernel": kernel, "t": t, "gamma": gamma}
    return Case(f"kcl-{kernel}-t{t:g}-g{gamma:g}", options, multidevice=multidevice)


_SPECS = (
    LossSpec(
        "mv_infonce",
        multiview.mv_infonce,
        s.all_rows,
        cases=(
            Case("mv_infonce"),
            Case("mv_infonce-other_views", {"negatives": "other_views"}),
        ),
    ),
    LossSpec("mv_dhel", multiview.mv_dhel, s.each_view),
    LossSpec(
        "pwe",
        baselines.pwe,
        s.all_rows,
        same_at_two_views="infonce",
        pair_aggregate=True,
        cases=(Case("pwe-infonce"), Case("pwe-dhel", {"pair_loss": "dhel"})),
    ),
    LossSpec(
        "avg",
        baselines.avg,
        s.view_and_rest,
        same_at_two_views="infonce",
        pair_aggregate=True,
        cases=(Case("avg-infonce"), Case("avg-dhel", {"pair_loss": "dhel"})),
    ),
    LossSpec("pvc", baselines.pvc, s.all_rows, same_at_two_views="infonce", pair_aggregate=True),
    LossSpec(
        "multipos_infonce", baselines.multipos_infonce, s.all_rows, same_at_two_views="infonce"
    ),
    LossSpec("infonce", two_view.infonce, s.two_views, max_views=2),
    LossSpec("dcl", two_view.dcl, s.two_views, max_views=2),
    LossSpec(
        "dhel",
        two_view.dhel,
        s.each_view,
        max_views=2,
        same_at_two_views="mv_dhel",
        cases=(Case("dhel"), Case("dhel-anchor_only", {"anchor_only": True})),
    ),
    LossSpec(
        "kcl",
        two_view.kcl,
        s.each_view,
        temperature=False,
        max_views=2,
        cases=(
            Case("kcl"),  # the defaults: gaussian, t = 2, γ = 16
            _kcl_case("log", 0.5, 4.0),
            _kcl_case("imq", 2.0, multidevice=True),
            _kcl_case("riesz", 2.0),
            _kcl_case("riesz", -1.0, 3.0),
        ),
    ),
)

SPECS: types.MappingProxyType[str, LossSpec] = types.MappingProxyType({x.name: x for x in _SPECS})
"""Every loss's record, by name, in registry order."""
NAMES = tuple(SPECS)
TWO_VIEW = tuple(name for name, x in SPECS.items() if x.two_view)
"""Losses that take exactly V = 2 views."""
MULTI_VIEW = tuple(name for name, x in SPECS.items() if not x.two_view)
"""Losses that take any V >= 2."""
TEMPERATURE_FREE = tuple(name for name, x in SPECS.items() if not x.temperature)
"""Losses without a ``temperature`` argument."""
CASES = tuple((x, case) for x in SPECS.values() for case in x.cases)
"""Every (spec, test case), in registry order: what the loss tests run."""
MULTIDEVICE_CASES = tuple((x, case) for x, case in CASES if case.multidevice)
"""The test cases of the multi-device grid, in registry order."""


def spec(name: str) -> LossSpec:
    """The record of the loss called ``name`` (one of :data:`NAMES`).

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> s = losses.spec("mv_dhel")
      >>> s.temperature, s.max_views
      (True, None)
      >>> print(f"{s.call(z, temperature=0.5):.4f}")
      6.0199
      >>> kcl = losses.spec("kcl")  # a two-view loss without a temperature
      >>> kcl.temperature, kcl.max_views
      (False, 2)
      >>> print(f"{kcl.call(z[:, :2], temperature=0.5):.4f}")  # the temperature is not passed on
      0.7160
    """
    if name not in SPECS:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(NAMES)}")
    return SPECS[name]


def get(name: str) -> Callable:
    """The loss function called ``name`` (one of :data:`NAMES`).

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> loss_fn = losses.get("pvc")  # by name, as the configs do
      >>> print(f"{loss_fn(z, temperature=0.5):.4f}")
      3.4456
      >>> losses.get("mv_dhel") is losses.mv_dhel
      True
    """
    return spec(name).fn
