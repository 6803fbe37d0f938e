"""NumPy kernels: the lecture's formulas, vectorised, one forward and one backward per op.

Every op is a pair ``<op>_forward(*inputs, **attrs) -> (output, ctx)`` and
``<op>_backward(ctx, grad_output) -> grads`` (one gradient per input, ``None``
for an absent bias or integer targets), collected in :data:`KERNELS`. Inputs
arrive validated and attributes canonical (see :mod:`cnnkit.ops`): tuples per
spatial axis, padding as ``((before, after), ...)``. One implementation serves
1, 2 and 3 spatial dimensions; the output has the input's dtype. Batch norm and
dropout sit in their own section at the end (batch norm updates its running
statistics in place, as torch's does).

Symbols are the lecture's: ``x`` (the input ``y^{l-1}``), ``W``, ``b``, ``δ``
(``dE/da``, the incoming gradient), ``S`` stride, ``D`` dilation, ``F`` kernel
size, ``m`` a kernel offset, ``i`` an output position, ``x_pad`` the padded
input. Windows are views made with :func:`numpy.lib.stride_tricks.as_strided`
(nothing is copied until the im2col buffer is filled); conv is one BLAS
contraction per batch chunk; every scatter is a loop over kernel offsets that
adds a strided slice (never ``np.add.at``). The literal-loop definitions these
equal live in :mod:`cnnkit_numpy.reference`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnnkit.geometry import bounded_window, pool_output_size, pool_padding, taps_inside
from cnnkit_numpy import threads as _threads

__all__ = ["CHUNK_BYTES", "KEEP_COLUMNS_BYTES", "KERNELS"]

#: Size of the im2col buffer of one batch chunk: conv works through the batch
#: in chunks of this many bytes of columns, so its extra memory does not grow with N.
#: About a core's L2 cache: the columns are still cached when the matmul reads them
#: (on the 2-core benchmark machine 2 MiB beat 8 MiB by 15-40% on W2 and conv1d).
CHUNK_BYTES = 2 * 2**20
#: Forward keeps its columns for backward when all of them fit in this many bytes;
#: above it, backward rebuilds them chunk by chunk, which measured faster than
#: keeping tens of MiB of fresh (page-faulting, uncached) memory alive.
KEEP_COLUMNS_BYTES = 8 * 2**20


#: NaN and inf propagate silently (no RuntimeWarning) through every kernel.
_quiet = np.errstate(all="ignore")

Pads = tuple[tuple[int, int], ...]


# -- windows ---------------------------------------------------------------------------


def _pad(x: np.ndarray, padding: Pads, value: float = 0.0) -> np.ndarray:
    """``x`` (N, C, *spatial) with ``value`` added ``(before, after)`` on each spatial axis."""
    if not any(b or a for b, a in padding):
        return x
    shape = x.shape[:2] + tuple(n + b + a for n, (b, a) in zip(x.shape[2:], padding))
    x_pad = np.full(shape, value, dtype=x.dtype)
    x_pad[_inner(x.shape[2:], padding)] = x
    return x_pad


def _inner(spatial: tuple[int, ...], padding: Pads) -> tuple:
    """The index of the unpadded input inside the padded one."""
    return (Ellipsis, *(slice(b, b + n) for n, (b, _) in zip(spatial, padding)))


def _out_size(n: int, f: int, s: int, pad: tuple[int, int], d: int) -> int:
    return (n + pad[0] + pad[1] - d * (f - 1) - 1) // s + 1


def _windows(x_pad: np.ndarray, kernel, stride, dilation, out) -> np.ndarray:
    """Read-only view ``(N, C, *O, *F)`` with ``[n, c, i, m] = x_pad[n, c, S·i + D·m]``."""
    s_n, s_c, *s_sp = x_pad.strides
    shape = (*x_pad.shape[:2], *out, *kernel)
    strides = (s_n, s_c, *(s * S for s, S in zip(s_sp, stride)), *(s * D for s, D in zip(s_sp, dilation)))
    return as_strided(x_pad, shape, strides, writeable=False)


def _taps(kernel, stride, dilation, out) -> Iterator[tuple[int, tuple[int, ...], tuple]]:
    """Each kernel offset ``m`` in row-major order: ``(t, m, slice)``, ``t`` its number, ``slice``
    the units ``x_pad[..., S·i + D·m]`` it reads for every output ``i``."""
    for t, m in enumerate(np.ndindex(*kernel)):
        sl = tuple(
            slice(D * mi, D * mi + S * (o - 1) + 1, S) for mi, S, D, o in zip(m, stride, dilation, out)
        )
        yield t, m, (Ellipsis, *sl)


def _rot180(w: np.ndarray) -> np.ndarray:
    """The kernel rotated 180° on every spatial axis (a view)."""
    return w[(slice(None), slice(None), *(slice(None, None, -1),) * (w.ndim - 2))]


def _as(g: np.ndarray, dtype) -> np.ndarray:
    """The incoming gradient in the forward's dtype (a float64 ``δ`` must not upcast a float32 op)."""
    return np.asarray(g).astype(dtype, copy=False)


def _chunks(
    n: int, bytes_per_sample: int, chunk_bytes: int | None = None, start: int = 0
) -> Iterator[tuple[int, int]]:
    """Ranges of the samples ``start .. start + n - 1`` whose columns take about ``chunk_bytes``
    (:data:`CHUNK_BYTES`)."""
    step = max(1, (chunk_bytes or CHUNK_BYTES) // max(1, bytes_per_sample))
    for n0 in range(start, start + n, step):
        yield n0, min(start + n, n0 + step)


# -- convolution -----------------------------------------------------------------------


def _conv_geometry(x_shape, k, kernel, stride, padding, dilation, groups) -> dict:
    """Sizes shared by conv forward and backward; ``grid`` is where outputs are computed.

    With stride 1 on every axis (and more input taps ``C·ΠF`` than filters ``K``),
    outputs are computed on the *padded grid*
    ``(O_1, P_2, ..., P_d)`` (``P`` the padded sizes): the window of output ``i``
    then starts at flat offset ``i`` of the padded input, so every kernel tap
    ``m`` reads one contiguous run ``x_flat[off_m : off_m + Π grid]`` and the
    columns are copied in long runs. The extra columns (``P_a - O_a`` per row)
    are computed and dropped. Otherwise ``grid`` is the output itself.
    """
    spatial = x_shape[2:]
    out = tuple(_out_size(*a) for a in zip(spatial, kernel, stride, padding, dilation))
    padded = tuple(n + b + a for n, (b, a) in zip(spatial, padding))
    # the grid's extra outputs cost an output-sized copy: worth it when the columns are the
    # bigger buffer (more input taps C·ΠF than filters K), as in every conv with many channels
    flat = all(S == 1 for S in stride) and all(o > 0 for o in out) and x_shape[1] * math.prod(kernel) > k
    grid = (out[0], *padded[1:]) if flat else out
    rows = [math.prod(padded[a + 1 :]) for a in range(len(padded))]  # flat stride of each axis
    return {
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "out": out,
        "padded": padded,
        "flat": flat,
        "grid": grid,
        "tap_step": tuple(D * r for D, r in zip(dilation, rows)),  # flat distance between taps
        "slack": sum(D * (F - 1) * r for D, F, r in zip(dilation[1:], kernel[1:], rows[1:])),
    }


def _flat_padded(x: np.ndarray, geo: dict) -> np.ndarray:
    """``x`` zero-padded, flattened per channel, with ``slack`` zeros after: ``(nb, C, ΠP + slack)``."""
    nb, c = x.shape[:2]
    size = math.prod(geo["padded"])
    x_flat = np.zeros((nb, c, size + geo["slack"]), dtype=x.dtype)
    x_flat[..., :size].reshape(nb, c, *geo["padded"])[_inner(x.shape[2:], geo["padding"])] = x
    return x_flat


def _im2col(x: np.ndarray, geo: dict) -> np.ndarray:
    """Columns ``(nb, G, C/G·ΠF [+ 1], Π grid)``: ``[n, g, (c, m), i] = x_pad[n, g·C/G + c, S·i + D·m]``.

    One copy of the windows, sample-major, so that ``W @ columns`` lands in the
    output's own layout ``(nb, K, *grid)`` and ``δ`` needs no transpose in backward.
    With a bias, one more row of ones: the bias is the weight of a constant input 1,
    so the matmul adds ``b`` and backward's ``δ @ columnsᵀ`` sums ``δ`` into ``dE/db``.
    """
    nb, c = x.shape[:2]
    kernel, grid, groups = geo["kernel"], geo["grid"], geo["groups"]
    rows, p = c // groups * math.prod(kernel), math.prod(grid)
    col = np.empty((nb, groups, rows + geo["ones"], p), dtype=x.dtype)
    taps = col[:, :, :rows].reshape(nb, groups, c // groups, *kernel, *grid)  # a view of col
    if geo["flat"]:  # tap m reads the contiguous run starting at off_m = Σ D·m·row
        x_flat = _flat_padded(x, geo)
        s_n, s_c, s_i = x_flat.strides
        steps = tuple(s_i * t for t in geo["tap_step"])
        win = as_strided(x_flat, (nb, c, *kernel, p), (s_n, s_c, *steps, s_i), writeable=False)
    else:
        d = x.ndim - 2
        x_pad = _pad(x, geo["padding"])
        win = _windows(x_pad, kernel, geo["stride"], geo["dilation"], grid)  # (nb, C, *O, *F)
        win = win.transpose(0, 1, *range(2 + d, 2 + 2 * d), *range(2, 2 + d))  # (nb, C, *F, *O)
    src = win.reshape(taps.shape)  # a view: C split into (G, C/G), Π grid into the grid's axes

    def copy(lo: int, hi: int) -> None:  # one slab of channels
        np.copyto(taps[:, :, lo:hi], src[:, :, lo:hi])

    _threads.run_slabs(copy, c // groups, taps.nbytes, geo.get("threads"))  # slabs of channels
    if geo["ones"]:
        col[:, :, rows] = 1
    return col


def _col2im(dcol: np.ndarray, dx: np.ndarray, geo: dict) -> None:
    """The adjoint of :func:`_im2col` into ``dx``: ``δ_prev[n, c, S·i + D·m] += dcol[n, (c, m), i]``,
    one strided add per kernel offset ``m``."""
    nb, c, *spatial = dx.shape
    kernel, grid = geo["kernel"], geo["grid"]
    dcol = dcol.reshape(nb, c, *kernel, math.prod(grid))  # (nb, C, *F, Π grid)
    inner = _inner(tuple(spatial), geo["padding"])
    if geo["flat"]:  # tap m adds to the contiguous run starting at off_m
        size, n_grid = math.prod(geo["padded"]), math.prod(grid)
        dx_flat = np.empty((nb, c, size + geo["slack"]), dtype=dx.dtype)

        def scatter(lo: int, hi: int) -> None:  # one slab of channels, every tap
            part, d_part = dx_flat[:, lo:hi], dcol[:, lo:hi]
            for j, m in enumerate(np.ndindex(*kernel)):
                off = sum(t * mi for t, mi in zip(geo["tap_step"], m))
                if j == 0:  # offset 0 covers the first Π grid units: set them, zero the rest
                    part[..., :n_grid] = d_part[(slice(None), slice(None), *m)]
                    part[..., n_grid:] = 0
                else:
                    part[..., off : off + n_grid] += d_part[(slice(None), slice(None), *m)]
            dx[:, lo:hi] = part[..., :size].reshape(nb, hi - lo, *geo["padded"])[inner]

        _threads.run_slabs(scatter, c, dcol.nbytes, geo.get("threads"))
        return
    dx_pad = np.zeros((nb, c, *geo["padded"]), dtype=dx.dtype)
    dcol = dcol.reshape(nb, c, *kernel, *grid)

    def scatter_taps(lo: int, hi: int) -> None:
        part, d_part = dx_pad[:, lo:hi], dcol[:, lo:hi]
        for _, m, sl in _taps(kernel, geo["stride"], geo["dilation"], grid):
            part[sl] += d_part[(slice(None), slice(None), *m)]  # (nb, C, *O)
        dx[:, lo:hi] = part[inner]

    _threads.run_slabs(scatter_taps, c, dcol.nbytes, geo.get("threads"))


def _on_grid(geo: dict) -> tuple:
    """The index of the real outputs ``(…, *O)`` inside an array laid out on ``grid``."""
    return (Ellipsis, *(slice(0, o) for o in geo["out"]))


def _mode_padded(x, padding, padding_mode):
    """``x`` padded in ``padding_mode`` by the pad op's kernel (``None``: zeros, left to conv)."""
    if padding_mode == "zeros" or not any(lo or hi for lo, hi in padding):
        return None
    pads = ((0, 0), (0, 0), *padding)
    return pad_nd_forward(x, pads=pads, mode=padding_mode, value=0.0)


#: The batch-chunk sizes (bytes of columns) and copy threads the first call of a conv shape
#: times (forward and backward, on its own inputs), the fastest kept per shape for the process.
#: ``CNNKIT_AUTOTUNE=0`` (or calls under :data:`TUNE_MIN_FLOPS`) take :data:`CHUNK_BYTES` and
#: :data:`cnnkit_numpy.threads.THREADS` instead.
CHUNK_CANDIDATES = (1 * 2**20, 2 * 2**20, 4 * 2**20, 8 * 2**20)
TUNE_MIN_FLOPS = 20_000_000
_tuned: dict[tuple, tuple[int, int]] = {}
#: Every choice the tuner made: ``key -> {"chunk_bytes", "threads", "times_ms", "cost_ms"}``.
TUNED: dict[str, dict[str, Any]] = {}


def _autotune_on() -> bool:
    return os.environ.get("CNNKIT_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off", "")


def _conv_config(x, weight, bias, attrs: dict) -> tuple[int | None, int | None]:
    """``(chunk_bytes, copy_threads)`` for this conv: measured once per shape, else the constants."""
    k, kernel = weight.shape[0], weight.shape[2:]
    flops = x.shape[0] * k * x.shape[1] // attrs["groups"] * math.prod(kernel) * math.prod(x.shape[2:])
    if flops < TUNE_MIN_FLOPS or not _autotune_on():
        return None, None
    key = (
        x.shape,
        weight.shape,
        bias is not None,
        x.dtype.str,
        _threads.THREADS,
        *(repr(attrs[a]) for a in sorted(attrs)),
    )
    found = _tuned.get(key)
    if found is not None:
        return found
    import time

    t_start = time.perf_counter()

    def run(cfg: tuple[int, int]) -> float:
        t0 = time.perf_counter()
        a, ctx = _conv_forward(x, weight, bias, cfg=cfg, **attrs)
        conv_backward(ctx, a)
        return (time.perf_counter() - t0) * 1e3

    def fastest(cfgs: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
        # rounds that run every configuration once in turn: a burst of load falls on all alike
        out = dict.fromkeys(cfgs, math.inf)
        for _ in range(2):
            for cfg in cfgs:
                out[cfg] = min(out[cfg], run(cfg))
        return out

    threads = max(1, _threads.THREADS)
    times = fastest([(ch, threads) for ch in CHUNK_CANDIDATES])
    best = min(times, key=times.__getitem__)
    if threads > 1:
        times.update(fastest([(best[0], 1), best]))
        best = min(times, key=times.__getitem__)
    _tuned[key] = best
    TUNED[repr(key)] = {
        "chunk_bytes": best[0],
        "threads": best[1],
        "times_ms": {f"{ch // 2**10} KiB x{t}": round(v, 3) for (ch, t), v in times.items()},
        "cost_ms": round((time.perf_counter() - t_start) * 1e3, 3),
    }
    return best


@_quiet
def conv_forward(x, weight, bias=None, *, stride, padding, dilation, groups, flip, padding_mode="zeros"):
    """The convolution below, its input first padded in ``padding_mode`` (``"zeros"``: by the conv)."""
    padded = _mode_padded(x, padding, padding_mode)
    if padded is None:
        return _conv_tuned(
            x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip
        )
    x_pad, pad_ctx = padded
    none = tuple((0, 0) for _ in padding)
    a, ctx = _conv_tuned(
        x_pad, weight, bias, stride=stride, padding=none, dilation=dilation, groups=groups, flip=flip
    )
    return a, ("padded", ctx, pad_ctx)


@_quiet
def _conv_tuned(x, weight, bias=None, *, stride, padding, dilation, groups, flip):
    """``a[n, k, i] = b[k] + Σ_c Σ_m W[k, c, m] · x_pad[n, g·C/G + c, S·i + D·m]`` (``flip``: rot180(W)).

    The batch chunk size and the threads of the copies are measured for each new shape
    (:func:`_conv_config`); see :func:`_conv_forward` for the computation.
    """
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip)
    return _conv_forward(x, weight, bias, cfg=_conv_config(x, weight, bias, attrs), **attrs)


def _conv_forward(x, weight, bias, *, stride, padding, dilation, groups, flip, cfg):
    """``a[n, k, i] = b[k] + Σ_c Σ_m W[k, c, m] · x_pad[n, g·C/G + c, S·i + D·m]`` (``flip``: rot180(W)).

    Shapes: x ``(N, C, *spatial)``, W ``(K, C/G, *F)``, b ``(K,)`` -> a ``(N, K, *O)``.
    The windows become columns ``(nb, G, C/G·ΠF [+ 1], Π grid)`` one batch chunk at a
    time, and the sum over ``c, m`` (and ``+ b``) is one matmul ``[W | b] @ columns``.
    """
    W = _rot180(weight) if flip else weight
    n, c = x.shape[:2]
    k, kernel = W.shape[0], W.shape[2:]
    # the same windows with S, D <= the padded input: a stride of 10**20 never reaches as_strided
    stride, dilation = bounded_window(x.shape[2:], kernel, stride, padding, dilation)
    geo = _conv_geometry(x.shape, k, kernel, stride, padding, dilation, groups)
    geo["ones"] = int(bias is not None)
    geo["chunk"], geo["threads"] = cfg
    out, grid = geo["out"], geo["grid"]
    W_mat = W.reshape(groups, k // groups, -1)  # (G, K/G, C/G·ΠF)
    if bias is not None:  # b as one more column of W, the weight of the columns' row of ones
        W_mat = np.concatenate((W_mat, bias.reshape(groups, k // groups, 1).astype(x.dtype)), axis=2)
    W_mat = np.ascontiguousarray(W_mat)
    p = math.prod(grid)
    a = np.empty((n, k, *out), dtype=x.dtype)
    a_grid = a if grid == out else None
    col_bytes = c * math.prod(kernel) * p * x.itemsize  # per sample
    keep = n * col_bytes <= KEEP_COLUMNS_BYTES
    cols: dict[tuple[int, int], np.ndarray] = {}

    def slab(lo: int, hi: int) -> None:  # samples lo..hi-1, chunk by chunk
        for n0, n1 in _chunks(hi - lo, col_bytes, geo["chunk"], start=lo):
            nb = n1 - n0
            col = _im2col(x[n0:n1], geo)  # (nb, G, C/G·ΠF, Π grid)
            a_c = a_grid[n0:n1] if a_grid is not None else np.empty((nb, k, *grid), dtype=x.dtype)
            np.matmul(W_mat, col, out=a_c.reshape(nb, groups, k // groups, p))
            if a_grid is None:
                a[n0:n1] = a_c[_on_grid(geo)]
            if keep:
                cols[n0, n1] = col

    _threads.run_slabs(slab, n, x.nbytes, geo["threads"], blas=True)  # one slab of samples per thread
    ctx = (x, W, W_mat, flip, bias is not None, geo, cols if keep else None)
    return a, ctx


@_quiet
def conv_backward(ctx, grad_output):
    # dE/dW = y ⋆ δ;  δ_prev = (δ dilated by S, padded) ⋆_full rot180(W);  dE/db = Σ_ij δ
    # (padding_mode: δ_prev = pad_nd's backward of the padded input's gradient)
    if isinstance(ctx[0], str):  # ("padded", conv's ctx, pad_nd's ctx)
        _, conv_ctx, pad_ctx = ctx
        dx_pad, dW, db = _conv_backward(conv_ctx, grad_output)
        return pad_nd_backward(pad_ctx, dx_pad)[0], dW, db
    return _conv_backward(ctx, grad_output)


@_quiet
def _conv_backward(ctx, grad_output):
    # dE/dW = y ⋆ δ;  δ_prev = (δ dilated by S, padded) ⋆_full rot180(W);  dE/db = Σ_ij δ
    # (index form: dW[k,c,m] = Σ_n Σ_i δ[n,k,i]·y_pad[n,c,S·i+D·m]; δ_prev scattered per offset m)
    x, W, W_mat, flip, has_bias, geo, cols = ctx
    delta = np.ascontiguousarray(_as(grad_output, x.dtype))
    n, c = x.shape[:2]
    k = W.shape[0]
    groups, out, grid = geo["groups"], geo["out"], geo["grid"]
    p = math.prod(grid)
    rows = W_mat.shape[2] - geo["ones"]  # C/G·ΠF
    dx = np.empty_like(x)
    W_t = W_mat[:, :, :rows].transpose(0, 2, 1)  # (G, C/G·ΠF, K/G)
    col_bytes = c * math.prod(W.shape[2:]) * p * x.itemsize

    def slab(lo: int, hi: int) -> np.ndarray:  # samples lo..hi-1: their δ_prev, and their part of dW
        dW = np.zeros(W_mat.shape, dtype=x.dtype)  # (G, K/G, C/G·ΠF [+ 1]): [dE/dW | dE/db]
        for n0, n1 in _chunks(hi - lo, col_bytes, geo["chunk"], start=lo):
            nb = n1 - n0
            if grid == out:
                d_c = delta[n0:n1]
            else:  # δ on the grid, zero where no output is: those columns then add nothing
                d_c = np.zeros((nb, k, *grid), dtype=x.dtype)
                d_c[_on_grid(geo)] = delta[n0:n1]
            d_c = d_c.reshape(nb, groups, k // groups, p)  # δ in the columns' layout
            col = cols.get((n0, n1)) if cols is not None else None
            if col is None:
                col = _im2col(x[n0:n1], geo)
            # Σ over (n, i): the cross-correlation of y with δ (and Σ δ against the row of ones)
            dW += np.matmul(d_c, col.transpose(0, 1, 3, 2)).sum(axis=0)
            dcol = np.matmul(W_t, d_c)  # (nb, G, C/G·ΠF, Π grid): each δ times each rotated-kernel tap
            _col2im(dcol, dx[n0:n1], geo)  # the scatter = full correlation with rot180(W)
        return dW

    # one slab of samples per thread (the forward's slabs), their sums added in slab order
    dW, *rest = _threads.run_slabs(slab, n, x.nbytes, geo["threads"], blas=True)
    for part in rest:
        dW += part
    db = dW[:, :, rows].reshape(k) if has_bias else None  # Σ_n Σ_i δ[n, k, i]
    dW = np.ascontiguousarray(dW[:, :, :rows]).reshape(W.shape)
    if flip:
        dW = np.ascontiguousarray(_rot180(dW))
    return dx, dW, db


# -- pooling ---------------------------------------------------------------------------


def _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode) -> dict:
    spatial = x.shape[2:]
    # the same windows with S, D <= the padded input: a stride of 10**20 never reaches as_strided
    stride, dilation = bounded_window(spatial, kernel_size, stride, padding, dilation)
    reads = tuple(
        pool_padding(n, f, s, p, d, ceil_mode)
        for n, f, s, p, d in zip(spatial, kernel_size, stride, padding, dilation)
    )
    out = tuple(
        pool_output_size(n, f, s, p, d, ceil_mode)
        for n, f, s, p, d in zip(spatial, kernel_size, stride, padding, dilation)
    )
    overlap = any(S < D * (F - 1) + 1 for F, S, D in zip(kernel_size, stride, dilation))
    return {
        "kernel": kernel_size,
        "stride": stride,
        "dilation": dilation,
        "padding": padding,
        "reads": reads,
        "out": out,
        "overlap": overlap,
        "x_shape": x.shape,
        "dtype": x.dtype,
    }


def _pool_scatter(r: np.ndarray, geo: dict, pick=None, scale=None) -> np.ndarray:
    """``δ_prev[n, c, S·i + D·m] += r[n, c, i]`` over every offset ``m`` (``r / scale`` where a
    ``scale`` is given; ``pick(t, lo, hi)``: the mask of offset ``t`` for samples ``lo..hi-1``),
    one slab of samples per thread (:mod:`cnnkit_numpy.threads`)."""
    x_shape = geo["x_shape"]
    padded = tuple(n + b + a for n, (b, a) in zip(x_shape[2:], geo["reads"]))
    unpadded = padded == tuple(x_shape[2:])
    dx = np.zeros(x_shape, dtype=r.dtype) if unpadded else np.empty(x_shape, dtype=r.dtype)

    def slab(lo: int, hi: int) -> None:
        r_s = r[lo:hi] if scale is None else r[lo:hi] / scale
        dx_pad = dx[lo:hi] if unpadded else np.zeros((hi - lo, x_shape[1], *padded), dtype=r.dtype)
        # windows that do not overlap write each unit once; a finite r times a 0/1 mask is r or 0
        finite = pick is not None and not geo["overlap"] and bool(np.isfinite(r_s).all())
        for t, _, sl in _taps(geo["kernel"], geo["stride"], geo["dilation"], geo["out"]):
            if pick is None:
                if geo["overlap"]:
                    dx_pad[sl] += r_s
                else:
                    dx_pad[sl] = r_s
            elif finite:
                np.multiply(r_s, pick(t, lo, hi), out=dx_pad[sl])
            elif geo["overlap"]:
                dx_pad[sl] += np.where(pick(t, lo, hi), r_s, 0)
            else:
                np.copyto(dx_pad[sl], r_s, where=pick(t, lo, hi))
        if not unpadded:
            dx[lo:hi] = dx_pad[_inner(x_shape[2:], geo["reads"])]

    _threads.run_slabs(slab, x_shape[0], dx.nbytes)
    return dx


#: A window of more taps than this is reduced in one gather (``(N, C, *O, ΠF)``, at most
#: :data:`KEEP_COLUMNS_BYTES`) instead of a loop over its offsets (Python steps over tiny arrays).
MANY_TAPS = 64


def _gathered(x_pad: np.ndarray, geo: dict) -> np.ndarray | None:
    """Every window as a row, ``(N, C, *O, ΠF)``, when there are many taps and it is small; else ``None``."""
    ntaps = math.prod(geo["kernel"])
    rows_bytes = math.prod(x_pad.shape[:2]) * math.prod(geo["out"]) * ntaps * x_pad.itemsize
    if ntaps <= MANY_TAPS or rows_bytes > KEEP_COLUMNS_BYTES:
        return None
    win = _windows(x_pad, geo["kernel"], geo["stride"], geo["dilation"], geo["out"])
    return win.reshape(*win.shape[: 2 + len(geo["out"])], ntaps)


def _scatter_winners(r: np.ndarray, winner: np.ndarray, geo: dict) -> np.ndarray:
    """``δ_prev[n, c, S·i + D·m*] += r[n, c, i]`` for the winner ``m*`` of each window: one bincount."""
    x_shape = geo["x_shape"]
    padded = tuple(n + b + a for n, (b, a) in zip(x_shape[2:], geo["reads"]))
    taps = np.unravel_index(winner, geo["kernel"])  # m* per axis, shape (N, C, *O)
    flat = np.zeros(winner.shape, dtype=np.int64)
    for axis, (m, S, D, P) in enumerate(zip(taps, geo["stride"], geo["dilation"], padded)):
        i = np.arange(geo["out"][axis]).reshape([-1 if a == axis else 1 for a in range(len(padded))])
        flat = flat * P + (S * i + D * m)  # the winner's flat position in its padded plane
    nc = math.prod(x_shape[:2])
    plane = math.prod(padded)
    flat += (np.arange(nc) * plane).reshape(*x_shape[:2], *([1] * len(padded)))
    dx = np.bincount(flat.ravel(), weights=r.ravel(), minlength=nc * plane).astype(r.dtype, copy=False)
    dx_pad = dx.reshape(*x_shape[:2], *padded)
    if padded == tuple(x_shape[2:]):
        return dx_pad
    return np.ascontiguousarray(dx_pad[_inner(x_shape[2:], geo["reads"])])


@_quiet
def max_pool_forward(x, *, kernel_size, stride, padding, dilation, ceil_mode):
    """``out[n, c, i] = max_m x_pad[n, c, S·i + D·m]``, padding = -inf; saves the winning offset.

    Ties go to the first maximum in row-major window order; a NaN in a window
    makes its output NaN (and its winner the first NaN).
    """
    geo = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    ntaps = math.prod(kernel_size)
    rows = _gathered(_pad(x, geo["reads"], -np.inf), geo) if ntaps > MANY_TAPS else None
    if rows is not None:  # many taps, few outputs: argmax picks the first maximum (or first NaN)
        winner = rows.argmax(axis=-1)
        return np.take_along_axis(rows, winner[..., None], -1)[..., 0].copy(), (geo, winner)
    winner = np.zeros((*x.shape[:2], *geo["out"]), dtype=np.uint8 if ntaps <= 255 else np.int32)
    best = np.empty(winner.shape, dtype=x.dtype)

    def slab(lo: int, hi: int) -> None:  # samples lo..hi-1
        x_s, best_s, winner_s = _pad(x[lo:hi], geo["reads"], -np.inf), best[lo:hi], winner[lo:hi]
        better = np.empty(winner_s.shape, dtype=bool)
        for t, _, sl in _taps(kernel_size, geo["stride"], geo["dilation"], geo["out"]):
            v = x_s[sl]
            if t == 0:
                np.copyto(best_s, v)
                continue
            np.greater(v, best_s, out=better)  # strict: an equal later value does not win
            winner_s *= ~better  # winner = t where better, else unchanged (arithmetic: faster than a
            winner_s += better * winner_s.dtype.type(t)  # masked copy)
            np.maximum(best_s, v, out=best_s)  # NaN propagates
        nan = np.isnan(best_s)
        if nan.any():  # a window with a NaN: the first NaN wins
            for t, _, sl in reversed(list(_taps(kernel_size, geo["stride"], geo["dilation"], geo["out"]))):
                np.copyto(winner_s, t, where=nan & np.isnan(x_s[sl]))

    _threads.run_slabs(slab, x.shape[0], x.nbytes)  # one slab of samples per thread
    return best, (geo, winner)


@_quiet
def max_pool_backward(ctx, grad_output):
    # δ_prev[n,c,S·i+D·m*] = δ[n,c,i] for the saved winner m* of window i; every other unit gets 0
    geo, winner = ctx
    if math.prod(geo["kernel"]) > MANY_TAPS:
        return (_scatter_winners(_as(grad_output, geo["dtype"]), winner, geo),)
    return (_pool_scatter(_as(grad_output, geo["dtype"]), geo, pick=lambda t, lo, hi: winner[lo:hi] == t),)


def _avg_divisor(geo: dict, count_include_pad: bool, dtype) -> np.ndarray:
    """``|window|`` per output, shape ``(1, 1, *O)``: taps inside the declared padded input, or real units."""
    counts = []
    for n, f, s, (b, a), d, o in zip(
        geo["x_shape"][2:], geo["kernel"], geo["stride"], geo["padding"], geo["dilation"], geo["out"]
    ):
        lo, hi = (0, n + b + a) if count_include_pad else (b, b + n)  # in padded coordinates
        counts.append(taps_inside(o, f, s, d, lo, hi))  # per window, not per tap: O(O) memory
    div = counts[0]
    for cnt in counts[1:]:
        div = np.multiply.outer(div, cnt)
    return div.astype(dtype).reshape(1, 1, *geo["out"])


@_quiet
def avg_pool_forward(
    x, *, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override=None
):
    """``out[n, c, i] = Σ_m x_pad[n, c, S·i + D·m] / |window_i|`` (zero padding; or ``/ divisor``)."""
    geo = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    if divisor_override is None:
        div = _avg_divisor(geo, count_include_pad, x.dtype)
    else:
        div = np.full((1, 1, *geo["out"]), divisor_override, dtype=x.dtype)
    total = np.empty((*x.shape[:2], *geo["out"]), dtype=x.dtype)

    def slab(lo: int, hi: int) -> None:  # samples lo..hi-1
        x_s, total_s = _pad(x[lo:hi], geo["reads"]), total[lo:hi]
        for t, _, sl in _taps(kernel_size, geo["stride"], geo["dilation"], geo["out"]):
            if t == 0:
                np.copyto(total_s, x_s[sl])
            else:
                total_s += x_s[sl]
        total_s /= div

    _threads.run_slabs(slab, x.shape[0], x.nbytes)  # one slab of samples per thread
    return total, (geo, div)


@_quiet
def avg_pool_backward(ctx, grad_output):
    # δ_prev[n,c,S·i+D·m] += δ[n,c,i] / |window_i| for every offset m of the window
    geo, div = ctx
    return (_pool_scatter(_as(grad_output, div.dtype), geo, scale=div),)


def _abs_pow(x: np.ndarray, p: float) -> np.ndarray:
    if p == 1.0:
        return np.abs(x)
    if p == 2.0:
        return np.square(x)
    return np.abs(x) ** p


@_quiet
def lp_pool_forward(x, *, kernel_size, stride, padding, dilation, ceil_mode, norm_type):
    """``out[n, c, i] = (Σ_m |x_pad[n, c, S·i + D·m]|^p)^(1/p)``, the true p-norm (zero padding)."""
    p = norm_type
    geo = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    a_pad = _pad(_abs_pow(x, p), geo["reads"])  # |x|^p, padded
    total = None
    for _, _, sl in _taps(kernel_size, geo["stride"], geo["dilation"], geo["out"]):
        if total is None:
            total = a_pad[sl].copy()
        else:
            total += a_pad[sl]
    out = np.sqrt(total) if p == 2.0 else total if p == 1.0 else total ** (1.0 / p)
    return out, (x, out, p, geo)


@_quiet
def lp_pool_backward(ctx, grad_output):
    # δ_prev[x] = Σ_{windows i ∋ x} δ[i] · sign(x)|x|^(p-1) / out[i]^(p-1), and 0 where out[i] == 0
    x, out, p, geo = ctx
    grad_output = _as(grad_output, x.dtype)
    if p == 1.0:
        r = np.where(out == 0, 0, grad_output)
    else:
        r = np.where(out == 0, 0, grad_output / out ** (p - 1.0))
    spread = _pool_scatter(r, geo)
    if p == 2.0:
        local = x
    elif p == 1.0:
        local = np.sign(x)
    else:
        local = np.sign(x) * np.abs(x) ** (p - 1.0)
        if p < 1.0:
            local = np.where(x == 0, 0, local)
    spread *= local
    return (spread,)


# -- activations -----------------------------------------------------------------------


@_quiet
def relu_forward(x):
    """``y = max(x, 0)``."""
    return np.maximum(x, 0), x


@_quiet
def relu_backward(ctx, grad_output):
    # δ_prev = f'(a) ⊙ δ with f'(a) = 1 where a > 0, else 0
    x = ctx
    return (np.where(x > 0, _as(grad_output, x.dtype), 0),)


@_quiet
def leaky_relu_forward(x, *, negative_slope):
    """``y = x`` where ``x > 0``, else ``negative_slope · x``."""
    return np.where(x > 0, x, x * negative_slope), (x, negative_slope)


@_quiet
def leaky_relu_backward(ctx, grad_output):
    # δ_prev = f'(a) ⊙ δ with f'(a) = 1 where a > 0, else negative_slope
    x, slope = ctx
    grad_output = _as(grad_output, x.dtype)
    return (np.where(x > 0, grad_output, grad_output * slope),)


@_quiet
def sigmoid_forward(x):
    """``y = 1 / (1 + e^-x)``, computed without overflow for large ``|x|``."""
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return y, y


@_quiet
def sigmoid_backward(ctx, grad_output):
    # δ_prev = f'(a) ⊙ δ with f'(a) = σ(a)(1 - σ(a))
    y = ctx
    return (_as(grad_output, y.dtype) * y * (1 - y),)


@_quiet
def tanh_forward(x):
    """``y = tanh(x)``."""
    y = np.tanh(x)
    return y, y


@_quiet
def tanh_backward(ctx, grad_output):
    # δ_prev = f'(a) ⊙ δ with f'(a) = 1 - tanh(a)²
    y = ctx
    return (_as(grad_output, y.dtype) * (1 - y * y),)


# -- flatten, linear, loss -------------------------------------------------------------


def flatten_forward(x, *, start_dim, end_dim):
    """Dims ``start_dim..end_dim`` of ``x`` merged into one (a new array, never a view of ``x``)."""
    shape = x.shape
    if not shape:
        return x.reshape(1).copy(), (shape, x.dtype)
    new = (*shape[:start_dim], math.prod(shape[start_dim : end_dim + 1]), *shape[end_dim + 1 :])
    return x.reshape(new).copy(), (shape, x.dtype)


def flatten_backward(ctx, grad_output):
    # δ_prev = δ reshaped back to the input's shape
    shape, dtype = ctx
    return (np.array(grad_output, dtype=dtype).reshape(shape),)  # a copy: never a view of δ


@_quiet
def linear_forward(x, weight, bias=None):
    """``y = x W^T + b``: x ``(*, in)``, W ``(out, in)``, b ``(out,)`` -> y ``(*, out)``."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


@_quiet
def linear_backward(ctx, grad_output):
    # δ_prev = δ W;  dE/dW = δ^T y;  dE/db = Σ_rows δ
    x, W, has_bias = ctx
    grad_output = _as(grad_output, x.dtype)
    rows = math.prod(grad_output.shape[:-1])  # explicit: -1 is ambiguous when a side is empty
    delta = grad_output.reshape(rows, W.shape[0])  # (rows, out)
    dx = (grad_output @ W).reshape(x.shape)
    dW = delta.T @ x.reshape(rows, W.shape[1])
    db = delta.sum(axis=0) if has_bias else None
    return dx, dW, db


@_quiet
def cross_entropy_forward(logits, target, weight=None, *, reduction, ignore_index=-100, label_smoothing=0.0):
    """``E_n = -Σ_c q_nc log softmax(z_n)_c``, then mean, sum or none (torch's semantics).

    ``q_nc = w_c ((1 - ε)[c = t_n] + ε/C)`` for class indices (0 where ``t_n`` is ignored),
    ``w_c ((1 - ε) t_nc + ε/C)`` for probabilities. Mean: ``Σ E_n / Σ_n w_{t_n}`` over the
    positions kept (class indices), ``Σ E_n / (N·Π spatial)`` (probabilities).
    Shapes: logits ``(N, C, *)``, target ``(N, *)`` ints or ``(N, C, *)`` -> ``()`` or ``(N, *)``.
    """
    c = logits.shape[1]
    z = logits - logits.max(axis=1, keepdims=True)  # stable: the largest logit is 0
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (N, C, *) log-softmax
    w = np.ones(c, dtype=logits.dtype) if weight is None else weight
    w_c = w.reshape((1, c) + (1,) * (logits.ndim - 2))  # (1, C, 1, ...)
    eps = label_smoothing
    probabilities = target.dtype.kind == "f"
    if probabilities:
        q = w_c * (target * (1 - eps) + eps / c)  # (N, C, *)
        denom = logits.size // c if logits.size else 0
    else:
        kept = target != ignore_index  # (N, *)
        t = np.where(kept, target, 0)
        classes = np.arange(c).reshape((1, c) + (1,) * (logits.ndim - 2))
        q = w_c * np.where(classes == t[:, None], 1 - eps + eps / c, eps / c)
        q *= kept[:, None]
        denom = (w[t] * kept).sum()
    q = q.astype(logits.dtype, copy=False)
    loss = -np.where(q != 0, q * log_p, 0).sum(axis=1)  # (N, *): a zero target never meets -inf
    if reduction == "sum":
        out = np.asarray(loss.sum(), dtype=logits.dtype)
    elif reduction == "mean":
        out = np.asarray(loss.sum() / denom, dtype=logits.dtype)
    else:
        out = loss.astype(logits.dtype, copy=False)
    return out, (log_p, q, denom, reduction, probabilities, w_c, eps)


@_quiet
def cross_entropy_backward(ctx, grad_output):
    # dE/dz_n = (softmax(z_n) Σ_c q_nc - q_n) · δ_n   (δ ÷ the mean's denominator)
    # dE/dt_nc = -(1 - ε) w_c log p_nc · δ_n           (probability targets)
    log_p, q, denom, reduction, probabilities, w_c, eps = ctx
    g = np.asarray(grad_output, dtype=log_p.dtype)
    if reduction == "none":
        g = g[:, None]  # (N, 1, *)
    elif reduction == "mean":
        g = g / np.asarray(denom, dtype=log_p.dtype)
    dz = (np.exp(log_p) * q.sum(axis=1, keepdims=True) - q) * g
    dt = (-(1 - eps) * w_c * log_p * g).astype(log_p.dtype, copy=False) if probabilities else None
    return dz.astype(log_p.dtype, copy=False), dt, None


# == conv_transpose (issue 10a) ==========================================================


def _t_geometry(y_shape, weight, stride, padding, output_padding, dilation, groups) -> tuple[dict, tuple]:
    """The geometry of the conv whose input gradient the transposed conv is: its input is the
    transposed conv's output ``(N, C_out, *O)``, its filters the ``C_in`` input channels."""
    c_in, kg, *kernel = weight.shape
    out = tuple(
        (n - 1) * S - b - a + D * (F - 1) + op + 1
        for n, S, (b, a), D, F, op in zip(y_shape[2:], stride, padding, dilation, kernel, output_padding)
    )
    x_shape = (y_shape[0], kg * groups, *out)
    geo = _conv_geometry(x_shape, c_in, tuple(kernel), stride, padding, dilation, groups)
    geo["ones"] = 0
    return geo, x_shape


def _on_conv_grid(y: np.ndarray, geo: dict) -> np.ndarray:
    """``y`` (nb, C_in, *spatial) laid out on the conv's output grid, zeros where it has no unit."""
    if tuple(y.shape[2:]) == tuple(geo["grid"]):
        return y
    y_grid = np.zeros((*y.shape[:2], *geo["grid"]), dtype=y.dtype)
    y_grid[(Ellipsis, *(slice(0, n) for n in y.shape[2:]))] = y
    return y_grid


@_quiet
def conv_transpose_forward(y, weight, bias=None, *, stride, padding, output_padding, dilation, groups):
    """``a[n, g·K/G + k, S·i + D·m - P_b] += Σ_c y[n, g·C/G + c, i] · W[g·C/G + c, k, m]`` (``+ b``).

    The conv's input gradient at ``δ = y``: ``Wᵀ @ y`` per group gives the columns
    ``(nb, G, C_out/G·ΠF, Π grid)`` and :func:`_col2im` scatters them, one strided add per
    kernel offset, exactly as conv's backward builds ``δ_prev``.
    Shapes: y ``(N, C_in, *spatial)``, W ``(C_in, C_out/G, *F)`` -> a ``(N, C_out, *O)``.
    """
    geo, a_shape = _t_geometry(y.shape, weight, stride, padding, output_padding, dilation, groups)
    n, c_in = y.shape[:2]
    W_t = np.ascontiguousarray(weight.reshape(groups, c_in // groups, -1).transpose(0, 2, 1))
    a = np.empty(a_shape, dtype=y.dtype)  # (G, C_out/G·ΠF, C_in/G) above
    p = math.prod(geo["grid"])
    col_bytes = a_shape[1] * math.prod(weight.shape[2:]) * p * y.itemsize

    def slab(lo: int, hi: int) -> None:  # samples lo..hi-1, chunk by chunk
        for n0, n1 in _chunks(hi - lo, col_bytes, start=lo):
            nb = n1 - n0
            y_c = _on_conv_grid(y[n0:n1], geo).reshape(nb, groups, c_in // groups, p)
            dcol = np.matmul(W_t, y_c)  # (nb, G, C_out/G·ΠF, Π grid)
            _col2im(dcol, a[n0:n1], geo)

    _threads.run_slabs(slab, n, a.nbytes, blas=True)  # one slab of samples per thread
    if bias is not None:
        a += bias.astype(y.dtype).reshape(-1, *([1] * (y.ndim - 2)))
    return a, (y, weight, bias is not None, geo)


@_quiet
def conv_transpose_backward(ctx, grad_output):
    # δ_prev = conv(δ, W) (cropped to y);  dE/dW[c,k,m] = Σ_n Σ_i y[n,c,i]·δ_pad[n,k,S·i+D·m];  dE/db = Σ δ
    y, W, has_bias, geo = ctx
    delta = np.ascontiguousarray(_as(grad_output, y.dtype))
    n, c_in = y.shape[:2]
    groups = geo["groups"]
    p = math.prod(geo["grid"])
    W_mat = np.ascontiguousarray(W.reshape(groups, c_in // groups, -1))  # (G, C_in/G, C_out/G·ΠF)
    dy = np.empty_like(y)
    crop = (Ellipsis, *(slice(0, s) for s in y.shape[2:]))
    col_bytes = delta.shape[1] * math.prod(W.shape[2:]) * p * y.itemsize

    def slab(lo: int, hi: int) -> np.ndarray:  # samples lo..hi-1: their δ_prev, their part of dW
        dW = np.zeros(W_mat.shape, dtype=y.dtype)
        for n0, n1 in _chunks(hi - lo, col_bytes, start=lo):
            nb = n1 - n0
            col = _im2col(delta[n0:n1], geo)  # (nb, G, C_out/G·ΠF, Π grid): the windows of δ
            y_c = _on_conv_grid(y[n0:n1], geo).reshape(nb, groups, c_in // groups, p)
            dW += np.matmul(y_c, col.transpose(0, 1, 3, 2)).sum(axis=0)  # the conv's y ⋆ δ, roles swapped
            conv = np.matmul(W_mat, col).reshape(nb, c_in, *geo["grid"])  # conv(δ, W) on the grid
            dy[n0:n1] = conv[crop]
        return dW

    # one slab of samples per thread, their sums added in slab order
    dW, *rest = _threads.run_slabs(slab, n, delta.nbytes, blas=True)
    for part in rest:
        dW += part
    db = delta.sum(axis=(0, *range(2, delta.ndim))) if has_bias else None
    return dy, dW.reshape(W.shape), db


# == pad_nd (issue 10a) ====================================================================


def _pad_source(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """``src(t)`` for ``t = -lo .. n + hi - 1``: the input unit each padded unit copies."""
    t = np.arange(-lo, n + hi)
    if mode == "replicate":
        return np.clip(t, 0, n - 1)
    if mode == "circular":
        return t % n
    period = max(1, 2 * (n - 1))  # reflect: the edge unit is not repeated
    m = t % period
    return np.where(m < n, m, period - m)


def pad_nd_forward(x, *, pads, mode, value):
    """``out[j] = x[src(j - b)]`` along each padded axis (``constant``: ``value`` outside)."""
    if mode == "constant":
        out = np.full(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, pads)), value, dtype=x.dtype)
        out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, pads))] = x
    else:
        out = x
        for axis, (lo, hi) in enumerate(pads):
            if lo or hi:
                out = np.take(out, _pad_source(x.shape[axis], lo, hi, mode), axis=axis)
        out = np.array(out, copy=out is x)  # a new array, never a view of x
    return out, (x.shape, x.dtype, pads, mode)


def pad_nd_backward(ctx, grad_output):
    # δ_prev[s] = Σ_{j : src(j - b) = s} δ[j] along each padded axis (constant: δ cropped)
    shape, dtype, pads, mode = ctx
    g = _as(grad_output, dtype)
    if mode == "constant":
        return (g[tuple(slice(lo, lo + n) for n, (lo, _) in zip(shape, pads))].copy(),)  # never a view of δ
    for axis in reversed(range(len(pads))):
        lo, hi = pads[axis]
        if not (lo or hi):
            continue
        n = shape[axis]
        moved = np.moveaxis(g, axis, 0)  # (n + lo + hi, ...)
        acc = moved[lo : lo + n].copy()  # every unit's own copy
        src = _pad_source(n, lo, hi, mode)
        for j in (*range(lo), *range(lo + n, lo + n + hi)):  # one add per padded unit
            acc[src[j]] += moved[j]
        g = np.moveaxis(acc, 0, axis)
    return (np.array(g, order="C"),)  # a copy: never a view of δ


# == adaptive pooling (issue 10a) =========================================================


def _adaptive_axis(n: int, o: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per axis: each window's first unit ``s_i = floor(i·N/O)``, its length ``e_i - s_i``
    (``e_i = ceil((i+1)·N/O)``) and the gather index ``(O, L_max)``, clipped into the input."""
    i = np.arange(o)
    start = (i * n) // o
    length = -((-(i + 1) * n) // o) - start
    index = np.minimum(start[:, None] + np.arange(length.max())[None, :], n - 1)
    return start, length, index


def _adaptive_gather(x: np.ndarray, output_size) -> tuple[np.ndarray, np.ndarray, list]:
    """Every window, padded to ``L_max`` per axis: ``(N, C, *O, ΠL_max)`` and its validity mask."""
    d = len(output_size)
    axes = [_adaptive_axis(n, o) for n, o in zip(x.shape[2:], output_size)]
    index, valid = [], None
    for a, (_, length, idx) in enumerate(axes):
        shape = [1] * (2 * d)
        shape[a], shape[d + a] = idx.shape
        index.append(idx.reshape(shape))
        ok = (np.arange(idx.shape[1])[None, :] < length[:, None]).reshape(shape)
        valid = ok if valid is None else valid & ok
    win = x[(slice(None), slice(None), *index)]  # (N, C, *O, *L)
    flat = (*win.shape[: 2 + d], -1)
    return win.reshape(flat), np.broadcast_to(valid, win.shape[2:]).reshape(flat[2:]), axes


def _adaptive_matrix(n: int, o: int, dtype) -> np.ndarray:
    """``A[i, u] = 1/|window_i|`` for ``u`` in window ``i``: the average along one axis is ``A @ x``."""
    start, length, _ = _adaptive_axis(n, o)
    u = np.arange(n)[None, :]
    inside = (u >= start[:, None]) & (u < (start + length)[:, None])
    return (inside / length[:, None]).astype(dtype)


@_quiet
def adaptive_avg_pool_forward(x, *, output_size):
    """``a[n, c, i] = Σ_{u ∈ window_i} y[n, c, u] / |window_i|``, window ``[⌊iN/O⌋, ⌈(i+1)N/O⌉)``."""
    win, valid, _ = _adaptive_gather(x, output_size)
    total = np.where(valid, win, 0).sum(axis=-1)  # masked: a NaN outside a window stays outside
    count = valid.sum(axis=-1)
    return (total / count).astype(x.dtype, copy=False), (x.shape, x.dtype, output_size)


@_quiet
def adaptive_avg_pool_backward(ctx, grad_output):
    # δ_prev[u] = Σ_{windows i ∋ u} δ[i] / |window_i|: per axis, δ times the averaging matrix A
    shape, dtype, output_size = ctx
    g = _as(grad_output, dtype)
    for a, (n, o) in enumerate(zip(shape[2:], output_size)):
        A = _adaptive_matrix(n, o, dtype)  # (O, N)
        g = np.moveaxis(np.moveaxis(g, 2 + a, -1) @ A, -1, 2 + a)
    return (np.ascontiguousarray(g),)


def _adaptive_winners(x, output_size) -> tuple[np.ndarray, np.ndarray]:
    """The maximum of each window and its flat index in the ``(n, c)`` plane (first maximum, NaN wins)."""
    win, valid, axes = _adaptive_gather(x, output_size)
    win = np.where(valid, win, -np.inf)
    best = win.argmax(axis=-1)  # the first maximum (or the first NaN) in row-major window order
    value = np.take_along_axis(win, best[..., None], -1)[..., 0]
    lmax = tuple(idx.shape[1] for _, _, idx in axes)
    taps = np.unravel_index(best, lmax)
    flat = np.zeros(best.shape, dtype=np.int64)
    d = len(output_size)
    for a, ((start, _, _), m, n) in enumerate(zip(axes, taps, x.shape[2:])):
        s = start.reshape([-1 if b == a else 1 for b in range(d)])
        flat = flat * n + (s + m)
    return value, flat


@_quiet
def adaptive_max_pool_forward(x, *, output_size):
    """``a[n, c, i] = max_{u ∈ window_i} y[n, c, u]``; saves the flat index of the first maximum."""
    value, flat = _adaptive_winners(x, output_size)
    return value.astype(x.dtype, copy=False), (x.shape, x.dtype, flat)


@_quiet
def adaptive_max_pool_backward(ctx, grad_output):
    # δ_prev[u*] += δ[i] for the first maximum u* of window i; every other unit gets 0
    shape, dtype, flat = ctx
    nc, plane = math.prod(shape[:2]), math.prod(shape[2:])
    offset = (np.arange(nc) * plane).reshape(*shape[:2], *([1] * (len(shape) - 2)))
    g = _as(grad_output, dtype)
    dx = np.bincount((flat + offset).ravel(), weights=g.ravel(), minlength=nc * plane)
    return (dx.astype(dtype, copy=False).reshape(shape),)


def adaptive_max_pool_indices_forward(x, *, output_size):
    """The flat index, in its ``(n, c)`` plane, of each window's first maximum (int64)."""
    _, flat = _adaptive_winners(x, output_size)
    return flat, None


def adaptive_max_pool_indices_backward(ctx, grad_output):
    # integer indices: nothing to differentiate
    return (None,)


# == max_pool's indices, max_unpool (issue 10a) ============================================


def max_pool_indices_forward(x, *, kernel_size, stride, padding, dilation, ceil_mode):
    """The flat index, in its ``(n, c)`` input plane, of each window's first maximum (int64)."""
    _, (geo, winner) = max_pool_forward(
        x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode
    )
    taps = np.unravel_index(winner.astype(np.int64), geo["kernel"])  # m* per axis
    flat = np.zeros(winner.shape, dtype=np.int64)
    d = len(geo["kernel"])
    for axis, (m, S, D, (lo, _), n) in enumerate(
        zip(taps, geo["stride"], geo["dilation"], geo["reads"], x.shape[2:])
    ):
        i = np.arange(geo["out"][axis]).reshape([-1 if a == axis else 1 for a in range(d)])
        flat = flat * n + (S * i + D * m - lo)  # u* = S·i + D·m* - P_before
    return flat, None


def max_pool_indices_backward(ctx, grad_output):
    # integer indices: nothing to differentiate
    return (None,)


def max_unpool_forward(x, indices, *, output_size):
    """``out[n, c].flat[indices[n, c, i]] = x[n, c, i]``, zeros elsewhere."""
    n, c = x.shape[:2]
    out = np.zeros((n, c, math.prod(output_size)), dtype=x.dtype)
    idx = indices.reshape(n, c, -1).astype(np.int64, copy=False)
    np.put_along_axis(out, idx, x.reshape(n, c, -1), axis=2)
    return out.reshape(n, c, *output_size), (idx, x.shape, x.dtype)


def max_unpool_backward(ctx, grad_output):
    # δ_prev[n, c, i] = δ[n, c].flat[indices[n, c, i]]
    idx, shape, dtype = ctx
    g = _as(grad_output, dtype).reshape(*shape[:2], -1)
    return np.take_along_axis(g, idx, axis=2).reshape(shape), None


#: ``{op: (forward, backward)}`` for every core op, registered by :mod:`cnnkit_numpy.plugin`.
KERNELS: dict[str, tuple[Any, Any]] = {
    "conv": (conv_forward, conv_backward),
    "conv_transpose": (conv_transpose_forward, conv_transpose_backward),
    "max_pool": (max_pool_forward, max_pool_backward),
    "avg_pool": (avg_pool_forward, avg_pool_backward),
    "lp_pool": (lp_pool_forward, lp_pool_backward),
    "adaptive_avg_pool": (adaptive_avg_pool_forward, adaptive_avg_pool_backward),
    "adaptive_max_pool": (adaptive_max_pool_forward, adaptive_max_pool_backward),
    "adaptive_max_pool_indices": (adaptive_max_pool_indices_forward, adaptive_max_pool_indices_backward),
    "max_pool_indices": (max_pool_indices_forward, max_pool_indices_backward),
    "max_unpool": (max_unpool_forward, max_unpool_backward),
    "pad_nd": (pad_nd_forward, pad_nd_backward),
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
    "flatten": (flatten_forward, flatten_backward),
    "linear": (linear_forward, linear_backward),
    "cross_entropy": (cross_entropy_forward, cross_entropy_backward),
}


# -- normalisation and dropout (issue 10b) -----------------------------------------------------


def _channel_axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis but the channel axis 1: what batch norm reduces over."""
    return (0, *range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """``(C,)`` -> ``(1, C, 1, ...)`` to broadcast against ``(N, C, *)``."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@_quiet
def batch_norm_forward(
    x, weight=None, bias=None, running_mean=None, running_var=None, *, training, momentum, eps
):
    """``ŷ = (x - μ) / √(σ² + ε)``, ``a = γ ŷ + β``; training: batch μ, σ² (biased), running stats move.

    ``r_μ ← (1 - M) r_μ + M μ`` and ``r_σ² ← (1 - M) r_σ² + M σ² m/(m - 1)``, ``m`` values per channel.
    Channels are independent: one slab of channels per thread (:mod:`cnnkit_numpy.threads`).
    """
    axes = _channel_axes(x)
    c = x.shape[1] if x.ndim > 1 else 0
    x_hat = np.empty_like(x)
    a = np.empty_like(x)
    inv_std = np.empty(c, dtype=x.dtype)

    def slab(lo: int, hi: int) -> None:  # channels lo..hi-1
        x_s = x[:, lo:hi]
        if training:
            mu = x_s.mean(axis=axes)  # (C,)
            var = ((x_s - _per_channel(mu, x.ndim)) ** 2).mean(axis=axes)  # biased: normalises
            if running_mean is not None:
                m = x.size // max(c, 1)
                running_mean[lo:hi] = (1 - momentum) * running_mean[lo:hi] + momentum * mu
                running_var[lo:hi] = (1 - momentum) * running_var[lo:hi] + momentum * var * (m / (m - 1))
        else:
            mu = running_mean[lo:hi].astype(x.dtype, copy=False)
            var = running_var[lo:hi].astype(x.dtype, copy=False)
        inv_std[lo:hi] = 1.0 / np.sqrt(var + eps)  # (C,)
        x_hat_s = x_hat[:, lo:hi]
        np.multiply(x_s - _per_channel(mu, x.ndim), _per_channel(inv_std[lo:hi], x.ndim), out=x_hat_s)
        if weight is not None:
            np.multiply(x_hat_s, _per_channel(weight[lo:hi], x.ndim), out=a[:, lo:hi])
        else:
            a[:, lo:hi] = x_hat_s
        if bias is not None:
            a[:, lo:hi] += _per_channel(bias[lo:hi], x.ndim)

    _threads.run_slabs(slab, c, x.nbytes)
    return a, (x_hat, inv_std, weight, bias is not None, training)


@_quiet
def batch_norm_backward(ctx, grad_output):
    # g = δ γ;  δ_prev = (g - mean(g) - ŷ·mean(g ŷ)) / √(σ² + ε) (training), g / √(σ² + ε) (eval)
    # dE/dγ = Σ δ ŷ,  dE/dβ = Σ δ
    x_hat, inv_std, weight, has_bias, training = ctx
    delta = _as(grad_output, x_hat.dtype)
    ndim, axes = x_hat.ndim, _channel_axes(x_hat)
    c = x_hat.shape[1] if ndim > 1 else 0
    dx = np.empty_like(x_hat)
    dw = np.empty(c, dtype=x_hat.dtype) if weight is not None else None
    db = np.empty(c, dtype=x_hat.dtype) if has_bias else None

    def slab(lo: int, hi: int) -> None:  # channels lo..hi-1
        d_s, h_s = delta[:, lo:hi], x_hat[:, lo:hi]
        g = d_s * _per_channel(weight[lo:hi], ndim) if weight is not None else d_s
        if training:
            g_mean = g.mean(axis=axes, keepdims=True)
            gx_mean = (g * h_s).mean(axis=axes, keepdims=True)
            dx[:, lo:hi] = (g - g_mean - h_s * gx_mean) * _per_channel(inv_std[lo:hi], ndim)
        else:
            dx[:, lo:hi] = g * _per_channel(inv_std[lo:hi], ndim)
        if dw is not None:
            dw[lo:hi] = (d_s * h_s).sum(axis=axes)
        if db is not None:
            db[lo:hi] = d_s.sum(axis=axes)

    _threads.run_slabs(slab, c, x_hat.nbytes)
    return dx, dw, db, None, None


def _dropout_generator(generator: Any) -> np.random.Generator:
    """The generator a dropout mask is drawn from: the one passed, a seed's, or cnnkit's own."""
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is not None:  # an int seed
        return np.random.default_rng(generator)
    from cnnkit.ops.dropout import default_generator

    return default_generator()


def dropout_forward(x, *, p, training, mask_dims, generator):
    """``a = y ⊙ mask``, ``mask = keep / (1 - p)``, ``keep ~ Bernoulli(1 - p)`` over the first
    ``mask_dims`` axes (whole channels for dropout1d/2d/3d); the identity in eval or for ``p = 0``."""
    if not training or p == 0.0:
        return x.copy(), None
    shape = x.shape[:mask_dims] + (1,) * (x.ndim - mask_dims)
    keep = _dropout_generator(generator).random(shape) >= p  # P(keep) = 1 - p
    mask = keep.astype(x.dtype) * np.asarray(1.0 / (1.0 - p), dtype=x.dtype)
    return x * mask, mask


def dropout_backward(ctx, grad_output):
    # δ_prev = δ ⊙ mask (the forward's mask; δ itself in eval)
    mask = ctx
    if mask is None:
        return (np.array(grad_output, copy=True),)
    return (_as(grad_output, mask.dtype) * mask,)


KERNELS.update(
    {
        "batch_norm": (batch_norm_forward, batch_norm_backward),
        "dropout": (dropout_forward, dropout_backward),
    }
)
