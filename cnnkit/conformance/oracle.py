"""Expected outputs computed from the definitions, independently of every backend.

The suite needs an expected value for every case, not only the goldens: this
module computes the forward pass of the core ops in float64 straight from the
formulas of :mod:`cnnkit.ops`, by gathering every window of the padded input
at once (``windows``) and reducing it. It shares no code with any backend, so
it checks the NumPy reference too. Ops a plugin adds have no oracle; their
cases are checked against goldens and the reference backend only.

Every function takes float64 NumPy arrays and the op's *canonical* attributes
(as :meth:`cnnkit.ops.OpSpec.bind` returns them).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnkit import geometry

__all__ = ["ORACLES", "expected_output", "windows"]


def windows(
    xp: np.ndarray, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], out: Sequence[int]
) -> np.ndarray:
    """Every window of an (already padded) ``(N, C, *spatial)`` array: ``(N, C, *out, *kernel)``.

    Window ``o`` along an axis reads positions ``S·o + D·m`` for ``m < F``.
    """
    d = len(kernel)
    index = []
    for axis, (f, s, dil, o) in enumerate(zip(kernel, stride, dilation, out)):
        pos = s * np.arange(o)[:, None] + dil * np.arange(f)[None, :]  # (O, F)
        shape = [1] * (2 * d)
        shape[axis], shape[d + axis] = o, f
        index.append(pos.reshape(shape))
    return xp[(slice(None), slice(None), *index)]


def _pad(x: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), *pads), constant_values=value)


def conv(x, w, b, *, stride, padding, dilation, groups, flip):
    d = x.ndim - 2
    if flip:
        w = w[(slice(None), slice(None), *([slice(None, None, -1)] * d))]
    kernel = w.shape[2:]
    out = [
        geometry.conv_output_size(n, f, s, p, dd)
        for n, f, s, p, dd in zip(x.shape[2:], kernel, stride, padding, dilation)
    ]
    win = windows(_pad(x, padding), kernel, stride, dilation, out)  # (N, C, *O, *F)
    n, c = x.shape[:2]
    k = w.shape[0]
    win = win.reshape(n, groups, c // groups, *win.shape[2:])  # (N, G, C/G, *O, *F)
    wg = w.reshape(groups, k // groups, *w.shape[1:])  # (G, K/G, C/G, *F)
    o_ax, f_ax = string.ascii_uppercase[:d], string.ascii_uppercase[d : 2 * d]
    y = np.einsum(f"ngc{o_ax}{f_ax},gkc{f_ax}->ngk{o_ax}", win, wg).reshape(n, k, *out)
    if b is not None:
        y = y + b.reshape(k, *([1] * d))
    return y


def _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, fill):
    d = x.ndim - 2
    real = [
        geometry.pool_padding(n, f, s, p, dd, ceil_mode)
        for n, f, s, p, dd in zip(x.shape[2:], kernel_size, stride, padding, dilation)
    ]
    out = [
        geometry.pool_output_size(n, f, s, p, dd, ceil_mode)
        for n, f, s, p, dd in zip(x.shape[2:], kernel_size, stride, padding, dilation)
    ]
    axes = tuple(range(2 + d, 2 + 2 * d))
    return windows(_pad(x, real, fill), kernel_size, stride, dilation, out), axes, real, out


def max_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode):
    win, axes, _, _ = _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, -np.inf)
    return win.max(axis=axes)


def avg_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad):
    win, axes, real, out = _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, 0.0)
    # the divisor counts the taps on input units, plus (count_include_pad) those on declared padding;
    # the extra units a ceil_mode window hangs past the declared padding never count
    ones = np.ones((1, 1, *x.shape[2:]))
    if count_include_pad:
        ones = _pad(ones, padding, 1.0)
        extra = [(r[0] - p[0], r[1] - p[1]) for r, p in zip(real, padding)]
    else:
        extra = real
    count = windows(_pad(ones, extra), kernel_size, stride, dilation, out).sum(axis=axes)
    return win.sum(axis=axes) / count


def lp_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode, norm_type):
    win, axes, _, _ = _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, 0.0)
    return (np.abs(win) ** norm_type).sum(axis=axes) ** (1.0 / norm_type)


def relu(x):
    return np.maximum(x, 0.0)


def leaky_relu(x, *, negative_slope):
    return np.where(x > 0, x, negative_slope * x)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def tanh(x):
    return np.tanh(x)


def flatten(x, *, start_dim, end_dim):
    if x.ndim == 0:
        return x.reshape(1)
    return x.reshape(*x.shape[:start_dim], -1, *x.shape[end_dim + 1 :])


def linear(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


def cross_entropy(z, t, *, reduction):
    m = z.max(axis=1, keepdims=True) if z.size else np.zeros((z.shape[0], 1))
    logsumexp = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    e = logsumexp - z[np.arange(z.shape[0]), t]
    if reduction == "none":
        return e
    return e.sum() if reduction == "sum" else e.mean()


#: The oracle of each core op, by op name.
ORACLES: dict[str, Callable[..., np.ndarray]] = {
    "conv": conv,
    "max_pool": max_pool,
    "avg_pool": avg_pool,
    "lp_pool": lp_pool,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "flatten": flatten,
    "linear": linear,
    "cross_entropy": cross_entropy,
}


def expected_output(op: str, inputs: Sequence[Any], attrs: dict[str, Any]) -> np.ndarray | None:
    """The oracle's float64 output for ``op``, or ``None`` when there is no oracle for it."""
    fn = ORACLES.get(op)
    if fn is None:
        return None
    arrays = [None if a is None else np.asarray(a) for a in inputs]
    arrays = [a if a is None or a.dtype.kind in "iu" else a.astype(np.float64) for a in arrays]
    with np.errstate(all="ignore"):
        return np.asarray(fn(*arrays, **attrs), dtype=np.float64)
