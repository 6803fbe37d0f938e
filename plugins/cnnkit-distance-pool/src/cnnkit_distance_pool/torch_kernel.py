"""The PyTorch implementation of ``distance_pool``: the same sums with torch operations.

Imported only when the ``torch`` backend asks for its kernels. The backward
is the hand-derived formula (a strided scatter of ``w_m · δ``); it never calls
autograd.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from cnnkit import geometry
from cnnkit_distance_pool.spec import distance_weights

__all__ = ["DistancePoolFunction", "distance_pool", "distance_pool_backward", "distance_pool_call"]


def _taps(kernel_size, stride, out_size):
    for m in itertools.product(*[range(f) for f in kernel_size]):
        yield m, tuple(slice(mi, mi + s * (o - 1) + 1, s) for mi, s, o in zip(m, stride, out_size))


def distance_pool(x: torch.Tensor, *, kernel_size, stride, padding, sigma) -> tuple[torch.Tensor, Any]:
    """Forward: ``y = Σ_m w_m · x_pad[..., S·i + m]``; returns ``(y, ctx)``."""
    w = distance_weights(kernel_size, sigma).tolist()  # nested lists of Python floats
    flat_pad = [p for pair in reversed(padding) for p in pair]  # F.pad order: last axis first
    with torch.no_grad():
        x_pad = torch.nn.functional.pad(x, flat_pad)
        out_size = [
            geometry.conv_output_size(n, f, s, p)
            for n, f, s, p in zip(x.shape[2:], kernel_size, stride, padding)
        ]
        y = x.new_zeros((*x.shape[:2], *out_size))
        for m, window in _taps(kernel_size, stride, out_size):
            wm = w
            for mi in m:
                wm = wm[mi]
            y.add_(x_pad[(Ellipsis, *window)], alpha=wm)
    return y, (w, tuple(kernel_size), tuple(x.shape), tuple(x_pad.shape), padding, stride, out_size)


def distance_pool_backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor]:
    # dE/dx_pad[..., S·i + m] += w_m · δ[..., i]; then crop the padding away
    w, kernel_size, x_shape, pad_shape, padding, stride, out_size = ctx
    with torch.no_grad():
        dx_pad = dy.new_zeros(pad_shape)
        for m, window in _taps(kernel_size, stride, out_size):
            wm = w
            for mi in m:
                wm = wm[mi]
            dx_pad[(Ellipsis, *window)].add_(dy, alpha=wm)
        crop = tuple(slice(p0, p0 + n) for (p0, _), n in zip(padding, x_shape[2:]))
        return (dx_pad[(Ellipsis, *crop)].contiguous(),)


class DistancePoolFunction(torch.autograd.Function):
    """``distance_pool`` for autograd: forward and the manual backward above."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, sigma):
        y, ctx.saved = distance_pool(x, kernel_size=kernel_size, stride=stride, padding=padding, sigma=sigma)
        return y

    @staticmethod
    def backward(ctx, dy):
        (dx,) = distance_pool_backward(ctx.saved, dy)
        return dx, None, None, None, None


def distance_pool_call(x: torch.Tensor, *, kernel_size, stride, padding, sigma) -> torch.Tensor:
    """What ``cnnkit.call`` runs: the Function, so that ``loss.backward()`` uses our gradient."""
    return DistancePoolFunction.apply(x, kernel_size, stride, padding, sigma)
