"""The NumPy implementation of ``distance_pool``: the definition, one loop over window offsets.

``y[n, ch, i] = Σ_m w_m · x_pad[n, ch, S·i + m]``; the loop runs over the
offsets ``m`` of the window (a handful), never over pixels or the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit import geometry
from cnnkit_distance_pool.spec import distance_weights

__all__ = ["distance_pool", "distance_pool_backward"]


def _taps(kernel_size, stride, out_size):
    """For each window offset m: (m, the strided slices of x_pad it reads)."""
    for m in np.ndindex(*kernel_size):
        yield m, tuple(slice(mi, mi + s * (o - 1) + 1, s) for mi, s, o in zip(m, stride, out_size))


def distance_pool(x: np.ndarray, *, kernel_size, stride, padding, sigma) -> tuple[np.ndarray, Any]:
    """Forward: ``y = Σ_m w_m · x_pad[..., S·i + m]``; returns ``(y, ctx)``."""
    w = distance_weights(kernel_size, sigma).astype(x.dtype)  # (F_1, ..., F_d)
    x_pad = np.pad(x, ((0, 0), (0, 0), *padding))  # (N, C, *padded)
    out_size = [
        geometry.conv_output_size(n, f, s, p) for n, f, s, p in zip(x.shape[2:], kernel_size, stride, padding)
    ]
    y = np.zeros((*x.shape[:2], *out_size), dtype=x.dtype)  # (N, C, *O)
    for m, window in _taps(kernel_size, stride, out_size):
        y += w[m] * x_pad[(Ellipsis, *window)]
    return y, (w, x.shape, x_pad.shape, padding, stride, out_size)


def distance_pool_backward(ctx: Any, dy: np.ndarray) -> tuple[np.ndarray]:
    # dE/dx_pad[..., S·i + m] += w_m · δ[..., i]; then crop the padding away
    w, x_shape, pad_shape, padding, stride, out_size = ctx
    dx_pad = np.zeros(pad_shape, dtype=dy.dtype)
    for m, window in _taps(w.shape, stride, out_size):
        dx_pad[(Ellipsis, *window)] += w[m] * dy
    crop = tuple(slice(p0, p0 + n) for (p0, _), n in zip(padding, x_shape[2:]))
    return (dx_pad[(Ellipsis, *crop)],)
