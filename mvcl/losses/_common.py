"""What every loss shares: input checks, normalisation, the energy call, the global mean."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from mvcl import backends
from mvcl.numerics import compute_dtype, normalize


def axis_size(axis_name) -> int:
    """Number of devices along ``axis_name`` (1 for ``None``), with a clear error when unbound."""
    if axis_name is None:
        return 1
    try:
        return jax.lax.axis_size(axis_name)
    except NameError as e:
        raise ValueError(
            f"axis_name={axis_name!r} is not bound here: call the loss inside jax.shard_map or "
            f"jax.pmap over that mesh axis, or pass axis_name=None ({e})"
        ) from None


def check_temperature(temperature) -> None:
    """``temperature`` must be > 0 (checked when it is a concrete number, not a tracer)."""
    if isinstance(temperature, jax.core.Tracer):
        return
    if not isinstance(temperature, (numbers.Real, np.ndarray, jax.Array)) or np.ndim(temperature):
        raise ValueError(f"temperature must be a positive scalar, got {temperature!r}")
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def prepare(
    z, *, loss: str, axis_name, views: int | None = None, precision=None
) -> tuple[jax.Array, jax.lax.Precision]:
    """Checks ``z`` (N, V, D); returns its unit rows in the compute dtype and the matmul precision.

    Args:
      z: the embeddings, instance-major: (local) instances × views × features.
      loss: the loss's name, for error messages.
      axis_name: the mesh axis the batch is sharded over, or ``None``.
      views: the exact number of views the loss takes (2 for the two-view losses); ``None`` for
        any V ≥ 2.
      precision: the loss's ``precision`` argument, resolved for ``z``'s dtype by
        :func:`mvcl.backends.precision.resolve` (HIGHEST for float32/float64 by default).
    """
    if not hasattr(z, "ndim") or not hasattr(z, "dtype"):
        z = jnp.asarray(z)
    if z.ndim != 3:
        raise ValueError(f"{loss}: z must have rank 3, (N, V, D), got shape {tuple(z.shape)}")
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise ValueError(f"{loss}: z must be a floating array, got dtype {z.dtype}")
    n, v, _ = z.shape
    if views is not None and v != views:
        raise ValueError(f"{loss} is a two-view loss: z must have V = {views} views, got V = {v}")
    if v < 2:
        raise ValueError(f"{loss}: z needs V >= 2 views per instance, got V = {v}")
    n_global = n * axis_size(axis_name)
    if n_global < 2:
        raise ValueError(
            f"{loss}: z needs N >= 2 instances in the (global) batch, got N = {n_global}"
        )
    precision = backends.precision.resolve(precision, z.dtype)
    return normalize(z.astype(compute_dtype(z.dtype))), precision


def mean_over_instances(terms: jax.Array, axis_name) -> jax.Array:
    """Mean of per-instance terms (n,) over the global batch: psum of local sums / global N."""
    total = jnp.sum(terms)
    if axis_name is None:
        return total / terms.shape[0]
    return jax.lax.psum(total, axis_name) / (terms.shape[0] * axis_size(axis_name))


def energy(
    u: jax.Array,
    temperature,
    *,
    mask: str,
    axis_name,
    backend,
    precision,
    reduction: backends.Reduction = backends.LSE,
    per_key_view: bool = False,
) -> jax.Array:
    """The row reduction of s(u_a, u_b) = u_a·u_b/τ over the global keys: (G, n, A, D) -> (G, n, A).

    The backend sees ``v = u / sqrt(τ)`` as both queries and keys (``v_a · v_b = s(u_a, u_b)``),
    so a symmetric backend path (:func:`mvcl.backends.self_rows`) applies. With ``per_key_view``
    each row is reduced over each view's keys separately: (G, n, A, A), ``[..., a, b]`` the row
    of view a over the keys of view b (a backend function of your own is asked for one key view
    at a time, which ``mask="instance"`` allows: :func:`mvcl.backends.self_rows`).
    """
    v = u / jnp.sqrt(temperature)
    if reduction == backends.LSE and isinstance(temperature, numbers.Real):
        # Unit rows: |s| <= 1/τ, a static bound that spares the streams their running maximum.
        reduction = backends.reductions.lse_bounded(1.0 / float(temperature))
    if per_key_view:
        reduction = backends.reductions.per_key_view(reduction, u.shape[2], precision)
    return backends.self_rows(
        backend, v, mask=mask, reduction=reduction, axis_name=axis_name, precision=precision
    )


def other_instance_energy(
    u: jax.Array, temperature, *, axis_name, backend, precision, per_key_view: bool = False
) -> jax.Array:
    """`energy` of every row of ``u`` (n, V, D) over the keys of the other instances (all their
    views): (n, V), or (n, V, V) per key view. PWE, PVC and multi-positive InfoNCE share it."""
    return energy(
        u[None],
        temperature,
        mask="instance",
        axis_name=axis_name,
        backend=backend,
        precision=precision,
        per_key_view=per_key_view,
    )[0]


@jax.custom_jvp
def logsumexp_last(x: jax.Array) -> jax.Array:
    """``jax.nn.logsumexp(x, axis=-1)`` with the derivative written as ``softmax(x) · dx``.

    The same function and derivatives (of every order) as ``jax.nn.logsumexp``, but its cotangent
    is a plain product with a softmax computed once in the forward pass. jax's own rule builds the
    cotangent from selects over ``x``, and XLA on the CPU fuses that chain into whatever
    consumes it; when ``x`` are the energies of a dense kernel, that consumer is the elementwise
    pass over the whole (NV)² similarity matrix, which then recomputes it for every entry (the
    timing is in ``experiments/results/loss_benchmarks/README.md``).
    """
    return jax.nn.logsumexp(x, axis=-1)


@logsumexp_last.defjvp
def _logsumexp_last_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    out = logsumexp_last(x)
    return out, jnp.sum(jnp.exp(x - out[..., None]) * dx, axis=-1)


def view_similarities(u: jax.Array, temperature, precision) -> jax.Array:
    """s(u_il, u_im) for every instance: (..., n, V, D) -> (..., n, V, V)."""
    return jnp.einsum("...ld,...md->...lm", u, u, precision=precision) / temperature


def lse_over_pairs(s: jax.Array, *, ordered: bool) -> jax.Array:
    """LSE of (..., V, V) view similarities over pairs l ≠ m (ordered) or l < m (unordered)."""
    v = s.shape[-1]
    rows, cols = np.indices((v, v))
    pairs = rows != cols if ordered else rows < cols
    return jax.nn.logsumexp(jnp.where(pairs, s, -jnp.inf), axis=(-2, -1))


def mean_over_ordered_pairs(per_pair: jax.Array, axis_name) -> jax.Array:
    """The global mean over instances of the mean over ordered view pairs l ≠ m of
    ``per_pair`` (n, V, V) (its diagonal is ignored)."""
    v = per_pair.shape[-1]
    off_diagonal = ~np.eye(v, dtype=bool)
    terms = jnp.sum(jnp.where(off_diagonal, per_pair, 0.0), axis=(-2, -1)) / (v * (v - 1))
    return mean_over_instances(terms, axis_name)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_finite(z: jax.Array, name: str = "z") -> jax.Array:
    """Raises if ``z`` has a NaN or an infinity; returns ``z`` so it can be chained.

    Eagerly this raises ``ValueError``. Under ``jax.jit`` it adds a ``checkify`` check: wrap the
    jitted function with ``jax.experimental.checkify.checkify`` and call ``err.throw()``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mvcl import losses
      >>> losses.check_finite(jnp.ones((4, 2, 8))).shape
      (4, 2, 8)
      >>> losses.check_finite(jnp.array([1.0, jnp.nan]))
      Traceback (most recent call last):
      ...
      ValueError: z has 1 non-finite values (NaN or inf)
    """
    finite = jnp.all(jnp.isfinite(z))
    if isinstance(finite, jax.core.Tracer):
        checkify.check(finite, f"{name} has non-finite values")
    elif not bool(finite):
        bad = int(np.size(z) - np.count_nonzero(np.isfinite(np.asarray(z))))
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf)")
    return z
