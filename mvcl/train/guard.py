"""The divergence guard: non-finite steps are not applied, and a run that keeps diverging stops.

Inside the jitted train step (`mvcl.train.step.make_train_step`) `all_finite` checks the loss,
the gradients and the updated state (parameters, BatchNorm statistics, optimiser state), and
`keep_if` keeps the old state where they are not finite: a bad step leaves the state as it was
(only the step counter advances, so its batch is skipped). The values are global (replicated
over the mesh), so every device and process takes the same decision.

On the host, `BadSteps` follows the steps as they complete: it counts the bad steps of the
current logging window (``train/bad_steps`` in the metrics) and the current streak, and raises
`DivergenceError` once ``config.train.max_bad_steps`` steps in a row were bad. The loop then
stops without saving (`mvcl.train.loop`): the checkpoints on disk are the last good ones, and a
rerun with a lower learning rate resumes from the newest of them.

`nonfinite_summary` describes the non-finite values of a state (for checkpoints: a state that is
not finite is never saved, and one restored from an older run is refused or set aside,
`mvcl.train.checkpoint`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mvcl.train.errors import RunStoppedError


class DivergenceError(RunStoppedError):
    """``config.train.max_bad_steps`` steps in a row had a non-finite loss, gradient or state."""


def _float_leaves(tree: Any) -> list[jax.Array]:
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]


def all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point value in ``tree`` is finite: a scalar bool (True if none)."""
    leaves = _float_leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def keep_if(ok: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where the scalar ``ok`` holds, else ``old``, leaf by leaf (same structure)."""
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


_all_finite_jit = jax.jit(all_finite)


def _path(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def nonfinite_summary(tree: Any) -> str | None:
    """None if every float in ``tree`` is finite, else e.g. ``"12 of 4,096 values are not finite
    (first: batch_stats/BatchNorm_0/var)"``. One reduction on the devices when all is finite."""
    if bool(_all_finite_jit(tree)):
        return None
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    bad, total, first = 0, 0, None
    for path, x in leaves:
        if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.inexact):
            continue
        count = int(np.asarray(jax.device_get(jnp.sum(~jnp.isfinite(x)))))
        total += int(np.prod(x.shape))
        if count:
            bad += count
            first = first or _path(path)
    if not bad:
        return None
    return f"{bad:,} of {total:,} values are not finite (first: {first})"


class BadSteps:
    """The host's count of non-finite steps, fed each step's ``finite`` flag as it completes.

    Args:
      max_bad_steps: stop after this many bad steps in a row.
    """

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.streak = 0  # bad steps in a row up to the last completed step
        self.window = 0  # bad steps since the last `take_window`
        self.total = 0
        self.last_finite: tuple[int, float] | None = None  # (step, loss)

    def update(self, step: int, finite: bool, loss: float) -> None:
        """Records step ``step``; raises `DivergenceError` when the streak reaches the limit."""
        if finite and math.isfinite(loss):
            self.streak = 0
            self.last_finite = (step, loss)
            return
        self.streak += 1
        self.window += 1
        self.total += 1
        if self.streak >= self.max_bad_steps:
            first = step - self.streak + 1
            last = (
                f"the last finite loss was {self.last_finite[1]:.6g} at step {self.last_finite[0]}"
                if self.last_finite is not None
                else "no step of this session had a finite loss"
            )
            raise DivergenceError(
                f"training diverged: steps {first}-{step} ({self.streak} in a row, "
                f"config.train.max_bad_steps = {self.max_bad_steps}) had a non-finite loss, "
                f"gradient or state and were not applied; {last}"
            )

    def take_window(self) -> int:
        """The bad steps since the last call (for ``train/bad_steps``), and starts a new window."""
        count, self.window = self.window, 0
        return count
