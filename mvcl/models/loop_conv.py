"""A 2-D convolution whose gradients stay fast inside loops on the CPU.

XLA's CPU backend runs a convolution's gradients far slower when they sit inside a loop body
(``jax.lax.scan``, ``while``) than at the top level of a program (jax issue #12868: inside a loop
the layout pass cannot re-lay out the operands of the transposed convolutions that autodiff
emits). Gradient caching (`mvcl.train.grad_cache`) backpropagates every chunk inside a
``scan``, so with XLA's gradients its step was many times slower than the one-pass step (the
timings: ``experiments/results/grad_cache/README.md``).

`conv_general_dilated` is the same convolution with a custom VJP made of operations that stay
fast in loops, all in the NHWC/HWIO layout of the forward pass:

* input gradient: the convolution of ``dy`` (dilated by the stride) with the kernel flipped in
  space and with its in/out channels swapped, padded so the result has the input's extent;
* kernel gradient: one matmul per kernel tap,
  ``dW[a, b] = sum_{n, h, w} x_pad[n, s·h + a, s·w + b, :]^T dy[n, h, w, :]``.

The values are XLA's gradients up to summation order (tests/test_models.py compares them in
float64). It is used only where it helps: `mvcl.models.layers.conv` builds its convolutions
with it inside a `loop_friendly` block, which gradient caching opens around its chunk loop; only
the CPU lowering takes it (`jax.lax.platform_dependent`), other platforms keep XLA's
convolution and gradients, as does every case it does not cover (other layouts, dilations,
feature groups). At the top level XLA's own gradients are as fast and hold no extra memory, so
everything else keeps them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_LOOP_FRIENDLY = contextvars.ContextVar("mvcl_loop_friendly_conv", default=False)

_NHWC = ("NHWC", "HWIO", "NHWC")
_NHWC_NUMBERS = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)


def _padding_pairs(padding: Any, x_shape, w_shape, strides) -> tuple[tuple[int, int], ...] | None:
    """Explicit (lo, hi) padding of the two spatial dimensions, or None if negative."""
    if isinstance(padding, str):
        pairs = lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding)
    else:
        pairs = padding
    pairs = tuple((int(lo), int(hi)) for lo, hi in pairs)
    return None if any(p < 0 for pair in pairs for p in pair) else pairs


def _forward(x, w, strides, padding, precision):
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=_NHWC, precision=precision
    )


def _kernel_gradient(x, dy, kernel_hw, strides, padding, precision):
    """dL/dW (kh, kw, I, O) of the NHWC/HWIO convolution: one matmul per kernel tap.

    The taps run in a loop (``lax.map``), so one tap's slice of ``x`` is live at a time.
    """
    (top, bottom), (left, right) = padding
    x_pad = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    (kh, kw), (sh, sw), (ho, wo) = kernel_hw, strides, dy.shape[1:3]
    window = (x.shape[0], sh * (ho - 1) + 1, sw * (wo - 1) + 1, x.shape[3])

    def tap(offset):
        a, b = offset // kw, offset % kw
        patch = lax.dynamic_slice(x_pad, (0, a, b, 0), window)[:, ::sh, ::sw, :]
        return jnp.einsum("nhwi,nhwo->io", patch, dy, precision=precision)

    dw = lax.map(tap, jnp.arange(kh * kw))
    return dw.reshape(kh, kw, *dw.shape[1:])


def _input_gradient(dy, w, x_hw, strides, padding, precision):
    """dL/dx (N, H, W, I) of the NHWC/HWIO convolution, as a loop-friendly convolution."""
    kh, kw = w.shape[:2]
    pads = []
    for size, k, s, (lo, _), out in zip(x_hw, (kh, kw), strides, padding, dy.shape[1:3]):
        pads.append((k - 1 - lo, size - (out - 1) * s + lo - 1))
    flipped = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))  # (kh, kw, O, I)
    return lax.conv_general_dilated(
        dy,
        flipped,
        (1, 1),
        pads,
        lhs_dilation=strides,
        dimension_numbers=_NHWC,
        precision=precision,
    )


def _make_conv(strides, padding, precision):
    @jax.custom_vjp
    def conv(x, w):
        return _forward(x, w, strides, padding, precision)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(residuals, dy):
        x, w = residuals
        dx = _input_gradient(dy, w, x.shape[1:3], strides, padding, precision)
        dw = _kernel_gradient(x, dy, w.shape[:2], strides, padding, precision)
        return dx, dw.astype(w.dtype)

    conv.defvjp(fwd, bwd)
    return conv


def _is_nhwc(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == _NHWC_NUMBERS
    return tuple(dimension_numbers) == _NHWC


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``jax.lax.conv_general_dilated``, with loop-friendly gradients on the CPU.

    Same arguments and values as ``lax.conv_general_dilated``. For 2-D NHWC/HWIO convolutions
    without dilation, feature or batch groups, negative padding or a preferred element type, the
    CPU lowering differentiates through `_input_gradient` and `_kernel_gradient` (see the
    module docstring); every other case, and every non-CPU platform, is
    ``lax.conv_general_dilated`` itself.
    """
    native = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x,
        w,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    strides = tuple(int(s) for s in window_strides)
    pairs = (
        _padding_pairs(padding, lhs.shape, rhs.shape, strides)
        if lhs.ndim == 4 and rhs.ndim == 4
        else None
    )
    covered = (
        pairs is not None
        and _is_nhwc(dimension_numbers)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
    )
    if not covered:
        return native(lhs, rhs)
    loop_friendly = _make_conv(strides, pairs, precision)
    return lax.platform_dependent(lhs, rhs, cpu=loop_friendly, default=native)


@contextlib.contextmanager
def loop_friendly() -> Iterator[None]:
    """Encoders traced inside this block use `conv_general_dilated` (see `current`)."""
    token = _LOOP_FRIENDLY.set(True)
    try:
        yield
    finally:
        _LOOP_FRIENDLY.reset(token)


def current() -> Callable[..., jax.Array] | None:
    """The convolution for ``flax.linen.Conv(conv_general_dilated=...)`` at this point of
    tracing: `conv_general_dilated` inside a `loop_friendly` block, else None (flax's default,
    ``jax.lax.conv_general_dilated``)."""
    return conv_general_dilated if _LOOP_FRIENDLY.get() else None
