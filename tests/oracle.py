"""Float64 NumPy reference implementations of the losses, written from SPEC-losses.md.

Deliberately independent of ``mvcl``: each loss is written the plain way, from its formula, with
an explicit similarity matrix over all rows of the batch, boolean masks built from instance and
view ids, and ``scipy.special.logsumexp``. Nothing is streamed, tiled or shared with the JAX code.

Every function takes ``z`` of shape (N, V, D) (instance-major, any real dtype; it is converted to
float64) and returns a Python float.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import logsumexp

EPS = 1e-12


def unit(z):
    """u = z / max(||z||, eps) along the last axis, in float64."""
    z = np.asarray(z, dtype=np.float64)
    norm = np.sqrt(np.sum(z * z, axis=-1, keepdims=True))
    return z / np.maximum(norm, EPS)


def _flat(u):
    """(N, V, D) -> rows (N*V, D) and the instance id and view id of every row."""
    n, v, d = u.shape
    inst, view = np.divmod(np.arange(n * v), v)
    return u.reshape(n * v, d), inst, view


def _lse(s, keep, axis=-1):
    """log Σ exp s over the kept entries along ``axis`` (one axis or a tuple of axes)."""
    return logsumexp(np.where(keep, s, -np.inf), axis=axis)


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
    return float(np.mean(uniformity - alignment))


def mv_dhel(z, temperature):
    u = unit(z)
    n, v, _ = u.shape
    others = ~np.eye(n, dtype=bool)
    uniformity = np.zeros(n)
    for l in range(v):
        s_l = u[:, l] @ u[:, l].T / temperature  # (N, N): s(u_il, u_jl)
        uniformity += _lse(s_l, others)
    own = np.einsum("ild,imd->ilm", u, u) / temperature
    alignment = _lse(own, np.triu(np.ones((v, v), dtype=bool), k=1), axis=(1, 2))
    return float(np.mean(uniformity - alignment))


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
    return float(np.mean(per_row))  # = 1/N Σ_i ½(x-term + y-term)


def _pair_dhel(x, y, temperature, anchor_only=False):
    n = x.shape[0]
    others = ~np.eye(n, dtype=bool)
    terms = _lse(x @ x.T / temperature, others) - np.sum(x * y, axis=-1) / temperature
    if not anchor_only:
        terms = terms + _lse(y @ y.T / temperature, others)
    return float(np.mean(terms))


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
    z = np.asarray(z, dtype=np.float64)
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
    uniformity = np.mean(k(sq(x[a], x[b]))) + np.mean(k(sq(y[a], y[b])))
    return float(-2.0 * alignment + gamma * uniformity)


# ------------------------------------------------------------------------------------------------
# Multi-view baselines.


def pwe(z, temperature, pair_loss="infonce"):
    u = unit(z)
    v = u.shape[1]
    losses = [
        _PAIR[pair_loss](u[:, a], u[:, b], temperature)
        for a, b in itertools.combinations(range(v), 2)
    ]
    return float(np.mean(losses))


def avg(z, temperature, pair_loss="infonce"):
    u = unit(z)
    v = u.shape[1]
    losses = []
    for l in range(v):
        others = np.mean(np.delete(u, l, axis=1), axis=1)  # ū_{−l}
        if pair_loss == "dhel":
            others = unit(others)
        losses.append(_PAIR[pair_loss](u[:, l], others, temperature))
    return float(np.mean(losses))


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
    return float(np.mean(np.concatenate(terms)))


def multipos_infonce(z, temperature):
    u = unit(z)
    n, v, _ = u.shape
    rows, inst, view = _flat(u)
    s = rows @ rows.T / temperature
    energy = _lse(s, ~np.eye(n * v, dtype=bool))  # LSE over (k, c) ≠ (i, l)
    positives = (inst[:, None] == inst[None, :]) & (view[:, None] != view[None, :])
    terms = energy[:, None] - s  # one per (anchor, positive) pair
    return float(np.mean(terms[positives]))


# ------------------------------------------------------------------------------------------------
# Finite differences of the oracle.


def numerical_grad(f, z, step=1e-6):
    """Central finite differences of the scalar ``f`` at ``z`` (float64), element by element."""
    z = np.array(z, dtype=np.float64)
    grad = np.zeros_like(z)
    flat, g = z.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + step
        plus = f(z)
        flat[k] = saved - step
        minus = f(z)
        flat[k] = saved
        g[k] = (plus - minus) / (2 * step)
    return grad
