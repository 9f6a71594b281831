"""What the library knows about a loss, as one record: :class:`LossSpec`.

The registry (:mod:`mvcl.losses.registry`) holds one :class:`LossSpec` per loss; the names, the
two-view and temperature-free lists, the FLOP floors and similarity-matrix sizes of the loss
benchmark, the test cases of the loss and multi-device tests and the sweep configs' loss lists
are all derived from these records.

The cost of a loss is described by its *energy shape* ``(G, R)``: the loss reduces G independent
R × R similarity matrices (the backend call of :func:`mvcl.losses._common.energy` on a
``(G, n, A, D)`` array, R = N·A rows over the global batch). From it:

* :meth:`LossSpec.flops`, the FLOP floor of the loss benchmark: the matmul FLOPs of a general
  forward and backward pass, the similarity matmul (2·R²·D per group) and, backward, the products
  with the queries and with the keys (2·R²·D each), so 6·G·R²·D. The O(N·V²·D) alignment terms
  are left out. With keys = queries (every loss here) the backends' symmetric backward folds the
  two backward products into one, ``(W + Wᵀ)·v``: 4·G·R²·D in all.
* :meth:`LossSpec.similarity_entries`, the G·R² entries a materialising backend (``dense``,
  ``gather``) holds at once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax

EnergyShape = Callable[[int, int], tuple[int, int]]
"""``(n, v) -> (G, R)``: G independent similarity matrices of R × R entries for N, V."""


# ------------------------------------------------------------------------------------------------
# The energy shapes of the losses here.


def all_rows(n: int, v: int) -> tuple[int, int]:
    """One energy of all N·V rows against all N·V keys (PWE's too: its V(V−1)/2 two-view
    problems read their energies from one reduction of the N·V rows per key view)."""
    return 1, n * v


def each_view(n: int, v: int) -> tuple[int, int]:
    """V energies: each view's N rows against its own N keys."""
    return v, n


def view_and_rest(n: int, v: int) -> tuple[int, int]:
    """V two-view problems (each view against the mean of the others), 2N rows × 2N keys."""
    return v, 2 * n


def two_views(n: int, v: int) -> tuple[int, int]:
    """One two-view problem: the 2N rows of both views against the same 2N keys."""
    return 1, 2 * n


# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A variant of a loss that the tests exercise: an id and the keyword options it passes.

    ``multidevice``: whether the variant is also in the multi-device grid (every backend × 1, 3
    and 8 devices), which leaves out some variants to keep the suite fast.
    """

    id: str
    options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()
    multidevice: bool = True

    def __post_init__(self):
        # Given as a mapping, stored as (key, value) pairs: a Case is hashable.
        object.__setattr__(self, "options", tuple(dict(self.options).items()))

    @property
    def kwargs(self) -> dict[str, Any]:
        """The options as a dict of keyword arguments."""
        return dict(self.options)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """One loss: its function and everything the library, tests and benchmarks know about it.

    Attributes:
      name: the registry name (``config.loss.name``, ``mvcl.losses.get(name)``).
      fn: the loss function ``fn(z, *, [temperature,] axis_name, backend, precision, **options)``.
      energy: its energy shape ``(n, v) -> (G, R)`` (see the module docstring).
      temperature: whether ``fn`` takes a ``temperature``.
      max_views: the largest V it accepts (2 for the two-view losses; ``None``: any V >= 2).
      same_at_two_views: the registry loss it equals at V = 2 with its default options (``None``
        if it is its own two-view form); a study at V = 2 runs each distinct loss once.
      pair_aggregate: built by aggregating terms over pairs of views (PWE, AVG, PVC): the
        multi-view baselines MV-DHEL is compared with in the studies' geometric claim.
      cases: the variants the tests exercise (the first: the default options).

    Examples:
      >>> import jax
      >>> from mvcl import losses
      >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # N = 8, V = 4, D = 16
      >>> s = losses.spec("mv_infonce")
      >>> loss_fn = s.bind(temperature=0.5)  # a function of z alone
      >>> print(f"{loss_fn(z):.4f}")
      2.3215
      >>> s.energy(8, 4)  # one energy over all N·V = 32 rows: G = 1 group of R = 32 rows
      (1, 32)
    """

    name: str
    fn: Callable[..., jax.Array]
    energy: EnergyShape
    temperature: bool = True
    max_views: int | None = None
    same_at_two_views: str | None = None
    pair_aggregate: bool = False
    cases: tuple[Case, ...] = ()

    min_views = 2
    """Every loss needs at least two views of an instance."""

    def __post_init__(self):
        if not self.cases:
            object.__setattr__(self, "cases", (Case(self.name),))

    @property
    def two_view(self) -> bool:
        """Whether the loss takes exactly V = 2 views."""
        return self.max_views == 2

    def accepts_views(self, v: int) -> bool:
        """Whether the loss accepts V = ``v`` views."""
        return v >= self.min_views and (self.max_views is None or v <= self.max_views)

    def kwargs(self, temperature: Any = None, **options: Any) -> dict[str, Any]:
        """The keyword arguments of a call: ``options``, plus ``temperature`` where it applies.

        A temperature-free loss drops ``temperature``; any other needs one.
        """
        if not self.temperature:
            return options
        if temperature is None:
            raise ValueError(f"{self.name} takes a temperature: pass temperature=τ > 0")
        return dict(options, temperature=temperature)

    def call(self, z: jax.Array, *, temperature: Any = None, **options: Any) -> jax.Array:
        """``fn(z, **options)``, with ``temperature`` passed only if the loss takes one."""
        return self.fn(z, **self.kwargs(temperature, **options))

    def bind(self, *, temperature: Any = None, **options: Any) -> Callable[..., jax.Array]:
        """``fn`` with its keyword arguments bound (temperature only if the loss takes one):
        a function of ``z`` (e.g. to ``jax.shard_map`` or ``mvcl.parallel.shard_loss``)."""
        return functools.partial(self.fn, **self.kwargs(temperature, **options))

    def flops(self, n: int, v: int, d: int) -> int:
        """The FLOP floor of a forward and backward pass on (N, V, D): 6·G·R²·D."""
        groups, rows = self.energy(n, v)
        return 6 * groups * rows * rows * d

    def similarity_entries(self, n: int, v: int) -> int:
        """Entries of the similarity matrices a materialising backend holds: G·R²."""
        groups, rows = self.energy(n, v)
        return groups * rows * rows
