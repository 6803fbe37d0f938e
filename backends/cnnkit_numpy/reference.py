"""The executable definition: conv and pooling as literal loops, the sums as the lecture writes them.

Slow on purpose and used only by the tests, which hold the vectorised kernels
of :mod:`cnnkit_numpy.ops` equal to these. One version serves 1, 2 and 3
spatial dimensions: ``i`` runs over output positions and ``m`` over kernel
offsets, each a tuple with one entry per spatial axis (``(i, j)`` and
``(m, n')`` in 2-D). Arguments are in the canonical form of :mod:`cnnkit.ops`:
``stride``, ``dilation``, ``kernel_size`` one int per axis, ``padding`` one
``(before, after)`` pair per axis.

Example:
    >>> import numpy as np
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> conv(x, np.ones((1, 1, 2, 2)), stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
"""

from __future__ import annotations

import numpy as np

from cnnkit.geometry import pool_output_size, pool_padding

__all__ = ["avg_pool", "conv", "conv_backward", "lp_pool", "max_pool", "max_pool_backward"]


def _pad(x, padding, value=0.0):
    widths = ((0, 0), (0, 0), *padding)
    return np.pad(x, widths, constant_values=value)


def _tap(i, m, stride, dilation):
    """The padded-input position ``S·i + D·m`` that offset ``m`` of window ``i`` reads."""
    return tuple(s * ii + d * mm for ii, mm, s, d in zip(i, m, stride, dilation))


def conv(x, w, b=None, *, stride, padding, dilation, groups=1, flip=False, padding_mode="zeros"):
    """``a[n, k, i] = b[k] + Σ_c Σ_m W[k, c, m] · x_pad[n, g·C/G + c, S·i + D·m]``, g = k's group.

    ``flip=True`` first rotates W by 180°: the lecture's true convolution. ``padding_mode``
    other than ``"zeros"`` pads by NumPy's ``reflect``, ``edge`` or ``wrap`` first.
    """
    if padding_mode != "zeros":
        mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[padding_mode]
        x = np.pad(x, ((0, 0), (0, 0), *padding), mode=mode)
        padding = tuple((0, 0) for _ in padding)
    if flip:
        w = w[(slice(None), slice(None), *(slice(None, None, -1),) * (w.ndim - 2))]
    N = x.shape[0]
    K, Cg = w.shape[:2]
    F = w.shape[2:]
    Kg = K // groups
    x_pad = _pad(x, padding)
    O = tuple(
        (n + p[0] + p[1] - d * (f - 1) - 1) // s + 1
        for n, f, s, p, d in zip(x.shape[2:], F, stride, padding, dilation)
    )
    a = np.zeros((N, K, *O), dtype=x.dtype)
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for i in np.ndindex(*O):
                total = 0.0 if b is None else b[k]
                for c in range(Cg):
                    for m in np.ndindex(*F):
                        total += w[(k, c, *m)] * x_pad[(n, g * Cg + c, *_tap(i, m, stride, dilation))]
                a[(n, k, *i)] = total
    return a


def conv_backward(x, w, delta, *, stride, padding, dilation, groups=1):
    """The lecture's gradients of the cross-correlation, written as its sums (no ``flip``).

    - ``dE/dW[k, c, m] = Σ_n Σ_i δ[n, k, i] · y_pad[n, g·C/G + c, S·i + D·m]``
    - ``δ_prev = δ' ⋆_full rot180(W)``: ``δ'`` is δ dilated by the stride
      (``S-1`` zeros between neighbours) and padded by ``D·(F-1)`` on each side;
      the full correlation runs over the padded input, then the padding is cut.
    - ``dE/db[k] = Σ_n Σ_i δ[n, k, i]``

    Returns:
        ``(dx, dW, db)``.
    """
    N = x.shape[0]
    K, Cg = w.shape[:2]
    F = w.shape[2:]
    Kg = K // groups
    O = delta.shape[2:]
    x_pad = _pad(x, padding)
    dW = np.zeros(w.shape, dtype=x.dtype)
    for k in range(K):
        g = k // Kg
        for c in range(Cg):
            for m in np.ndindex(*F):
                total = 0.0
                for n in range(N):
                    for i in np.ndindex(*O):
                        total += delta[(n, k, *i)] * x_pad[(n, g * Cg + c, *_tap(i, m, stride, dilation))]
                dW[(k, c, *m)] = total
    db = delta.sum(axis=(0, *range(2, delta.ndim)))
    # δ': dilate by the stride, then pad by D·(F-1) on both sides
    edge = tuple(d * (f - 1) for f, d in zip(F, dilation))
    d_dil = np.zeros((N, K, *(s * (o - 1) + 1 + 2 * e for s, o, e in zip(stride, O, edge))), dtype=x.dtype)
    for n in range(N):
        for k in range(K):
            for i in np.ndindex(*O):
                d_dil[(n, k, *(e + s * ii for e, s, ii in zip(edge, stride, i)))] = delta[(n, k, *i)]
    w_rot = w[(slice(None), slice(None), *(slice(None, None, -1),) * (w.ndim - 2))]
    reach = tuple(s * (o - 1) + 1 + e for s, o, e in zip(stride, O, edge))  # units the windows read
    dx_pad = np.zeros(x_pad.shape, dtype=x.dtype)
    for n in range(N):
        for g in range(groups):
            for c in range(Cg):
                for p in np.ndindex(*reach):
                    total = 0.0
                    for k in range(g * Kg, (g + 1) * Kg):
                        for m in np.ndindex(*F):
                            total += d_dil[(n, k, *_tap(p, m, (1,) * len(F), dilation))] * w_rot[(k, c, *m)]
                    dx_pad[(n, g * Cg + c, *p)] = total
    inner = tuple(slice(b, b + size) for size, (b, _) in zip(x.shape[2:], padding))
    return dx_pad[(slice(None), slice(None), *inner)], dW, db


def _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode):
    reads = tuple(
        pool_padding(n, f, s, p, d, ceil_mode)
        for n, f, s, p, d in zip(x.shape[2:], kernel_size, stride, padding, dilation)
    )
    O = tuple(
        pool_output_size(n, f, s, p, d, ceil_mode)
        for n, f, s, p, d in zip(x.shape[2:], kernel_size, stride, padding, dilation)
    )
    return reads, O


def max_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode=False):
    """``out[n, c, i] = max_m x_pad[n, c, S·i + D·m]`` with -inf padding.

    Returns:
        ``(out, winner)``: ``winner[n, c, i]`` is the padded-input position of
        the first maximum in row-major window order, as a tuple.
    """
    N, C = x.shape[:2]
    reads, O = _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode)
    x_pad = _pad(x, reads, -np.inf)
    out = np.zeros((N, C, *O), dtype=x.dtype)
    winner = np.zeros((N, C, *O), dtype=object)
    for n in range(N):
        for c in range(C):
            for i in np.ndindex(*O):
                best, where = None, None
                for m in np.ndindex(*kernel_size):
                    p = _tap(i, m, stride, dilation)
                    v = x_pad[(n, c, *p)]
                    if best is None or v > best or (np.isnan(v) and not np.isnan(best)):
                        best, where = v, p
                out[(n, c, *i)] = best
                winner[(n, c, *i)] = where
    return out, winner


def max_pool_backward(x, delta, winner, *, kernel_size, stride, padding, dilation, ceil_mode=False):
    """``δ_prev[winner(i)] += δ[i]``; every unit that won no window gets 0."""
    N, C = x.shape[:2]
    padding_read, _ = _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode)
    dx_pad = _pad(np.zeros_like(x), padding_read)
    for n in range(N):
        for c in range(C):
            for i in np.ndindex(*delta.shape[2:]):
                dx_pad[(n, c, *winner[(n, c, *i)])] += delta[(n, c, *i)]
    inner = tuple(slice(b, b + size) for size, (b, _) in zip(x.shape[2:], padding_read))
    return dx_pad[(slice(None), slice(None), *inner)]


def avg_pool(
    x,
    *,
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """``out[n, c, i] = Σ_m x_pad[n, c, S·i + D·m] / |window|``.

    ``|window|`` counts the taps inside the declared padded input
    (``count_include_pad=True``; taps in ceil_mode's extra region do not count)
    or only the taps on real input units (``False``); ``divisor_override`` replaces it.
    """
    N, C = x.shape[:2]
    reads, O = _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode)
    x_pad = _pad(x, reads)
    out = np.zeros((N, C, *O), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in np.ndindex(*O):
                total, count = 0.0, 0
                for m in np.ndindex(*kernel_size):
                    p = _tap(i, m, stride, dilation)
                    total += x_pad[(n, c, *p)]
                    real = all(b <= q < b + size for q, size, (b, _) in zip(p, x.shape[2:], padding))
                    declared = all(q < size + b + a for q, size, (b, a) in zip(p, x.shape[2:], padding))
                    count += real or (count_include_pad and declared)
                out[(n, c, *i)] = total / (count if divisor_override is None else divisor_override)
    return out


def lp_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode=False, norm_type):
    """``out[n, c, i] = (Σ_m |x_pad[n, c, S·i + D·m]|^p)^(1/p)``, the true p-norm, zero padding."""
    N, C = x.shape[:2]
    reads, O = _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode)
    x_pad = _pad(x, reads)
    out = np.zeros((N, C, *O), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in np.ndindex(*O):
                total = 0.0
                for m in np.ndindex(*kernel_size):
                    total += abs(x_pad[(n, c, *_tap(i, m, stride, dilation))]) ** norm_type
                out[(n, c, *i)] = total ** (1.0 / norm_type)
    return out
