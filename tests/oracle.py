"""Float64 NumPy reference implementations of the losses, written from docs/losses.md.

Deliberately independent of ``mvcl``: each loss is written the plain way, from its formula, with
an explicit similarity matrix over all rows of the batch, boolean masks built from instance and
view ids, and a max-shifted log-sum-exp. Nothing is streamed, tiled or shared with the JAX code.

Every function takes ``z`` of shape (N, V, D) (instance-major, any real dtype; it is converted to
float64) and returns a Python float. Every operation is analytic, so a complex ``z`` (complex128)
gives a complex result: :func:`complex_step_grad` uses that for gradients exact to float64
rounding, with no finite-difference truncation error.
"""

from __future__ import annotations

import itertools

import numpy as np

EPS = 1e-12


def _float64(z):
    """``z`` as float64, or complex128 when it is complex (for the complex step)."""
    z = np.asarray(z)
    return z.astype(np.complex128 if np.iscomplexobj(z) else np.float64)


def _scalar(x):
    """A Python float (a complex under the complex step)."""
    x = complex(x)
    return x if x.imag else x.real


def unit(z):
    """u = z / max(||z||, eps) along the last axis, in float64."""
    z = _float64(z)
    norm = np.sqrt(np.sum(z * z, axis=-1, keepdims=True))  # z·z, not |z|², stays analytic
    return z / np.where(norm.real > EPS, norm, EPS)


def _flat(u):
    """(N, V, D) -> rows (N*V, D) and the instance id and view id of every row."""
    n, v, d = u.shape
    inst, view = np.divmod(np.arange(n * v), v)
    return u.reshape(n * v, d), inst, view


def _lse(s, keep, axis=-1):
    """log Σ exp s over the kept entries along ``axis`` (one axis or a tuple of axes).

    Shifted by the largest kept real part, so it is stable and stays analytic in ``s``.
    """
    keep = np.broadcast_to(keep, s.shape)
    shift = np.max(np.where(keep, s.real, -np.inf), axis=axis, keepdims=True)
    total = np.sum(np.where(keep, np.exp(s - shift), 0.0), axis=axis, keepdims=True)
    return np.squeeze(shift + np.log(total), axis=axis)


# ------------------------------------------------------------------------------------------------
# Multi-view losses.


def mv_infonce(z, temperature, negatives="all"):
    u = unit(z)
    n, v, _ = u.shape
    rows, inst, view = _flat(u)
    s = rows @ rows.T / temperature  # (NV, NV), rows and keys instance-major
    if negatives == "all":
        keep = ~np.eye(n * v, dtype=bool)  # everything but the anchor itself
    elif negatives == "other_views":
        keep = view[:, None] != view[None, :]  # keys of another view, any instance
    else:
        raise ValueError(negatives)
    # Pool the V anchor rows of each instance into one LSE: (N, V, NV) -> (N,).
    uniformity = _lse(s.reshape(n, v, n * v), keep.reshape(n, v, n * v), axis=(1, 2))
    own = np.einsum("ild,imd->ilm", u, u) / temperature  # (N, V, V): s(u_il, u_im)
    alignment = _lse(own, ~np.eye(v, dtype=bool), axis=(1, 2))
    return _scalar(np.mean(uniformity - alignment))


def mv_dhel(z, temperature):
    u = unit(z)
    n, v, _ = u.shape
    others = ~np.eye(n, dtype=bool)
    # Σ_l LSE_{j≠i} s(u_il, u_jl), each view's (N, N) similarities on their own.
    uniformity = sum(_lse(u[:, l] @ u[:, l].T / temperature, others) for l in range(v))
    own = np.einsum("ild,imd->ilm", u, u) / temperature
    alignment = _lse(own, np.triu(np.ones((v, v), dtype=bool), k=1), axis=(1, 2))
    return _scalar(np.mean(uniformity - alignment))


# ------------------------------------------------------------------------------------------------
# Two-view losses on explicit x (N, D), y (N, D): they are not normalised here, so that AVG can
# pass its un-normalised mean of the other views.


def _pair_infonce(x, y, temperature, drop_positive=False):
    n = x.shape[0]
    keys = np.concatenate([x, y])  # row i is x_i, row N + i is y_i
    s = keys @ keys.T / temperature
    idx = np.arange(2 * n)
    partner = (idx + n) % (2 * n)
    keep = idx[:, None] != idx[None, :]
    if drop_positive:
        keep &= partner[:, None] != idx[None, :]
    per_row = _lse(s, keep) - s[idx, partner]
    return _scalar(np.mean(per_row))  # = 1/N Σ_i ½(x-term + y-term)


def _pair_dhel(x, y, temperature, anchor_only=False):
    n = x.shape[0]
    others = ~np.eye(n, dtype=bool)
    terms = _lse(x @ x.T / temperature, others) - np.sum(x * y, axis=-1) / temperature
    if not anchor_only:
        terms = terms + _lse(y @ y.T / temperature, others)
    return _scalar(np.mean(terms))


_PAIR = {"infonce": _pair_infonce, "dhel": _pair_dhel}


def infonce(z, temperature):
    u = unit(_two_views(z))
    return _pair_infonce(u[:, 0], u[:, 1], temperature)


def dcl(z, temperature):
    u = unit(_two_views(z))
    return _pair_infonce(u[:, 0], u[:, 1], temperature, drop_positive=True)


def dhel(z, temperature, anchor_only=False):
    u = unit(_two_views(z))
    return _pair_dhel(u[:, 0], u[:, 1], temperature, anchor_only=anchor_only)


def _two_views(z):
    z = _float64(z)
    if z.shape[1] != 2:
        raise ValueError(f"two-view loss needs V = 2, got {z.shape[1]}")
    return z


def _kernel(name, t):
    if name == "gaussian":
        return lambda d2: np.exp(-t * d2)
    if name == "log":
        return lambda d2: -0.5 * np.log(t * d2 + 1.0)
    if name == "imq":
        return lambda d2: t / np.sqrt(t**2 + d2)
    if name == "riesz":
        if t > 0:
            return lambda d2: np.sqrt(d2) ** (-t)
        return lambda d2: -(np.sqrt(d2) ** abs(t))
    raise ValueError(name)


def kcl(z, kernel="gaussian", t=2.0, gamma=16.0):
    u = unit(_two_views(z))
    x, y = u[:, 0], u[:, 1]
    k = _kernel(kernel, t)
    a, b = np.triu_indices(x.shape[0], k=1)
    sq = lambda p, q: np.sum((p - q) ** 2, axis=-1)  # δ² = ||p − q||², from the difference
    alignment = np.mean(k(sq(x, y)))
    if kernel == "log":  # the alignment term is −log(t δ² + 1): twice the energy kernel
        alignment = np.mean(-np.log(t * sq(x, y) + 1.0))
    uniformity = np.mean(k(sq(x[a], x[b]))) + np.mean(k(sq(y[a], y[b])))
    return _scalar(-2.0 * alignment + gamma * uniformity)


# ------------------------------------------------------------------------------------------------
# Multi-view baselines.


def pwe(z, temperature, pair_loss="infonce"):
    u = unit(z)
    v = u.shape[1]
    losses = [
        _PAIR[pair_loss](u[:, a], u[:, b], temperature)
        for a, b in itertools.combinations(range(v), 2)
    ]
    return _scalar(np.mean(losses))


def avg(z, temperature, pair_loss="infonce"):
    u = unit(z)
    v = u.shape[1]
    losses = []
    for l in range(v):
        others = np.mean(np.delete(u, l, axis=1), axis=1)  # ū_{−l}
        if pair_loss == "dhel":
            others = unit(others)
        losses.append(_PAIR[pair_loss](u[:, l], others, temperature))
    return _scalar(np.mean(losses))


def pvc(z, temperature):
    u = unit(z)
    n, v, _ = u.shape
    rows, inst, view = _flat(u)
    s = rows @ rows.T / temperature
    idx = np.arange(n * v)
    other_instance = inst[:, None] != inst[None, :]
    terms = []  # one per (j, α, β ≠ α)
    for beta in range(v):
        positive = inst * v + beta  # the key (j, β) of row (j, α)
        keys = other_instance | (idx[None, :] == positive[:, None])  # K_jβ
        anchors = view != beta
        terms.append((_lse(s, keys) - s[idx, positive])[anchors])
    return _scalar(np.mean(np.concatenate(terms)))


def multipos_infonce(z, temperature):
    u = unit(z)
    n, v, _ = u.shape
    rows, inst, view = _flat(u)
    s = rows @ rows.T / temperature
    energy = _lse(s, ~np.eye(n * v, dtype=bool))  # LSE over (k, c) ≠ (i, l)
    positives = (inst[:, None] == inst[None, :]) & (view[:, None] != view[None, :])
    terms = energy[:, None] - s  # one per (anchor, positive) pair
    return _scalar(np.mean(terms[positives]))


# ------------------------------------------------------------------------------------------------
# Gradients of the oracle: the complex step, f'(x) = Im f(x + ih) / h (Squire & Trapp 1998). With
# no subtraction there is no cancellation, so h = 1e-30 gives the derivative to float64 rounding.

COMPLEX_STEP = 1e-30


def complex_step_grad(f, z):
    """The gradient of the scalar oracle ``f`` at real ``z``, element by element (float64)."""
    z = np.asarray(z, dtype=np.float64)
    grad = np.zeros(z.size)
    for k in range(z.size):
        step = np.zeros(z.size, np.complex128)
        step[k] = 1j * COMPLEX_STEP
        grad[k] = np.imag(f(z + step.reshape(z.shape))) / COMPLEX_STEP
    return grad.reshape(z.shape)


def complex_step_directional(f, z, direction):
    """The derivative of ``f`` at ``z`` along ``direction``: ∇f(z) · direction, exactly."""
    z = np.asarray(z, dtype=np.float64)
    return np.imag(f(z + 1j * COMPLEX_STEP * np.asarray(direction))) / COMPLEX_STEP
