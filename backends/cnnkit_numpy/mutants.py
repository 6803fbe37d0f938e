"""Mutants of the NumPy backend: each one op's kernel with one realistic bug, for the suite's self-check.

Every mutant wraps the real kernel (or a copy of its saved state); the kernels in
:mod:`cnnkit_numpy.ops` are never changed. ``cnnkit conformance --self-check``
(:func:`cnnkit.conformance.mutation.self_check`) runs the conformance suite on
each and reports which check caught it. The bugs are the ones backend authors
write: dropped terms, wrong reductions, an index type that wraps, a NaN that is
swallowed, arithmetic in the wrong dtype, a kernel that assumes contiguous
inputs or writes into them, a buffer reused between calls, a chunk boundary
off by one.

Run it here: ``python -m cnnkit_numpy.mutants``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnkit import Kernel
from cnnkit.conformance.mutation import Mutant

__all__ = ["MUTANTS"]


# -- ways to plant a bug ---------------------------------------------------------------------


def _out(change: Callable[..., Any]) -> Callable[[Kernel], Kernel]:
    """The forward's output changed by ``change(out, inputs, attrs)``."""

    def make(k: Kernel) -> Kernel:
        def forward(*inputs: Any, **attrs: Any) -> Any:
            out, ctx = k.forward(*inputs, **attrs)
            return change(out, inputs, attrs), ctx

        return Kernel(forward=forward, backward=k.backward)

    return make


def _grads(change: Callable[..., Any]) -> Callable[[Kernel], Kernel]:
    """The backward's gradients changed by ``change(grads, g)`` (a list, one per input)."""

    def make(k: Kernel) -> Kernel:
        def backward(ctx: Any, g: Any) -> Any:
            return tuple(change(list(k.backward(ctx, g)), g))

        return Kernel(forward=k.forward, backward=backward)

    return make


def _attrs(change: Callable[[dict], dict]) -> Callable[[Kernel], Kernel]:
    """The forward run with attributes changed by ``change(attrs)``."""

    def make(k: Kernel) -> Kernel:
        return Kernel(
            forward=lambda *inputs, **attrs: k.forward(*inputs, **change(dict(attrs))), backward=k.backward
        )

    return make


def _inputs(change: Callable[[tuple, dict], tuple]) -> Callable[[Kernel], Kernel]:
    """The forward run on inputs changed by ``change(inputs, attrs)``."""

    def make(k: Kernel) -> Kernel:
        return Kernel(
            forward=lambda *inputs, **attrs: k.forward(*change(inputs, attrs), **attrs), backward=k.backward
        )

    return make


def _ctx(change: Callable[[Any], Any]) -> Callable[[Kernel], Kernel]:
    """The backward run on a patched copy of the forward's saved state."""

    def make(k: Kernel) -> Kernel:
        return Kernel(forward=k.forward, backward=lambda ctx, g: k.backward(change(ctx), g))

    return make


def _set(a: np.ndarray, index: Any, value: float) -> np.ndarray:
    a = np.array(a)
    a[index] = value
    return a


# -- bugs that need state --------------------------------------------------------------------


def _reused_buffer(k: Kernel) -> Kernel:
    """The output written into one buffer per shape, kept between calls (a workspace returned)."""
    buffers: dict[tuple, np.ndarray] = {}

    def forward(*inputs: Any, **attrs: Any) -> Any:
        out, ctx = k.forward(*inputs, **attrs)
        buf = buffers.setdefault((out.shape, out.dtype.str), np.empty_like(out))
        buf[...] = out
        return buf, ctx

    return Kernel(forward=forward, backward=k.backward)


def _masks_grad_in_place(k: Kernel) -> Kernel:
    """The backward scales the caller's ``grad_output`` in place after using it."""

    def backward(ctx: Any, g: Any) -> Any:
        grads = k.backward(ctx, g)
        np.multiply(g, 0.5, out=g)
        return grads

    return Kernel(forward=k.forward, backward=backward)


def _writes_input(k: Kernel) -> Kernel:
    """The forward clips its input in place (``x[x < 0] = 0``) before computing."""

    def forward(x: Any, *rest: Any, **attrs: Any) -> Any:
        out, ctx = k.forward(x.copy(), *rest, **attrs)
        np.maximum(x, 0, out=x)
        return out, ctx

    return Kernel(forward=forward, backward=k.backward)


def _flatten_view(k: Kernel) -> Kernel:
    """Flatten returns ``x.reshape(...)``: a view of its input."""

    def forward(x: Any, **attrs: Any) -> Any:
        out, ctx = k.forward(x, **attrs)
        return x.reshape(out.shape), ctx

    return Kernel(forward=forward, backward=k.backward)


def _grad_view_of_delta(k: Kernel) -> Kernel:
    """Flatten's backward returns ``δ.reshape(x.shape)``: a view of the caller's gradient."""

    def backward(ctx: Any, g: Any) -> Any:
        (dx,) = k.backward(ctx, g)
        return (g.reshape(dx.shape),)

    return Kernel(forward=k.forward, backward=backward)


def _memory_order(inputs: tuple, attrs: dict) -> tuple:
    """Reads each input in memory order as if it were C-contiguous (``ravel(order="K")``)."""
    return tuple(
        a if not isinstance(a, np.ndarray) or a.dtype.kind != "f" else a.ravel(order="K").reshape(a.shape)
        for a in inputs
    )


def _flips_negative_strides(inputs: tuple, attrs: dict) -> tuple:
    """A view with a negative last stride read in memory order (windows over ``abs(strides)``)."""
    return tuple(
        a[..., ::-1] if isinstance(a, np.ndarray) and a.ndim and a.strides[-1] < 0 else a for a in inputs
    )


def _first_group_weights(inputs: tuple, attrs: dict) -> tuple:
    """Every group of a grouped conv uses the first group's filters."""
    x, w, b = inputs
    groups = attrs["groups"]
    if groups == 1:
        return inputs
    per = w.shape[0] // groups
    return x, np.concatenate([w[:per]] * groups), b


def _backward(fn: Callable[[Any, Any], tuple]) -> Callable[[Kernel], Kernel]:
    """The backward replaced by ``fn(ctx, g)`` (a wrong formula over the real saved state)."""

    def make(k: Kernel) -> Kernel:
        return Kernel(forward=k.forward, backward=fn)

    return make


def _ce_mean_not_divided(k: Kernel) -> Kernel:
    """The mean loss's gradient not divided by N (the sum's gradient)."""

    def backward(ctx: Any, g: Any) -> Any:
        dz, dt, dw = k.backward(ctx, g)
        return (dz * ctx[2] if ctx[3] == "mean" else dz), dt, dw

    return Kernel(forward=k.forward, backward=backward)


def _linear_dw_first_leading_index(ctx: Any, g: Any) -> tuple:
    """dE/dW of an input ``(*, in)`` summed over the first leading index only."""
    x, w, has_bias = ctx
    g = np.asarray(g, dtype=x.dtype)
    dx = (g @ w).reshape(x.shape)
    g1, x1 = (g[0], x[0]) if g.ndim > 2 else (g, x)
    dw = g1.reshape(-1, w.shape[0]).T @ x1.reshape(-1, w.shape[1])
    db = g.reshape(-1, w.shape[0]).sum(axis=0) if has_bias else None
    return dx, dw, db


def _conv_chunk_tail_dropped(k: Kernel) -> Kernel:
    """The batch-chunk loop stops one chunk early when the columns span several chunks."""
    from cnnkit_numpy.ops import CHUNK_BYTES

    def forward(x: Any, w: Any, b: Any = None, **attrs: Any) -> Any:
        out, ctx = k.forward(x, w, b, **attrs)
        col_bytes = x.shape[1] * math.prod(w.shape[2:]) * math.prod(out.shape[2:]) * x.itemsize
        step = max(1, CHUNK_BYTES // max(1, col_bytes))
        if x.shape[0] > step:
            out = out.copy()
            out[(x.shape[0] - 1) // step * step :] = 0.0
        return out, ctx

    return Kernel(forward=forward, backward=k.backward)


def _conv_dw_first_chunk_only(k: Kernel) -> Kernel:
    """The weight gradient sums the first batch chunk only when the columns are rebuilt (large batches)."""
    from cnnkit_numpy.ops import KEEP_COLUMNS_BYTES

    def backward(ctx: Any, g: Any) -> Any:
        x = ctx[0]
        dx, dw, db = k.backward(ctx, g)
        if x.nbytes * math.prod(ctx[1].shape[2:]) > KEEP_COLUMNS_BYTES and dw is not None:
            half = x.shape[0] // 2
            _, dw_part, _ = k.backward(ctx, np.concatenate([g[:half], np.zeros_like(g[half:])]))
            dw = dw_part
        return dx, dw, db

    return Kernel(forward=k.forward, backward=backward)


def _winner_wraps(k: Kernel) -> Kernel:
    """The winning offset of a max-pool window kept in 8 bits: windows of more than 256 taps wrap."""

    def forward(*inputs: Any, **attrs: Any) -> Any:
        out, (geo, winner) = k.forward(*inputs, **attrs)
        return out, (geo, (winner.astype(np.int64) % 256).astype(np.uint8))

    return Kernel(forward=forward, backward=k.backward)


def _avg_overlap_assigned(ctx: Any) -> Any:
    """Overlapping average windows assign their share instead of adding it (a scatter with ``=``)."""
    geo, div = ctx
    return {**geo, "overlap": False}, div


def _lp_zero_window_nan(k: Kernel) -> Kernel:
    """The Lp backward divides by the window's norm without guarding an all-zero window."""

    def backward(ctx: Any, g: Any) -> Any:
        (dx,) = k.backward(ctx, g)
        x = ctx[0]
        return (np.where((x == 0) & (dx == 0), np.nan, dx),)

    return Kernel(forward=k.forward, backward=backward)


def _float32(k: Kernel) -> Kernel:
    """Computes a float64 call in float32 and casts the result back."""

    def forward(*inputs: Any, **attrs: Any) -> Any:
        out, ctx = k.forward(*inputs, **attrs)
        if out.dtype == np.float64:
            low = [
                a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
                for a in inputs
            ]
            out = k.forward(*low, **attrs)[0].astype(np.float64)
        return out, ctx

    return Kernel(forward=forward, backward=k.backward)


def _float32_grads(grads: list, g: Any) -> list:
    """Gradients rounded through float32."""
    return [
        d if d is None or d.dtype != np.float64 else d.astype(np.float32).astype(np.float64) for d in grads
    ]


def _upcast(out: Any, inputs: tuple, attrs: dict) -> Any:
    """Returns float64 whatever the input's dtype."""
    return out.astype(np.float64)


def _nan_to_zero(out: Any, inputs: tuple, attrs: dict) -> Any:
    """Swallows NaN (``np.nan_to_num``-style cleaning of the output)."""
    return np.where(np.isnan(out), 0.0, out).astype(out.dtype)


def _ce_global_max(k: Kernel) -> Kernel:
    """Cross-entropy stabilised with the batch's largest logit instead of each row's."""

    def forward(z: Any, t: Any, weight: Any = None, **attrs: Any) -> Any:
        out, ctx = k.forward(z, t, weight, **attrs)
        plain = z.ndim == 2 and weight is None and t.dtype.kind in "iu" and not attrs["label_smoothing"]
        if not plain or (t == attrs["ignore_index"]).any():
            return out, ctx  # the bug lives in the plain (N, C) path
        with np.errstate(all="ignore"):
            m = z.max() if z.size else 0.0
            lse = m + np.log(np.exp(z - m).sum(axis=1))
            e = lse - z[np.arange(z.shape[0]), t]
        red = attrs["reduction"]
        value = e if red == "none" else (e.sum() if red == "sum" else e.sum() / max(1, z.shape[0]))
        return np.asarray(value, dtype=z.dtype), ctx

    return Kernel(forward=forward, backward=k.backward)


# -- the mutants -----------------------------------------------------------------------------

_CONV = "conv"


def _m(
    name: str, op: str, kind: str, catches: str, make: Callable[[Kernel], Kernel], bug: str = ""
) -> Mutant:
    return Mutant(
        name=name, op=op, bug=bug or (make.__doc__ or "").strip(), catches=catches, make=make, kind=kind
    )


MUTANTS: tuple[Mutant, ...] = (
    # convolution: values
    _m(
        "conv-bias-first-filter-only",
        _CONV,
        "value",
        "forward",
        _out(
            lambda o, i, a: (
                o
                if i[2] is None
                else o
                - i[2].reshape(-1, *[1] * (o.ndim - 2))
                + _set(np.zeros_like(i[2]), 0, i[2][0]).reshape(-1, *[1] * (o.ndim - 2))
            )
        ),
        "the bias is added to the first filter only",
    ),
    _m(
        "conv-flip-ignored",
        _CONV,
        "value",
        "forward",
        _attrs(lambda a: {**a, "flip": False}),
        "flip=True runs cross-correlation",
    ),
    _m(
        "conv-dilation-first-axis-only",
        _CONV,
        "value",
        "forward",
        _attrs(lambda a: {**a, "dilation": (a["dilation"][0],) + (1,) * (len(a["dilation"]) - 1)}),
        "dilation applied to the first spatial axis only",
    ),
    _m(
        "conv-padding-before-both-sides",
        _CONV,
        "value",
        "forward",
        _attrs(lambda a: {**a, "padding": tuple((p[0], p[0]) for p in a["padding"])}),
        "asymmetric padding read as its 'before' on both sides",
    ),
    _m("conv-first-group-weights", _CONV, "value", "forward", _inputs(_first_group_weights)),
    _m("conv-dtype-upcast", _CONV, "dtype", "forward", _out(_upcast)),
    _m("conv-float32-arithmetic", _CONV, "dtype", "forward", _float32),
    _m("conv-nan-swallowed", _CONV, "value", "forward", _out(_nan_to_zero)),
    # convolution: gradients
    _m(
        "conv-dx-first-column-zero",
        _CONV,
        "gradient",
        "backward",
        _grads(lambda d, g: [_set(d[0], (Ellipsis, 0), 0.0), *d[1:]]),
        "col2im drops the first column of dE/dx",
    ),
    _m(
        "conv-dw-mean-over-batch",
        _CONV,
        "gradient",
        "backward",
        _grads(lambda d, g: [d[0], d[1] / g.shape[0], d[2]]),
        "dE/dW averaged over the batch instead of summed",
    ),
    _m(
        "conv-db-first-sample-only",
        _CONV,
        "gradient",
        "backward",
        _grads(lambda d, g: [d[0], d[1], None if d[2] is None else g[:1].sum(axis=(0, *range(2, g.ndim)))]),
        "dE/db from the first sample only",
    ),
    _m("conv-dw-float32", _CONV, "dtype", "backward", _grads(_float32_grads)),
    # convolution: memory, layout, sizes
    _m("conv-reused-output-buffer", _CONV, "aliasing", "memory", _reused_buffer),
    _m("conv-masks-grad-in-place", _CONV, "aliasing", "memory", _masks_grad_in_place),
    _m("conv-assumes-contiguous", _CONV, "layout", "layouts", _inputs(_memory_order)),
    _m("conv-negative-strides-flipped", _CONV, "layout", "layouts", _inputs(_flips_negative_strides)),
    _m("conv-chunk-tail-dropped", _CONV, "size", "forward", _conv_chunk_tail_dropped),
    _m("conv-dw-first-chunk-only", _CONV, "size", "backward", _conv_dw_first_chunk_only),
    # max pooling
    _m("max_pool-nan-ignored", "max_pool", "value", "forward", _out(_nan_to_zero)),
    _m(
        "max_pool-padding-wins",
        "max_pool",
        "value",
        "properties",
        _out(lambda o, i, a: o if not any(p != (0, 0) for p in a["padding"]) else np.maximum(o, 0.0)),
        "zero padding instead of -inf: padding wins over negative windows",
    ),
    _m(
        "max_pool-ceil-overhang-zero",
        "max_pool",
        "value",
        "forward",
        _out(lambda o, i, a: o if not a["ceil_mode"] else np.maximum(o, 0.0)),
        "the ceil-mode overhang padded with zeros",
    ),
    _m("max_pool-winner-wraps-at-256", "max_pool", "size", "backward", _winner_wraps),
    _m(
        "max_pool-grad-to-first-tap",
        "max_pool",
        "gradient",
        "backward",
        _ctx(lambda c: (c[0], np.zeros_like(c[1]))),
        "the gradient goes to each window's first unit, not its winner",
    ),
    _m("max_pool-dtype-upcast", "max_pool", "dtype", "forward", _out(_upcast)),
    _m("max_pool-assumes-contiguous", "max_pool", "layout", "layouts", _inputs(_memory_order)),
    _m("max_pool-reused-output-buffer", "max_pool", "aliasing", "memory", _reused_buffer),
    # average pooling
    _m(
        "avg_pool-count-include-pad-inverted",
        "avg_pool",
        "value",
        "forward",
        _attrs(lambda a: {**a, "count_include_pad": not a["count_include_pad"]}),
    ),
    _m("avg_pool-overlap-assigned", "avg_pool", "gradient", "backward", _ctx(_avg_overlap_assigned)),
    _m("avg_pool-float32-sum", "avg_pool", "dtype", "forward", _float32),
    _m("avg_pool-writes-input", "avg_pool", "aliasing", "memory", _writes_input),
    # Lp pooling
    _m(
        "lp_pool-relu-instead-of-abs",
        "lp_pool",
        "value",
        "forward",
        _inputs(lambda i, a: (np.maximum(i[0], 0.0),)),
        "|x| computed as max(x, 0): negative inputs dropped",
    ),
    _m("lp_pool-zero-window-nan", "lp_pool", "gradient", "backward", _lp_zero_window_nan),
    _m(
        "lp_pool-p-rounded",
        "lp_pool",
        "value",
        "forward",
        _attrs(lambda a: {**a, "norm_type": float(round(a["norm_type"]))}),
        "a fractional p rounded to an integer",
    ),
    # activations
    _m(
        "relu-nan-to-zero",
        "relu",
        "value",
        "forward",
        _out(_nan_to_zero),
        "relu as np.where(x > 0, x, 0): relu(NaN) = 0",
    ),
    _m(
        "relu-grad-mask-at-zero",
        "relu",
        "gradient",
        "backward",
        _backward(lambda x, g: (np.where(x >= 0, g, 0.0),)),
        "the gradient mask is x >= 0: it passes at the kink",
    ),
    _m(
        "relu-grad-nan-passes",
        "relu",
        "gradient",
        "backward",
        _backward(lambda x, g: (np.where(x <= 0, 0.0, g),)),
        "the mask is not(x <= 0): the gradient passes at NaN",
    ),
    _m("relu-writes-input", "relu", "aliasing", "memory", _writes_input),
    _m(
        "leaky_relu-slope-clamped",
        "leaky_relu",
        "value",
        "forward",
        _attrs(lambda a: {**a, "negative_slope": min(max(a["negative_slope"], 0.0), 1.0)}),
        "the slope clamped to [0, 1]",
    ),
    _m(
        "leaky_relu-grad-slope-zero",
        "leaky_relu",
        "gradient",
        "backward",
        _grads(lambda d, g: [np.where(d[0] == g, d[0], 0.0)]),
        "the backward uses relu's gradient",
    ),
    _m(
        "sigmoid-grad-missing-factor",
        "sigmoid",
        "gradient",
        "backward",
        _backward(lambda y, g: (g * y,)),
        "the backward forgets the (1 - y) factor",
    ),
    _m("sigmoid-float32", "sigmoid", "dtype", "forward", _float32),
    _m(
        "tanh-grad-one-minus-y",
        "tanh",
        "gradient",
        "backward",
        _backward(lambda y, g: (g * (1 - y),)),
        "the backward uses 1 - y instead of 1 - y²",
    ),
    _m("tanh-dtype-upcast", "tanh", "dtype", "forward", _out(_upcast)),
    # flatten, linear, loss
    _m(
        "flatten-fortran-order",
        "flatten",
        "value",
        "forward",
        _out(lambda o, i, a: i[0].reshape(o.shape, order="F").copy()),
        "reshaped in Fortran order",
    ),
    _m("flatten-returns-view", "flatten", "aliasing", "memory", _flatten_view),
    _m("flatten-grad-view-of-delta", "flatten", "aliasing", "memory", _grad_view_of_delta),
    _m(
        "linear-bias-twice",
        "linear",
        "value",
        "forward",
        _out(lambda o, i, a: o if i[2] is None else o + i[2]),
    ),
    _m(
        "linear-dw-first-leading-index",
        "linear",
        "gradient",
        "backward",
        _backward(_linear_dw_first_leading_index),
    ),
    _m("linear-dw-float32", "linear", "dtype", "backward", _grads(_float32_grads)),
    _m("linear-assumes-contiguous", "linear", "layout", "layouts", _inputs(_memory_order)),
    _m("cross_entropy-global-max", "cross_entropy", "value", "forward", _ce_global_max),
    _m(
        "cross_entropy-mean-over-classes",
        "cross_entropy",
        "value",
        "forward",
        _out(lambda o, i, a: o if a["reduction"] != "mean" else o * i[0].shape[0] / i[0].shape[1]),
        "the mean taken over classes instead of samples",
    ),
    _m("cross_entropy-mean-grad-not-divided", "cross_entropy", "gradient", "backward", _ce_mean_not_divided),
)


# -- batch norm and dropout (issue 10b) ----------------------------------------------------------


def _bn_biased_running_var(k: Kernel) -> Kernel:
    """The running variance moved by the biased batch variance (the one that normalises)."""

    def forward(x: Any, weight: Any = None, bias: Any = None, rm: Any = None, rv: Any = None, **attrs: Any):
        before = None if rv is None else np.array(rv)
        out, ctx = k.forward(x, weight, bias, rm, rv, **attrs)
        if attrs["training"] and rv is not None:
            axes = (0, *range(2, x.ndim))
            rv[...] = (1 - attrs["momentum"]) * before + attrs["momentum"] * x.var(axis=axes)
        return out, ctx


# == the ops of issue 10a =======================================================================


def _ct_db_first_sample(d: list, g: Any) -> list:
    """dE/db summed over the first sample only (the batch axis forgotten)."""
    if d[2] is not None:
        g = np.asarray(g)
        d[2] = g[:1].sum(axis=(0, *range(2, g.ndim))).astype(d[2].dtype)
    return d


def _adaptive_avg_ceil_start(k: Kernel) -> Kernel:
    """Adaptive windows that start at ceil(i·N/O) instead of floor(i·N/O)."""

    def forward(x: Any, **attrs: Any) -> Any:
        _, ctx = k.forward(x, **attrs)
        y = x.astype(np.float64)
        for a, (n, o) in enumerate(zip(x.shape[2:], attrs["output_size"])):
            i = np.arange(o)
            start, end = -((-i * n) // o), -((-(i + 1) * n) // o)
            first = np.zeros_like(np.take(y, [0], axis=2 + a))
            c = np.concatenate([first, np.cumsum(y, axis=2 + a)], axis=2 + a)
            count = np.maximum(end - start, 1).reshape([-1] + [1] * (x.ndim - 3 - a))
            y = (np.take(c, end, axis=2 + a) - np.take(c, start, axis=2 + a)) / count
        return y.astype(x.dtype), ctx

    return Kernel(forward=forward, backward=k.backward)


def _dropout_unscaled(out: Any, inputs: tuple, attrs: dict) -> Any:
    """Kept units not scaled by 1/(1 - p): the expected value shrinks."""
    return out * (1 - attrs["p"]) if attrs["training"] else out


MUTANTS += (
    _m("batch_norm-running-var-biased", "batch_norm", "value", "properties", _bn_biased_running_var),
    _m(
        "batch_norm-grad-skips-mean-and-variance",
        "batch_norm",
        "gradient",
        "backward",
        _ctx(lambda ctx: (*ctx[:4], False)),
        "the training backward as if μ and σ² were constants (the evaluation formula)",
    ),
    _m("dropout-unscaled", "dropout", "value", "properties", _out(_dropout_unscaled)),
    _m(
        "dropout-grad-ignores-mask",
        "dropout",
        "gradient",
        "properties",
        _ctx(lambda mask: None),
        "the gradient passed through unmasked (as in evaluation)",
    ),
)


def _adaptive_max_winner_off_by_one(ctx: Any) -> Any:
    """The saved winner's flat index one unit too far (clipped to the plane)."""
    shape, dtype, flat = ctx
    return shape, dtype, np.minimum(flat + 1, math.prod(shape[2:]) - 1)


def _unpool_no_plane_offset(k: Kernel) -> Kernel:
    """Indices read over the whole sample (C·plane), not per (n, c) plane: every channel lands in 0."""

    def forward(x: Any, indices: Any, **attrs: Any) -> Any:
        out, ctx = k.forward(x, indices, **attrs)
        n = x.shape[0]
        flat = np.zeros((n, out[0].size), dtype=x.dtype)
        np.put_along_axis(flat, indices.reshape(n, -1).astype(np.int64), x.reshape(n, -1), axis=1)
        return flat.reshape(out.shape), ctx

    return Kernel(forward=forward, backward=k.backward)


MUTANTS = (
    *MUTANTS,
    _m(
        "conv_transpose-bias-dropped",
        "conv_transpose",
        "value",
        "forward",
        _out(lambda o, i, a: o if i[2] is None else o - i[2].reshape(-1, *([1] * (o.ndim - 2)))),
        "the bias is never added",
    ),
    _m(
        "conv_transpose-db-first-sample",
        "conv_transpose",
        "gradient",
        "backward",
        _grads(_ct_db_first_sample),
    ),
    _m(
        "pad_nd-reflect-as-replicate",
        "pad_nd",
        "value",
        "forward",
        _attrs(lambda a: {**a, "mode": "replicate" if a["mode"] == "reflect" else a["mode"]}),
        "reflect padding repeats the edge unit",
    ),
    _m(
        "pad_nd-grad-cropped-only",
        "pad_nd",
        "gradient",
        "backward",
        _ctx(lambda c: (c[0], c[1], c[2], "constant")),
        "the backward crops δ and drops what the copies received",
    ),
    _m("adaptive_avg_pool-ceil-start", "adaptive_avg_pool", "value", "forward", _adaptive_avg_ceil_start),
    _m(
        "adaptive_max_pool-winner-off-by-one",
        "adaptive_max_pool",
        "gradient",
        "backward",
        _ctx(_adaptive_max_winner_off_by_one),
    ),
    _m("max_unpool-no-plane-offset", "max_unpool", "value", "forward", _unpool_no_plane_offset),
)


if __name__ == "__main__":  # pragma: no cover - the command line way to the same report
    from cnnkit.conformance.mutation import self_check

    report = self_check(MUTANTS)
    print(report.format())
    raise SystemExit(1 if report.survivors else 0)
