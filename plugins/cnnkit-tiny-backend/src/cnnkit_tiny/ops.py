"""The ``tiny`` kernels: ``relu``, ``linear``, ``flatten`` and ``max_pool``, nothing else.

Each op is a ``forward(*inputs, **attrs) -> (output, ctx)`` and a
``backward(ctx, grad_output) -> grads`` pair. Inputs arrive validated, with
cnnkit's canonical attributes (see :mod:`cnnkit.ops`); nothing is re-checked.
"""

from __future__ import annotations

import itertools

import numpy as np

from cnnkit import geometry


def relu(x):
    return np.where(x > 0, x, np.zeros_like(x)), x > 0


def relu_backward(positive, g):
    # dE/dx = dE/dy · [x > 0]
    return (np.where(positive, g, np.zeros_like(g)),)


def linear(x, w, b):
    y = x @ w.T
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_backward(ctx, g):
    # dE/dx = g W ; dE/dW = g^T x ; dE/db = Σ g   (over every leading axis)
    x, w, has_bias = ctx
    g2, x2 = g.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
    return g @ w, g2.T @ x2, g2.sum(axis=0) if has_bias else None


def flatten(x, start_dim, end_dim):
    shape = x.shape
    if not shape:
        return x.reshape(1), shape
    new = (*shape[:start_dim], int(np.prod(shape[start_dim : end_dim + 1])), *shape[end_dim + 1 :])
    return x.reshape(new), shape


def flatten_backward(shape, g):
    # flatten only moves units: dE/dx is dE/dy in x's shape
    return (g.reshape(shape),)


def _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    pads = [
        geometry.pool_padding(n, f, s, p, d, ceil_mode)
        for n, f, s, p, d in zip(x.shape[2:], kernel_size, stride, padding, dilation)
    ]
    out = [
        geometry.pool_output_size(n, f, s, p, d, ceil_mode)
        for n, f, s, p, d in zip(x.shape[2:], kernel_size, stride, padding, dilation)
    ]
    return pads, out


def _window(m, stride, dilation, out):
    return (
        Ellipsis,
        *(slice(mi * d, mi * d + s * (o - 1) + 1, s) for mi, s, d, o in zip(m, stride, dilation, out)),
    )


def max_pool(x, kernel_size, stride, padding, dilation, ceil_mode):
    pads, out = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    best = np.full((*x.shape[:2], *out), -np.inf, dtype=x.dtype)
    winner = np.zeros(best.shape, dtype=np.int64)  # index of the winning offset in row-major order
    for k, m in enumerate(itertools.product(*map(range, kernel_size))):
        v = xp[_window(m, stride, dilation, out)]
        # strictly greater, so ties keep the first offset (as PyTorch); a NaN wins, so it propagates
        better = (v > best) | (np.isnan(v) & ~np.isnan(best))
        best = np.where(better, v, best)
        winner = np.where(better, k, winner)
    return best, (x.shape, pads, out, winner, kernel_size, stride, dilation)


def max_pool_backward(ctx, g):
    # dE/dx goes to the winning unit of each window; every other unit gets 0
    shape, pads, out, winner, kernel_size, stride, dilation = ctx
    gp = np.zeros((*shape[:2], *(n + a + b for n, (a, b) in zip(shape[2:], pads))), dtype=g.dtype)
    for k, m in enumerate(itertools.product(*map(range, kernel_size))):
        gp[_window(m, stride, dilation, out)] += np.where(winner == k, g, 0)
    crop = (Ellipsis, *(slice(a, a + n) for n, (a, _) in zip(shape[2:], pads)))
    return (gp[crop],)


#: op name -> (forward, backward)
KERNELS = {
    "relu": (relu, relu_backward),
    "linear": (linear, linear_backward),
    "flatten": (flatten, flatten_backward),
    "max_pool": (max_pool, max_pool_backward),
}
