"""PyTorch kernels: one ``torch.autograd.Function`` per op, gradients derived by hand.

The ops come in the same order and under the same names as in
:mod:`cnnkit_numpy.ops`: ``conv``, ``max_pool``, ``avg_pool``, ``lp_pool``,
``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``flatten``, ``linear``,
``cross_entropy``. Each ``forward`` uses torch's forward primitives (``conv``,
``max_pool``, ``avg_pool``, ``matmul``); each ``backward`` computes the
lecture's formulas itself, with forward primitives as the engine: it never
calls autograd, ``torch.nn.grad`` or aten's own ``*_backward`` ops.

Symbols (the lecture's): ``y`` the layer input, ``W`` the kernel, ``a`` the
output, ``δ = dE/da`` the incoming deltas, ``δ_prev = dE/dy``, ``S`` stride,
``D`` dilation, ``⋆`` cross-correlation, ``⋆_full`` full cross-correlation.

Every Function is registered as a :class:`cnnkit.Kernel` whose ``call`` is the
Function's ``apply`` (autograd records cnnkit's gradients) and whose
``forward``/``backward`` run the very same ``forward``/``setup_context``/
``backward`` on a plain context object, under ``torch.no_grad()``, for
:func:`cnnkit.vjp`.

Attributes arrive in the core's canonical form (see :mod:`cnnkit.ops`) and are
never validated again here. Nothing here leaves the device: no ``.item()``,
no ``.cpu()``, no NumPy.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch._C import _functions as _autograd_functions
from torch.autograd.function import Function, once_differentiable

from cnnkit.geometry import bounded_window, conv_output_size, pool_output_size, pool_padding
from cnnkit.registry import Kernel
from cnnkit_torch import autotune
from cnnkit_torch.sizes import COLUMNS_CHUNK_BYTES

__all__ = [
    "KERNELS",
    "AvgPool",
    "Conv",
    "CrossEntropy",
    "Flatten",
    "LeakyReLU",
    "Linear",
    "LpPool",
    "MaxPool",
    "ReLU",
    "Sigmoid",
    "Tanh",
]

Pads = Sequence[tuple[int, int]]

_CONV = {1: torch.conv1d, 2: torch.conv2d, 3: torch.conv3d}
_CONV_T = {1: torch.conv_transpose1d, 2: torch.conv_transpose2d, 3: torch.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


# -- shared geometry helpers ---------------------------------------------------------------


def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def _pad_arg(pads: Pads) -> list[int]:
    """``(before, after)`` per axis, first axis first -> F.pad's last-axis-first list."""
    out: list[int] = []
    for lo, hi in reversed(pads):
        out += [lo, hi]
    return out


def _pad(x: torch.Tensor, pads: Pads, value: float = 0.0) -> torch.Tensor:
    if not any(lo or hi for lo, hi in pads):
        return x
    return F.pad(x, _pad_arg(pads), value=value)


def _crop(x: torch.Tensor, pads: Pads, size: Sequence[int]) -> torch.Tensor:
    """Undo :func:`_pad`: keep ``size`` units per axis starting after the ``before`` padding."""
    index = (slice(None), slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, size)))
    return x[index]


def _split_padding(pads: Pads) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """Split per-axis pairs into the symmetric part torch's convs take and the rest."""
    sym = tuple(min(lo, hi) for lo, hi in pads)
    rest = [(lo - s, hi - s) for (lo, hi), s in zip(pads, sym)]
    return sym, rest


def _ones_kernel(x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    return x.new_ones((1, 1, *kernel))


def _avg_pool_runs(x: torch.Tensor) -> bool:
    """torch's CPU ``avg_pool3d`` has no float16/bfloat16 kernel; a conv with ones does."""
    return not (x.dim() == 5 and x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16))


def _window_sum(
    x_pad: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> torch.Tensor:
    """``s[i] = Σ_m x_pad[S·i + D·m]`` per channel: the sum of each (already padded) window."""
    n, c, *size = x_pad.shape
    d = len(kernel)
    if all(v == 1 for v in dilation) and _avg_pool_runs(x_pad):
        if d == 1:
            return F.avg_pool2d(
                x_pad.unsqueeze(2), (1, kernel[0]), (1, stride[0]), divisor_override=1
            ).squeeze(2)
        return _AVG_POOL[d](x_pad, kernel, stride, divisor_override=1)
    s = _CONV[d](x_pad.reshape(n * c, 1, *size), _ones_kernel(x_pad, kernel), None, stride, 0, dilation)
    return s.view(n, c, *s.shape[2:])


def _window_spread(
    g: torch.Tensor,
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """The adjoint of :func:`_window_sum`: every unit of the padded input (``size``) gets
    ``Σ_{windows ∋ unit} g[window]``."""
    n, c, *out = g.shape
    d = len(kernel)
    if all(s == f for s, f in zip(stride, kernel)) and all(v == 1 for v in dilation):
        # windows tile the input: each unit lies in exactly one window, so spreading is a repeat
        shape = [n, c]
        view = [n, c]
        for o, f in zip(out, kernel):
            view += [o, 1]
            shape += [o, f]
        tiled = g.reshape(view).expand(shape).reshape(n, c, *(o * f for o, f in zip(out, kernel)))
        return _pad(tiled, [(0, full - o * f) for full, o, f in zip(size, out, kernel)])
    # full cross-correlation of the stride-dilated g with rot180(ones) = conv_transpose with ones
    extra = [
        full - ((o - 1) * s + dl * (f - 1) + 1)
        for full, o, s, f, dl in zip(size, out, stride, kernel, dilation)
    ]
    r = _CONV_T[d](
        g.reshape(n * c, 1, *out), _ones_kernel(g, kernel), None, stride, 0, tuple(extra), 1, dilation
    )
    return r.view(n, c, *size)


def _window_count(
    size: Sequence[int],
    out: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    include_pad: bool,
    like: torch.Tensor,
) -> torch.Tensor:
    """``|window|`` per output unit, shape ``out``: taps inside the input (and the declared
    padding when ``include_pad``), never the ceil-mode overhang. Built on ``like``'s device,
    by arithmetic per window (``O(O)``, not an ``(O, F)`` table of taps)."""
    count = None
    dev = like.device
    for axis, (n, o, f, s, (lo, hi), dl) in enumerate(zip(size, out, kernel, stride, pads, dilation)):
        start = torch.arange(o, device=dev) * s - lo  # input coordinate of each window's first tap
        first, end = (-lo, n + hi) if include_pad else (0, n)
        # taps m with first <= start + D·m < end: ceil((first - start)/D) <= m <= ceil((end - start)/D) - 1
        m_lo = (-((start - first) // dl)).clamp_min(0)
        m_hi = (-((start - end) // dl) - 1).clamp_max(f - 1)
        c = (m_hi - m_lo + 1).clamp_min(0).to(like.dtype)
        c = c.view([-1] + [1] * (len(size) - axis - 1))
        count = c if count is None else count * c
    assert count is not None
    return count


def _dense(t: torch.Tensor) -> bool:
    """False for a broadcast tensor (an axis of size > 1 with stride 0: one element, many places)."""
    return all(st != 0 for st, n in zip(t.stride(), t.shape) if n > 1)


def _bounded(x_shape: Sequence[int], kernel: Sequence[int], stride, padding, dilation):
    """Stride and dilation no larger than the padded input (:func:`cnnkit.geometry.bounded_window`):
    the same windows, and no 64-bit overflow in torch's arguments for a stride of 10**20."""
    return bounded_window(tuple(x_shape[2:]), tuple(kernel), stride, padding, dilation)


def _is_empty(x: Any) -> bool:
    """An empty batch (N = 0) or no channels (C = 0): nothing to compute, zeros of the right shape."""
    return math.prod(x.shape) == 0


# -- once differentiable, and saying so ----------------------------------------------------------


def _first_order_only(fn: Any) -> Any:
    """``once_differentiable``, and a clear error on every double backward.

    torch's decorator runs ``backward`` without building a graph but attaches the node that
    raises "trying to differentiate twice" only when the incoming gradient itself requires
    grad. With ``create_graph=True`` and a plain incoming gradient (``grad(loss, x,
    create_graph=True)``, a gradient penalty) the gradients came back as constants, so a second
    differentiation failed with an unrelated message or silently dropped this op's part. Here
    the error node is attached whenever ``backward`` runs with ``create_graph=True``.
    """
    inner = once_differentiable(fn)
    message = (
        f"cnnkit_torch.ops.{fn.__qualname__}: trying to differentiate twice a function that was "
        "marked with @once_differentiable (cnnkit's hand-derived gradients are first order only)"
    ).encode()

    @functools.wraps(fn)
    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        grads = inner(ctx, *grad_outputs)
        if not torch.is_grad_enabled():  # no create_graph: nothing will differentiate these
            return grads
        many = isinstance(grads, tuple)
        grads_ = grads if many else (grads,)
        if any(isinstance(g, torch.Tensor) and g.requires_grad for g in grads_):
            return grads  # torch's decorator attached the error node already
        fake = [g.detach().requires_grad_(True) if isinstance(g, torch.Tensor) else g for g in grads_]
        out = _autograd_functions.DelayedError(message, len(fake))(*fake)
        out = out if isinstance(out, tuple) else (out,)
        return out if many else out[0]

    return backward


# -- the plain context used by cnnkit.vjp ------------------------------------------------------


class _Ctx:
    """What ``setup_context`` and ``backward`` need of autograd's ctx, for the vjp path."""

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self.saved_tensors: tuple[Any, ...] = ()

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors: Any) -> None:
        pass


def _kernel(fn: type[Function], n_inputs: int, attrs: tuple[str, ...], n_outputs: int = 1) -> Kernel:
    """A :class:`Kernel` running ``fn``: ``call`` is ``fn.apply``; ``forward``/``backward`` run
    ``fn``'s own static methods on a :class:`_Ctx` for :func:`cnnkit.vjp`."""

    def call(*inputs: Any, **kw: Any) -> Any:
        out = fn.apply(*inputs, *(kw[k] for k in attrs))
        return out[0] if n_outputs > 1 else out

    def forward(*inputs: Any, **kw: Any) -> tuple[Any, _Ctx]:
        args = (*inputs, *(kw[k] for k in attrs))
        needs = tuple(isinstance(a, torch.Tensor) and a.is_floating_point() for a in inputs)
        ctx = _Ctx(needs + (False,) * len(attrs))
        with torch.no_grad():
            out = fn.forward(*args)
            fn.setup_context(ctx, args, out)
        return (out[0] if n_outputs > 1 else out), ctx

    def backward(ctx: _Ctx, grad_output: Any) -> tuple[Any, ...]:
        with torch.no_grad():  # cnnkit's own hand-written Function.backward, called directly
            grads = fn.backward(ctx, grad_output, *([None] * (n_outputs - 1)))
        return tuple(grads[:n_inputs])

    forward.__name__ = f"{fn.__name__.lower()}_forward"
    backward.__name__ = f"{fn.__name__.lower()}_backward"
    call.__name__ = f"{fn.__name__.lower()}_apply"
    return Kernel(forward=forward, backward=backward, call=call)


# -- conv --------------------------------------------------------------------------------------


def _conv_input_grad(
    dy: torch.Tensor,
    w: torch.Tensor,
    x_shape: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """``δ_prev = δ ⋆_full rot180(W)``: the full cross-correlation of the stride-dilated deltas
    with the 180°-rotated kernel, cropped to the input (padding removed).

    Stride 1: exactly that, one conv of ``δ`` (padded by ``D(F-1) - P``) with ``rot180(W)``,
    its in and out channels swapped. Stride > 1: ``conv_transpose`` with ``W``, which
    computes the same sum without building the zero-filled (stride-dilated) deltas.
    """
    d = len(stride)
    size = x_shape[2:]
    sym, rest = _split_padding(pads)
    full = [n + lo + hi for n, (lo, hi) in zip(size, rest)]  # padded by the asymmetric rest only
    # trailing input rows that no window reached (output size not whole) get output_padding
    extra = tuple(
        n + 2 * p - ((o - 1) * s + dl * (f - 1) + 1)
        for n, p, o, s, f, dl in zip(full, sym, dy.shape[2:], stride, w.shape[2:], dilation)
    )
    k, cg = w.shape[:2]
    if all(s == 1 for s in stride) and not any(extra):
        # stride 1: the lecture's formula as it stands, a conv of δ with rot180(W), channels swapped
        w_rot = w.flip(_spatial(w)).view(groups, k // groups, cg, *w.shape[2:]).transpose(1, 2)
        w_rot = w_rot.reshape(groups * cg, k // groups, *w.shape[2:])
        full_pads = [(dl * (f - 1) - p, dl * (f - 1) - p) for f, dl, p in zip(w.shape[2:], dilation, sym)]
        if all(lo >= 0 for lo, _ in full_pads):
            dx = _CONV[d](dy, w_rot, None, 1, tuple(lo for lo, _ in full_pads), dilation, groups)
            return _crop(dx, rest, size) if any(lo or hi for lo, hi in rest) else dx
    dx = _CONV_T[d](dy, w, None, stride, sym, extra, groups, dilation)
    return _crop(dx, rest, size) if any(lo or hi for lo, hi in rest) else dx


def _zero_borders(t: torch.Tensor, first: int, inner: Sequence[tuple[int, int]]) -> None:
    """Zero what lies outside ``[lo, lo + n)`` on the axes ``first, first + 1, ...`` of ``t``
    (``inner`` the ``(lo, n)`` per axis): the padding, without a fill of the whole buffer."""
    for a, (lo, size) in enumerate(inner):
        ax, total = first + a, t.shape[first + a]
        if lo > 0:
            t.narrow(ax, 0, lo).zero_()
        if lo + size < total:
            t.narrow(ax, lo + size, total - lo - size).zero_()


def _fill_channels_last(buf: torch.Tensor, x: torch.Tensor, pads: Pads) -> torch.Tensor:
    """``buf`` (N, *P, C) := ``y_pad`` channels-last, in one copy: the input written into place,
    only the padding zeroed (no zero-fill that the copy then overwrites)."""
    inner = [(lo, s_) for s_, (lo, _) in zip(x.shape[2:], pads)]
    buf[(slice(None), *(slice(lo, lo + s_) for lo, s_ in inner), slice(None))] = x.movedim(1, -1)
    _zero_borders(buf, 1, inner)
    return buf


def _conv_weight_grad_gemm(
    x: torch.Tensor, dy: torch.Tensor, kernel: Sequence[int], stride: int, pads: Pads, dilation: Sequence[int]
) -> torch.Tensor:
    """``dW[:, :, m] = Σ_n Σ_i δ[n, :, i] · y_pad[n, :, S·i + D·m]ᵀ``, one GEMM per kernel offset
    ``m`` over the whole batch (groups = 1, one stride on every axis).

    The padded input is laid out channel by channel, the samples of a channel one after the
    other, ``(C, N·ΠP)``; the deltas on the same grid ``(K, N·ΠP)`` (padded to the input's row
    length, zeros where no output is). The input units a kernel offset meets are then the
    columns ``S·i + off_m`` of one ``(C, units)`` view, so each offset is one
    ``(K, units) @ (units, C)`` GEMM over the whole batch, both operands contiguous along the
    summed axis: no im2col copy, no channels-last transpose, no per-sample products to sum.
    Both buffers are filled by plane copies; only their padding is zeroed.
    """
    n, c = x.shape[:2]
    k = dy.shape[1]
    d = len(kernel)
    out = dy.shape[2:]
    full = [size + lo + hi for size, (lo, hi) in zip(x.shape[2:], pads)]
    row = [math.prod(full[a + 1 :]) for a in range(d)]  # flat stride of each axis, in units
    t = out[0] * row[0]  # grid units of one sample that hold outputs
    rows0 = full[0]
    while (rows0 * row[0]) % stride:  # each sample starts on the grid: its length a multiple of S
        rows0 += 1
    per = rows0 * row[0]  # input units per sample
    tg = per // stride  # grid units per sample
    span = (n - 1) * tg + t  # grid units the GEMMs run over
    reach = stride * (span - 1) + sum(dl * (f - 1) * r for dl, f, r in zip(dilation, kernel, row)) + 1
    length = max(n * per, reach)
    buf = x.new_empty((c, length))
    planes = buf[:, : n * per].view(c, n, rows0, *full[1:])
    inner = [(lo, size) for size, (lo, _) in zip(x.shape[2:], pads)]
    planes[(slice(None), slice(None), *(slice(lo, lo + size) for lo, size in inner))] = x.transpose(0, 1)
    _zero_borders(planes, 2, inner)
    if length > n * per:
        buf[:, n * per :].zero_()
    # δ on the grid (O_1, P_2, ..., P_d) per sample (tg units apart), zeros where no output unit is
    grid = dy.new_empty((k, n, tg))
    cells = grid[:, :, :t].view(k, n, out[0], *full[1:])
    cells[(slice(None), slice(None), slice(None), *(slice(0, o) for o in out[1:]))] = dy.transpose(0, 1)
    _zero_borders(cells, 3, [(0, o) for o in out[1:]])
    if tg > t:
        grid[:, :, t:].zero_()
    delta = grid.view(k, n * tg)[:, :span]
    dw = x.new_empty((k, c, math.prod(kernel)))  # laid out like W
    for j, m in enumerate(itertools.product(*(range(f) for f in kernel))):
        offset = sum(dl * mm * r for dl, mm, r in zip(dilation, m, row))
        y_m = buf[:, offset : offset + stride * (span - 1) + 1 : stride]  # (C, units)
        dw[:, :, j] = delta @ y_m.t()  # (K, C): one GEMM over the whole batch
    return dw.view(k, c, *kernel)


def _conv_weight_grad_columns(
    x: torch.Tensor,
    dy: torch.Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
) -> torch.Tensor:
    """``dW = Σ_chunks δ (K, n·ΠO) @ columns (n·ΠO, ΠF·C)`` (groups = 1): the lecture's ``y ⋆ δ``
    over channels-last im2col columns ``[(n, i), (m, c)] = y_pad[n, c, S·i + D·m]``, for strided
    convs, where no strided view of the input is a matrix. The batch goes in chunks of about
    :data:`COLUMNS_CHUNK_BYTES` of columns; the padded chunk and its columns are written into two
    buffers made once per call (only the padding zeroed), one GEMM per chunk."""
    n, c = x.shape[:2]
    k, out = dy.shape[1], dy.shape[2:]
    units, width = math.prod(out), math.prod(kernel) * c  # columns per sample: rows, row length
    delta = dy.movedim(1, 0).reshape(k, n * units)  # (K, N·ΠO)
    step = min(n, max(1, COLUMNS_CHUNK_BYTES // (units * width * x.element_size())))
    full = [size + lo + hi for size, (lo, hi) in zip(x.shape[2:], pads)]
    y_buf = x.new_empty((step, *full, c))
    col_buf = x.new_empty((step * units, width))
    dw = None
    for n0 in range(0, n, step):
        nb = min(step, n - n0)
        y = _fill_channels_last(y_buf[:nb], x[n0 : n0 + nb], pads)  # (nb, *P, C)
        s_n, *s_sp, s_c = y.stride()
        win = y.as_strided(
            (nb, *out, *kernel, c),
            (s_n, *(s * r for s, r in zip(stride, s_sp)), *(dl * r for dl, r in zip(dilation, s_sp)), s_c),
        )
        columns = col_buf[: nb * units]
        columns.view(nb, *out, *kernel, c).copy_(win)  # (nb·ΠO, ΠF·C)
        d = delta[:, n0 * units : (n0 + nb) * units]
        dw = d @ columns if dw is None else dw.addmm_(d, columns)
    return dw.view(k, *kernel, c).movedim(-1, 1)


def _conv_weight_grad_conv(
    x: torch.Tensor,
    dy: torch.Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """``dW = y ⋆ δ``: the input cross-correlated with the deltas (taps ``S`` apart, the
    deltas' stride-dilation), as one conv with batch and channels swapped, per group."""
    d = len(kernel)
    n, c = x.shape[:2]
    cg = c // groups
    sym, rest = _split_padding(pads)
    x_p = _pad(x, rest)
    # (N, C, *P) -> (C/G, G·N, *P): each group's samples become the channels of one conv group
    y = x_p.reshape(n, groups, cg, *x_p.shape[2:]).permute(2, 1, 0, *range(3, d + 3))
    y = y.reshape(cg, groups * n, *x_p.shape[2:])
    dw = _CONV[d](y, dy.transpose(0, 1), None, dilation, sym, stride, groups)  # (C/G, K, *F')
    dw = dw[(slice(None), slice(None), *(slice(0, f) for f in kernel))]  # drop the trailing taps
    return dw.transpose(0, 1)


def _conv_weight_grad(
    x: torch.Tensor,
    dy: torch.Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    # the fastest route for this shape on this machine (autotune: timed once, else the fixed
    # rule measured on one CPU); all are y ⋆ δ
    route = autotune.dw_route(x, dy, kernel, stride, pads, dilation, groups)
    if route == "gemm":
        return _conv_weight_grad_gemm(x, dy, kernel, 1, pads, dilation)
    if route == "columns":
        return _conv_weight_grad_columns(x, dy, kernel, stride, pads, dilation)
    if route == "im2col":
        w_like = x.new_empty((dy.shape[1], x.shape[1], *kernel))  # only its shape is read
        return _conv_grads_im2col(x, w_like, dy, stride, pads, dilation, False, True)[1]
    return _conv_weight_grad_conv(x, dy, kernel, stride, pads, dilation, groups)


def _conv_grads_im2col(
    x: torch.Tensor,
    w: torch.Tensor,
    dy: torch.Tensor,
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dW`` and ``δ_prev`` (groups = 1) as the NumPy backend computes them, over the im2col
    columns ``[n, (c, m), i] = y_pad[n, c, S·i + D·m]``:

    ``dW = Σ_n δ[n] @ columns[n]ᵀ`` (one batched matmul) and ``δ_prev`` is ``Wᵀ @ δ``
    scattered back with one strided add per kernel offset ``m``. Used for few input
    channels, where the columns are small and oneDNN's conv with <= 4 output channels is slow.
    """
    n, c, *size = x.shape
    k, kernel = w.shape[0], w.shape[2:]
    out = dy.shape[2:]
    delta = dy.reshape(n, k, -1)  # (N, K, ΠO)
    full = [p + lo + hi for p, (lo, hi) in zip(size, pads)]
    dx = dw = None
    if need_w:
        x_pad = _pad(x, pads).contiguous()
        row = x_pad.stride()[2:]
        win = x_pad.as_strided(
            (n, c, *kernel, *out),
            (
                *x_pad.stride()[:2],
                *(dl * r for dl, r in zip(dilation, row)),
                *(s * r for s, r in zip(stride, row)),
            ),
        )
        cols = win.reshape(n, c * math.prod(kernel), -1)  # (N, C·ΠF, ΠO), one copy
        dw = torch.bmm(delta, cols.transpose(1, 2)).sum(0).view(w.shape)
    if need_x:
        w_t = w.reshape(k, -1).t().expand(n, -1, -1)  # (N, C·ΠF, K)
        dcol = torch.bmm(w_t, delta).view(n, c, -1, *out)  # (N, C, ΠF, *O)
        dx_pad = dy.new_zeros((n, c, *full))
        for j, m in enumerate(itertools.product(*(range(f) for f in kernel))):
            taps = (
                slice(dl * mm, dl * mm + s * (o - 1) + 1, s) for mm, s, dl, o in zip(m, stride, dilation, out)
            )
            dx_pad[(slice(None), slice(None), *taps)] += dcol[:, :, j]
        dx = _crop(dx_pad, pads, size)
    return dx, dw


def _conv_forward(x, w, b, stride, padding, dilation, groups, flip):
    if flip:
        w = w.flip(_spatial(w))
    sym, rest = _split_padding(padding)
    return _CONV[x.dim() - 2](_pad(x, rest), w, b, stride, sym, dilation, groups)


class Conv(Function):
    """``a = W ⋆ y + b`` (``flip=True``: ``rot180(W)``), in 1, 2 or 3 dimensions."""

    @staticmethod
    def forward(x, w, b, stride, padding, dilation, groups, flip):
        stride, dilation = _bounded(x.shape, w.shape[2:], stride, padding, dilation)
        if _is_empty(x) or _is_empty(w):  # N = 0 or C = 0: a = b (every product sums nothing)
            size = [
                conv_output_size(n, f, s_, p, dl)
                for n, f, s_, p, dl in zip(x.shape[2:], w.shape[2:], stride, padding, dilation)
            ]
            a = x.new_zeros((x.shape[0], w.shape[0], *size))
            return a if b is None else a + b.view(1, -1, *([1] * len(size)))
        return _conv_forward(x, w, b, stride, padding, dilation, groups, flip)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, _b, stride, padding, dilation, groups, flip = inputs
        ctx.save_for_backward(x, w)
        stride, dilation = _bounded(x.shape, w.shape[2:], stride, padding, dilation)
        ctx.attrs = (stride, padding, dilation, groups, flip)

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # dE/dW = y ⋆ δ (δ stride-dilated);  δ_prev = δ ⋆_full rot180(W);  dE/db = Σ_ij δ
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups, flip = ctx.attrs
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        spatial = _spatial(w)
        if _is_empty(x) or _is_empty(w):  # N = 0 or C = 0: every sum over n or c is empty
            dx = torch.zeros_like(x) if need_x else None
            dw = torch.zeros_like(w) if need_w else None
            db = dy.sum((0, *spatial)) if need_b else None
            return dx, dw, db, None, None, None, None, None
        w_used = w.flip(spatial) if flip and need_x else w  # rot180(W) is read by δ_prev only
        dx = dw = db = None
        # the route per gradient: timed on first sight of a shape, else the fixed rule (autotune)
        dx_route = autotune.dx_route(x, w_used, dy, stride, padding, dilation, groups) if need_x else None
        dw_route = (
            autotune.dw_route(x, dy, w.shape[2:], stride, padding, dilation, groups) if need_w else None
        )
        if "im2col" in (dx_route, dw_route):
            dx, dw = _conv_grads_im2col(
                x, w_used, dy, stride, padding, dilation, dx_route == "im2col", dw_route == "im2col"
            )
        if need_x and dx is None:
            dx = _conv_input_grad(dy, w_used, x.shape, stride, padding, dilation, groups)
        if need_w and dw is None:
            dw = _conv_weight_grad(x, dy, w.shape[2:], stride, padding, dilation, groups)
        if dw is not None and flip:
            dw = dw.flip(spatial)
        if dw is not None and dw.stride() != w.stride() and _dense(w):
            # laid out like W (a size-1 axis can leave other strides): DDP's buckets expect it;
            # a broadcast W (stride 0) has no such layout: its gradient stays dense
            dw = torch.empty_strided(w.shape, w.stride(), dtype=dw.dtype, device=dw.device).copy_(dw)
        if need_b:
            db = dy.sum((0, *spatial))
        return dx, dw, db, None, None, None, None, None


# -- pooling -----------------------------------------------------------------------------------


def _read_padding(x, kernel, stride, padding, dilation, ceil_mode) -> list[tuple[int, int]]:
    """The padding a pooling window really reads (ceil-mode overhang included)."""
    return [
        pool_padding(n, f, s, p, dl, ceil_mode)
        for n, f, s, p, dl in zip(x.shape[2:], kernel, stride, padding, dilation)
    ]


def _torch_pool_fits(x, kernel, padding, dilation=None) -> bool:
    """torch's own pooling takes symmetric padding up to half the kernel, an input at least
    as large as the window (and, for avg, no dilation)."""
    ok = all(lo == hi and 2 * lo <= f and n >= f for (lo, hi), f, n in zip(padding, kernel, x.shape[2:]))
    return ok and (dilation is None or all(v == 1 for v in dilation))


def _pool_empty(x, kernel, stride, padding, dilation, ceil_mode) -> torch.Tensor:
    """The (empty) output of a pooling over N = 0 samples or C = 0 channels."""
    size = [
        pool_output_size(n, f, s, p, dl, ceil_mode)
        for n, f, s, p, dl in zip(x.shape[2:], kernel, stride, padding, dilation)
    ]
    return x.new_zeros((*x.shape[:2], *size))


def _max_pool_forward(x, kernel, stride, padding, dilation, ceil_mode):
    d = x.dim() - 2
    if _is_empty(x):
        y = _pool_empty(x, kernel, stride, padding, dilation, ceil_mode)
        return y, torch.zeros(y.shape, dtype=torch.long, device=x.device), None
    if _torch_pool_fits(x, kernel, padding):
        pads = None
        y, idx = _MAX_POOL[d](x, kernel, stride, [lo for lo, _ in padding], dilation, ceil_mode, True)
    else:  # -inf padding never wins
        pads = _read_padding(x, kernel, stride, padding, dilation, ceil_mode)
        y, idx = _MAX_POOL[d](_pad(x, pads, float("-inf")), kernel, stride, 0, dilation, False, True)
    return y, idx, pads


class MaxPool(Function):
    """``a[i] = max_m y_pad[S·i + D·m]``; returns ``(a, winner)``, the winner's flat index."""

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode):
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        y, idx, _pads = _max_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
        return y, idx

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, dilation, ceil_mode = inputs
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        _y, idx = output
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        ctx.x_shape = x.shape
        fits = _torch_pool_fits(x, kernel_size, padding)
        ctx.pads = None if fits else _read_padding(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    @_first_order_only
    def backward(ctx, dy, _didx):
        # δ_prev[winner(i)] += δ[i]; every unit that did not win gets 0
        (idx,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        if math.prod(ctx.x_shape) == 0:  # N = 0 or C = 0
            return dy.new_zeros(ctx.x_shape), None, None, None, None, None
        n, c, *size = ctx.x_shape
        if ctx.pads is not None:
            size = [s + lo + hi for s, (lo, hi) in zip(size, ctx.pads)]
        dx = dy.new_zeros((n, c, math.prod(size)))
        dx.scatter_add_(2, idx.reshape(n, c, -1), dy.reshape(n, c, -1))
        dx = dx.view(n, c, *size)
        if ctx.pads is not None:
            dx = _crop(dx, ctx.pads, ctx.x_shape[2:])
        return dx, None, None, None, None, None


def _avg_pool_forward(x, kernel, stride, padding, dilation, ceil_mode, count_include_pad):
    d = x.dim() - 2
    if _is_empty(x):
        return _pool_empty(x, kernel, stride, padding, dilation, ceil_mode)
    if _torch_pool_fits(x, kernel, padding, dilation) and _avg_pool_runs(x):
        return _AVG_POOL[d](x, kernel, stride, [lo for lo, _ in padding], ceil_mode, count_include_pad)
    pads = _read_padding(x, kernel, stride, padding, dilation, ceil_mode)
    s = _window_sum(_pad(x, pads), kernel, stride, dilation)
    count = _window_count(x.shape[2:], s.shape[2:], kernel, stride, padding, dilation, count_include_pad, s)
    return s / count


class AvgPool(Function):
    """``a[i] = Σ_m y_pad[S·i + D·m] / |window_i|``."""

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad):
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        return _avg_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, dilation, *rest = inputs
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        ctx.x_shape = x.shape
        ctx.attrs = [kernel_size, stride, padding, dilation, *rest]

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev[u] = Σ_{windows i ∋ u} δ[i] / |window_i|
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        kernel, stride, padding, dilation, ceil_mode, include_pad = ctx.attrs
        size = ctx.x_shape[2:]
        if math.prod(ctx.x_shape) == 0:  # N = 0 or C = 0
            return dy.new_zeros(ctx.x_shape), None, None, None, None, None, None
        count = _window_count(size, dy.shape[2:], kernel, stride, padding, dilation, include_pad, dy)
        pads = [pool_padding(n, f, s, p, dl, ceil_mode) for n, f, s, p, dl in zip(size, *ctx.attrs[:4])]
        full = [n + lo + hi for n, (lo, hi) in zip(size, pads)]
        dx = _window_spread(dy / count, full, kernel, stride, dilation)
        return _crop(dx, pads, size), None, None, None, None, None, None


def _lp_power(x: torch.Tensor, p: float) -> torch.Tensor:
    if p == 2.0:
        return x * x
    return x.abs() if p == 1.0 else x.abs().pow(p)


class LpPool(Function):
    """``a[i] = (Σ_m |y_pad[S·i + D·m]|^p)^(1/p)``, the true Lp norm of each window."""

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode, norm_type):
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        if _is_empty(x):
            return _pool_empty(x, kernel_size, stride, padding, dilation, ceil_mode)
        pads = _read_padding(x, kernel_size, stride, padding, dilation, ceil_mode)
        s = _window_sum(_pad(_lp_power(x, norm_type), pads), kernel_size, stride, dilation)
        if norm_type == 1.0:
            return s
        return s.sqrt() if norm_type == 2.0 else s.pow(1.0 / norm_type)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, dilation, *rest = inputs
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        ctx.save_for_backward(x, output)
        ctx.attrs = [kernel_size, stride, padding, dilation, *rest]

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev[u] = Σ_{windows i ∋ u} δ[i] · a[i]^(1-p) · |y[u]|^(p-1) · sign(y[u])  (0 where a[i] = 0)
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        x, a = ctx.saved_tensors
        kernel, stride, padding, dilation, ceil_mode, p = ctx.attrs
        size = x.shape[2:]
        if _is_empty(x):  # N = 0 or C = 0
            return torch.zeros_like(x), None, None, None, None, None, None
        pads = _read_padding(x, kernel, stride, padding, dilation, ceil_mode)
        g = (
            dy if p == 1.0 else torch.where(a != 0, dy * a.pow(1.0 - p), torch.zeros_like(dy))
        )  # NaN stays NaN
        full = [n + lo + hi for n, (lo, hi) in zip(size, pads)]
        spread = _crop(_window_spread(g, full, kernel, stride, dilation), pads, size)
        if p == 2.0:
            return spread * x, None, None, None, None, None, None
        local = x.sign() if p == 1.0 else x.sign() * x.abs().pow(p - 1.0)
        if p < 1.0:  # |y|^(p-1) is infinite at 0, where sign(y) = 0: that unit gets 0
            local = torch.where(x != 0, local, torch.zeros_like(local))
        return spread * local, None, None, None, None, None, None


# -- activations -------------------------------------------------------------------------------


class ReLU(Function):
    """``y' = max(0, a)``."""

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = 1 where a > 0, else 0
        (y,) = ctx.saved_tensors
        return (dy * (y > 0) if ctx.needs_input_grad[0] else None,)


class LeakyReLU(Function):
    """``y' = a`` where ``a > 0``, else ``negative_slope · a``."""

    @staticmethod
    def forward(x, negative_slope):
        return torch.where(x > 0, x, x * negative_slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, negative_slope = inputs
        ctx.save_for_backward(x)
        ctx.negative_slope = negative_slope

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = 1 where a > 0, else negative_slope
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return torch.where(x > 0, dy, dy * ctx.negative_slope), None


class Sigmoid(Function):
    """``y' = σ(a) = 1 / (1 + e^-a)``."""

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = σ(a)(1 - σ(a))
        (y,) = ctx.saved_tensors
        return (dy * y * (1 - y) if ctx.needs_input_grad[0] else None,)


class Tanh(Function):
    """``y' = tanh(a)``."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = 1 - tanh(a)^2
        (y,) = ctx.saved_tensors
        return (dy * (1 - y * y) if ctx.needs_input_grad[0] else None,)


# -- flatten, linear, loss ---------------------------------------------------------------------


class Flatten(Function):
    """Merge dims ``start_dim..end_dim`` into one (a new tensor: the output owns its memory)."""

    @staticmethod
    def forward(x, start_dim, end_dim):
        if x.dim() == 0:
            return x.reshape(1).clone()
        return x.flatten(start_dim, end_dim).clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.x_shape = inputs[0].shape

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev = δ reshaped back to the input's shape
        return (dy.reshape(ctx.x_shape).clone() if ctx.needs_input_grad[0] else None), None, None


class Linear(Function):
    """``a = y Wᵀ + b``."""

    @staticmethod
    def forward(x, w, b):
        return F.linear(x, w, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, _b = inputs
        ctx.save_for_backward(x, w)

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev = δ W;  dE/dW = δᵀ y;  dE/db = Σ_n δ
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        rows = math.prod(dy.shape[:-1])  # explicit: -1 is ambiguous when a side is empty
        dy2 = dy.reshape(rows, w.shape[0])
        dx = (dy @ w) if need_x else None
        dw = (dy2.t() @ x.reshape(rows, w.shape[1])) if need_w else None
        db = dy2.sum(0) if need_b else None
        return dx, dw, db


class CrossEntropy(Function):
    """``E_n = log Σ_c e^{a[n, c]} - a[n, t_n]``, reduced by mean, sum or not at all."""

    @staticmethod
    def forward(x, target, reduction):
        lse = torch.logsumexp(x, 1)
        loss = lse - x.gather(1, target.long().unsqueeze(1)).squeeze(1)
        if reduction == "mean":
            return loss.mean()
        return loss.sum() if reduction == "sum" else loss

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, target, reduction = inputs
        ctx.save_for_backward(x, target)
        ctx.reduction = reduction

    @staticmethod
    @_first_order_only
    def backward(ctx, dy):
        # δ_prev = (softmax(a) - onehot(t)) · δ   (÷ N for the mean)
        if not ctx.needs_input_grad[0]:
            return None, None, None
        x, target = ctx.saved_tensors
        dx = torch.softmax(x, 1)
        t = target.long().unsqueeze(1)
        dx.scatter_add_(1, t, torch.full_like(t, -1, dtype=dx.dtype))
        if ctx.reduction == "none":
            return dx * dy.unsqueeze(1), None, None
        if ctx.reduction == "mean":
            dy = dy / x.shape[0]
        return dx * dy, None, None


_POOL_ATTRS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")

#: One kernel per op kind, in the order of :mod:`cnnkit_numpy.ops`.
KERNELS: dict[str, Kernel] = {
    "conv": _kernel(Conv, 3, ("stride", "padding", "dilation", "groups", "flip")),
    "max_pool": _kernel(MaxPool, 1, _POOL_ATTRS, n_outputs=2),
    "avg_pool": _kernel(AvgPool, 1, (*_POOL_ATTRS, "count_include_pad")),
    "lp_pool": _kernel(LpPool, 1, (*_POOL_ATTRS, "norm_type")),
    "relu": _kernel(ReLU, 1, ()),
    "leaky_relu": _kernel(LeakyReLU, 1, ("negative_slope",)),
    "sigmoid": _kernel(Sigmoid, 1, ()),
    "tanh": _kernel(Tanh, 1, ()),
    "flatten": _kernel(Flatten, 1, ("start_dim", "end_dim")),
    "linear": _kernel(Linear, 3, ()),
    "cross_entropy": _kernel(CrossEntropy, 2, ("reduction",)),
}
