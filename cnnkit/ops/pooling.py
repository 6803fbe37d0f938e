"""The pooling records: ``max_pool``, ``avg_pool``, ``lp_pool`` in 1-3 D, global pools, their layers.

The ops: :class:`MaxPoolSpec`, :class:`AvgPoolSpec`, :class:`LpPoolSpec`, which
validate through :func:`cnnkit.spec.check_window` (public, so a plugin's
window op validates as these do). The functions keep PyTorch's names and
argument order (``lp_pool2d(input, norm_type, kernel_size, ...)``); the global
pools are the same ops with the whole input as the window. The NumPy kernels
are ``cnnkit_numpy.ops.*_pool_forward/backward`` (literal loops in
``cnnkit_numpy.reference``); the torch kernels ``cnnkit_torch.ops.MaxPool``,
``AvgPool``, ``LpPool``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnkit import geometry
from cnnkit.conformance.cases import Case, Seeds, error_cases, pad_id, per_axis
from cnnkit.dispatch import call, vjp
from cnnkit.layer import Layer, window_of
from cnnkit.ops._shared import BackendArg, doc, nan_and_inf_propagate, nan_propagates, pad, windows
from cnnkit.registry import use_backend
from cnnkit.spec import (
    OpSpec,
    PropertySkip,
    _is_int,
    as_bool,
    as_float,
    as_int_tuple,
    check_ndim,
    check_spatial_nonempty,
    check_window,
    layout,
    spatial_dims,
    window_output_shape,
)

__all__ = [
    "FUNCTIONS",
    "LAYERS",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "AvgPoolSpec",
    "GlobalAvgPool",
    "GlobalLPPool",
    "GlobalMaxPool",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "LpPoolSpec",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "MaxPoolSpec",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "global_avg_pool",
    "global_lp_pool",
    "global_max_pool",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
]

# -- cases -----------------------------------------------------------------------------------

rand = Seeds(20000)

LAYOUT = {1: (2, 2, 9), 2: (2, 2, 7, 6), 3: (1, 2, 5, 5, 4)}
_LP_LOW = {0.5: 0.25, 1.0: 0.25}  # p <= 1: keep |x| away from the kink at 0


def _case(
    op: str,
    d: int,
    *,
    kernel: Any = 2,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    extra: dict | None = None,
    shape: tuple[int, ...] | None = None,
    suffix: str = "",
) -> Case:
    shape = shape or LAYOUT[d]
    name = op.split("_")[0]
    parts = [
        f"{name}_pool{d}d",
        f"k{kernel}" if isinstance(kernel, int) else "k" + "x".join(map(str, kernel)),
    ]
    attrs: dict[str, Any] = {"kernel_size": kernel, "dims": d}
    if stride is not None:
        parts.append(f"stride{stride}" if isinstance(stride, int) else "stride" + "x".join(map(str, stride)))
        attrs["stride"] = stride
    if padding != 0:
        parts.append(pad_id(padding))
        attrs["padding"] = padding
    if dilation != 1:
        parts.append(f"dil{dilation}")
        attrs["dilation"] = dilation
    if ceil_mode:
        parts.append("ceil")
        attrs["ceil_mode"] = True
    low = -1.0
    for key, value in (extra or {}).items():
        attrs[key] = value
        if key == "count_include_pad" and not value:
            parts.append("nocip")
        if key == "norm_type":
            parts.append(f"p{value:g}")
            low = _LP_LOW.get(float(value), -1.0)
    if suffix:
        parts.append(suffix)
    return Case("-".join(parts), op, (rand(*shape, low=low, high=1.5),), attrs, tags=("pool", f"{d}d"))


def _random_cases() -> Iterator[Case]:
    """Max, average and Lp pooling in 1-3 D: kernel x stride x padding x ceil_mode, dilation, variants."""
    extras = {"max_pool": [{}], "avg_pool": [{}], "lp_pool": [{"norm_type": 2}]}
    for op, variants in extras.items():
        for d in (1, 2, 3):
            for extra in variants:
                for kernel in (2, 3):
                    for stride in (None, 1, 2):
                        for padding in (0, 1):
                            for ceil in (False, True):
                                if ceil and stride == 1:
                                    continue  # ceil_mode changes nothing at stride 1
                                yield _case(
                                    op,
                                    d,
                                    kernel=kernel,
                                    stride=stride,
                                    padding=padding,
                                    ceil_mode=ceil,
                                    extra=extra,
                                )
                yield _case(op, d, kernel=2, stride=1, dilation=2, extra=extra)
                yield _case(op, d, kernel=3, stride=2, dilation=2, padding=1, ceil_mode=True, extra=extra)
                yield _case(
                    op,
                    d,
                    kernel=per_axis(d, (3, 2)),
                    stride=per_axis(d, (2, 1)),
                    padding=per_axis(d, ((1, 0), (0, 1))),
                    extra=extra,
                )
                yield _case(op, d, kernel=3, stride=2, padding="same", extra=extra)
    for d in (1, 2, 3):
        for padding in (1, per_axis(d, ((0, 1), (1, 1)))):
            for ceil in (False, True):
                yield _case(
                    "avg_pool",
                    d,
                    kernel=3,
                    stride=2,
                    padding=padding,
                    ceil_mode=ceil,
                    extra={"count_include_pad": False},
                )
        yield _case(
            "avg_pool",
            d,
            kernel=2,
            stride=2,
            ceil_mode=True,
            extra={"count_include_pad": False},
            shape=LAYOUT[d][:2] + (5,) * d,
        )
        for p in (1, 3, 0.5):
            for kernel, stride, padding, ceil in ((2, None, 0, False), (3, 2, 1, True)):
                yield _case(
                    "lp_pool",
                    d,
                    kernel=kernel,
                    stride=stride,
                    padding=padding,
                    ceil_mode=ceil,
                    extra={"norm_type": p},
                )
    # global pools: the window is the whole input
    for d in (1, 2, 3):
        spatial = LAYOUT[d][2:]
        for op, extra in (("max_pool", {}), ("avg_pool", {}), ("lp_pool", {"norm_type": 2})):
            case = _case(op, d, kernel=spatial, extra=extra)
            name = f"{op.split('_')[0]}_pool{d}d-global" + ("-p2" if extra else "")
            yield Case(name, op, case.inputs, case.attrs, tags=(*case.tags, "global"))
    # ONNX's padding rule: up to the window's extent minus one, every window holding an input unit
    for op, extra in (("max_pool", {}), ("avg_pool", {}), ("lp_pool", {"norm_type": 2})):
        for d in (1, 2):
            yield _case(op, d, kernel=3, stride=2, padding=2, extra=extra, suffix="onnxpad")
            yield _case(
                op,
                d,
                kernel=2,
                stride=1,
                padding=per_axis(d, ((1, 0), (0, 1))),
                extra=extra,
                suffix="onnxpad",
            )
        yield _case(op, 1, kernel=2, stride=3, dilation=2, padding=2, extra=extra, suffix="onnxpad")
    yield _case(
        "avg_pool", 2, kernel=3, stride=2, padding=2, extra={"count_include_pad": False}, suffix="onnxpad"
    )
    # divisor_override: every window divided by one number (torch's avg_pool2d/3d)
    for d in (2, 3):
        yield _case("avg_pool", d, kernel=2, extra={"divisor_override": 3}, suffix="div3")
        yield _case(
            "avg_pool", d, kernel=3, stride=2, padding=1, extra={"divisor_override": 2}, suffix="div2"
        )
    yield _case(
        "avg_pool", 2, kernel=3, stride=1, padding=2, extra={"divisor_override": 5}, suffix="onnxpad-div5"
    )


def _goldens() -> Iterator[Case]:
    """Hand-computed pooling values (the classic 2x2 stride-2 max-pool example and its companions)."""
    x = [[[[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]]]
    yield Case(
        "max_pool2d-golden-2x2-stride2",
        "max_pool",
        (x,),
        {"kernel_size": 2, "stride": 2},
        expected=[[[[6.0, 8], [3, 4]]]],
        tags=("golden", "lecture", "pool"),
        grad_output=[[[[1.0, 2], [3, 4]]]],
        expected_grads=([[[[0.0, 0, 0, 0], [0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 0, 4]]]],),
    )
    yield Case(
        "avg_pool2d-golden-2x2-stride2",
        "avg_pool",
        (x,),
        {"kernel_size": 2},
        expected=[[[[3.25, 5.25], [2, 2]]]],
        tags=("golden", "pool"),
        grad_output=[[[[4.0, 8], [4, 4]]]],
        expected_grads=([[[[1.0, 1, 2, 2], [1, 1, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]]]],),
    )
    yield Case(
        "lp_pool2d-golden-l2-2x2",
        "lp_pool",
        ([[[[3.0, -4], [0, 0]]]],),
        {"kernel_size": 2, "norm_type": 2},
        expected=[[[[5.0]]]],
        tags=("golden", "pool"),
    )
    yield Case(
        "lp_pool1d-golden-l2-stride1",
        "lp_pool",
        ([[[3.0, 4, 12, -84]]],),
        {"kernel_size": 2, "stride": 1, "norm_type": 2},
        expected=[[[5.0, 12.649110640673518, 84.85281374238571]]],
        tags=("golden", "pool"),
    )
    yield Case(
        "avg_pool1d-golden-pad1-cip",
        "avg_pool",
        ([[[3.0, 6, 9]]],),
        {"kernel_size": 2, "padding": 1},
        expected=[[[1.5, 7.5]]],
        tags=("golden", "pool"),
    )
    yield Case(
        "avg_pool1d-golden-pad1-nocip",
        "avg_pool",
        ([[[3.0, 6, 9]]],),
        {"kernel_size": 2, "padding": 1, "count_include_pad": False},
        expected=[[[3.0, 7.5]]],
        tags=("golden", "pool"),
    )
    yield Case(
        "max_pool1d-golden-ceil",
        "max_pool",
        ([[[1.0, 5, 2, 0, 7]]],),
        {"kernel_size": 2, "ceil_mode": True},
        expected=[[[5.0, 2, 7]]],
        tags=("golden", "pool"),
    )
    # ties: the gradient goes to the first maximum in row-major window order
    yield Case(
        "max_pool2d-tie-first-wins",
        "max_pool",
        ([[[[2.0, 2], [2, 2]], [[1.0, 3], [3, 1]]]],),
        {"kernel_size": 2},
        expected=[[[[2.0]], [[3.0]]]],
        tags=("golden", "pool", "tie"),
        grad_output=[[[[1.0]], [[5.0]]]],
        expected_grads=([[[[1.0, 0], [0, 0]], [[0.0, 5], [0, 0]]]],),
        differentiable=False,
    )
    yield Case(
        "max_pool1d-tie-overlap",
        "max_pool",
        ([[[1.0, 4, 4, 4, 0]]],),
        {"kernel_size": 3, "stride": 1},
        expected=[[[4.0, 4, 4]]],
        tags=("golden", "pool", "tie"),
        grad_output=[[[1.0, 2, 4]]],
        expected_grads=([[[0.0, 3, 4, 0, 0]]],),
        differentiable=False,
    )


def _error_cases() -> Iterator[Case]:
    x4 = rand(1, 3, 6, 6)
    yield from error_cases(
        [
            (
                "max_pool-error-float-kernel",
                "max_pool",
                (x4,),
                {"kernel_size": 2.5},
                TypeError,
                "kernel_size",
            ),
            ("max_pool-error-kernel0", "max_pool", (x4,), {"kernel_size": 0}, ValueError, "kernel_size"),
            (
                "max_pool-error-stride0",
                "max_pool",
                (x4,),
                {"kernel_size": 2, "stride": 0},
                ValueError,
                "stride",
            ),
            (
                "max_pool-error-too-much-padding",
                "max_pool",
                (x4,),
                {"kernel_size": 2, "padding": 2},
                ValueError,
                "padding must be at most the window's extent minus one",
            ),
            (
                "max_pool-error-kernel-too-large",
                "max_pool",
                (x4,),
                {"kernel_size": 7},
                ValueError,
                "larger than",
            ),
            ("max_pool-error-unbatched", "max_pool", (rand(6),), {"kernel_size": 2}, ValueError, "batched"),
            ("max_pool-error-missing-kernel", "max_pool", (x4,), {}, TypeError, "kernel_size"),
            (
                "avg_pool-error-ceil-not-bool",
                "avg_pool",
                (x4,),
                {"kernel_size": 2, "ceil_mode": 1},
                TypeError,
                "ceil_mode",
            ),
            (
                "lp_pool-error-p0",
                "lp_pool",
                (x4,),
                {"kernel_size": 2, "norm_type": 0},
                ValueError,
                "norm_type",
            ),
            (
                "lp_pool-error-p-string",
                "lp_pool",
                (x4,),
                {"kernel_size": 2, "norm_type": "2"},
                TypeError,
                "norm_type",
            ),
        ]
    )


def _signed(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values of both signs with ``|x|`` in [0.25, 1.5]: every p away from the kink at 0."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.25, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


def _edge_cases() -> Iterator[Case]:
    """Where kernels break: huge windows, NaN and inf in the backward pass, zero and signed Lp windows."""
    # windows of more than 256 and 65,536 taps (an 8- or 16-bit winner index wraps); the max pool's
    # winner index is the one that can wrap, so it alone gets the 65,537-tap window
    for op, extra, taps_list in (
        ("max_pool", {}, (257, 65537)),
        ("avg_pool", {}, (257,)),
        ("lp_pool", {"norm_type": 2}, (257,)),
    ):
        for taps in taps_list:
            attrs = {"kernel_size": taps, "stride": 1, "dims": 1, **extra}
            low = -1.0 if op != "lp_pool" else 0.25
            yield Case(
                f"{op.split('_')[0]}_pool1d-k{taps}-huge",
                op,
                (rand(1, 1, taps + 3, low=low, high=1.5),),
                attrs,
                tags=("pool", "edge"),
            )
    # NaN and inf, forward and backward: max pooling routes the gradient to the NaN (as PyTorch does)
    x = [[[1.0, np.nan, 3.0, 4.0, 1.0, np.inf, 3.0, -np.inf]]]
    yield Case(
        "max_pool1d-golden-nan-inf",
        "max_pool",
        (x,),
        {"kernel_size": 2},
        expected=[[[np.nan, 4.0, np.inf, 3.0]]],
        grad_output=[[[1.0, 2.0, 3.0, 4.0]]],
        expected_grads=([[[0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 4.0, 0.0]]],),
        differentiable=False,
        tags=("golden", "pool", "nan"),
    )
    yield Case(
        "avg_pool1d-golden-nan-inf",
        "avg_pool",
        ([[[np.nan, 1.0, 2.0, 3.0, np.inf, 1.0]]],),
        {"kernel_size": 2},
        expected=[[[np.nan, 2.5, np.inf]]],
        grad_output=[[[1.0, 2.0, 4.0]]],
        expected_grads=([[[0.5, 0.5, 1.0, 1.0, 2.0, 2.0]]],),
        differentiable=False,
        tags=("golden", "pool", "nan"),
    )
    yield Case(
        "lp_pool1d-golden-nan-zero-window-p2",
        "lp_pool",
        ([[[np.nan, 1.0, 0.0, 0.0, 3.0, -4.0]]],),
        {"kernel_size": 2, "norm_type": 2},
        expected=[[[np.nan, 0.0, 5.0]]],
        grad_output=[[[1.0, 1.0, 1.0]]],
        expected_grads=([[[np.nan, np.nan, 0.0, 0.0, 0.6, -0.8]]],),
        differentiable=False,
        tags=("golden", "pool", "nan"),
    )
    # all-zero windows and signed inputs for every p:
    # dE/dx = δ · sign(x)|x|^(p-1) / y^(p-1), and 0 on a window that is all zero
    for p in (0.5, 1.0, 3.0):
        y = (np.abs(3.0) ** p + np.abs(-4.0) ** p) ** (1 / p)
        yield Case(
            f"lp_pool1d-golden-zero-window-signed-p{p:g}",
            "lp_pool",
            ([[[0.0, 0.0, 3.0, -4.0]]],),
            {"kernel_size": 2, "norm_type": p},
            expected=[[[0.0, y]]],
            grad_output=[[[1.0, 1.0]]],
            expected_grads=([[[0.0, 0.0, 3.0 ** (p - 1) / y ** (p - 1), -(4.0 ** (p - 1)) / y ** (p - 1)]]],),
            differentiable=False,
            tags=("golden", "pool", "zero"),
        )
        for d, shape in ((1, (2, 2, 9)), (2, (2, 2, 7, 6))):
            yield Case(
                f"lp_pool{d}d-signed-p{p:g}-k3-stride2-pad1",
                "lp_pool",
                (_signed(shape, seed=int(100 * p) + d),),
                {"kernel_size": 3, "stride": 2, "padding": 1, "norm_type": p, "dims": d},
                tags=("pool", "signed"),
            )


@functools.cache
def _all_cases() -> tuple[Case, ...]:
    return (*_goldens(), *_random_cases(), *_edge_cases(), *_error_cases())


# -- properties ------------------------------------------------------------------------------


def _pool_attrs(run) -> dict:
    return {k: v for k, v in run.case.attrs.items() if k not in ("count_include_pad", "norm_type")}


def _max_ge_avg(run) -> None:
    if not (run.has("max_pool") and run.has("avg_pool")):
        raise PropertySkip("needs max_pool and avg_pool")
    if not np.isfinite(run.inputs[0]).all():
        raise PropertySkip("max >= mean holds for finite inputs")
    x = np.abs(run.inputs[0])
    attrs = _pool_attrs(run)
    if attrs.pop("divisor_override", None) is not None:
        raise PropertySkip("max >= mean holds with the window's own divisor")
    m = np.asarray(run.numpy(call("max_pool", x, backend=run.backend, **attrs)))
    for cip in (True, False):
        a = np.asarray(run.numpy(call("avg_pool", x, backend=run.backend, count_include_pad=cip, **attrs)))
        rtol, atol = run.tolerances
        if (m < a - atol - rtol * np.abs(a)).any():
            where = tuple(int(i) for i in np.unravel_index(int(np.argmax(a - m)), m.shape))
            raise run.fail(
                f"property: max_pool(x) >= avg_pool(x) for x >= 0 fails at {where} "
                f"(max {m[where]!r}, avg {a[where]!r}, count_include_pad={cip})"
            )
    run.compared += 1


def _lp1_is_sum(run) -> None:
    if not (run.has("lp_pool") and run.has("avg_pool")):
        raise PropertySkip("needs lp_pool and avg_pool")
    if not np.isfinite(run.inputs[0]).all():
        raise PropertySkip("the window sum of |x| is compared on finite inputs")
    x = np.abs(run.inputs[0])
    attrs = _pool_attrs(run)
    lp1 = run.numpy(call("lp_pool", x, backend=run.backend, norm_type=1, **attrs))
    count = run.numpy(call("lp_pool", np.ones_like(x), backend=run.backend, norm_type=1, **attrs))
    avg = run.numpy(call("avg_pool", x, backend=run.backend, count_include_pad=False, **attrs))
    run.compare(
        "property: lp_pool(x >= 0, p=1) == avg_pool(x, count_include_pad=False) · |window|", lp1, avg * count
    )


def _max_of_constant(run) -> None:
    x = np.full_like(run.inputs[0], -0.375)
    out = run.run([x])
    run.compare(
        "property: max_pool(constant) == constant (padding never wins)", out, np.full(out.shape, -0.375)
    )


def _max_grad_sum(run) -> None:
    out, pullback = vjp("max_pool", run.inputs[0], backend=run.backend, **run.case.attrs)
    g = run.grad_output(tuple(int(s) for s in out.shape))
    (dx,) = pullback(run.backend.asarray(g))
    n, c = g.shape[:2]
    run.compare(
        "property: max_pool's gradient per channel sums to the output gradient's sum",
        run.numpy(dx).reshape(n, c, -1).sum(-1),
        g.astype(np.float64).reshape(n, c, -1).sum(-1),
    )


# -- oracle ----------------------------------------------------------------------------------


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
    return windows(pad(x, real, fill), kernel_size, stride, dilation, out), axes, real, out


def _max_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode):
    win, axes, _, _ = _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, -np.inf)
    return win.max(axis=axes)


def _avg_pool(
    x, *, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override=None
):
    win, axes, real, out = _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, 0.0)
    if divisor_override is not None:
        return win.sum(axis=axes) / divisor_override
    # the divisor counts the taps on input units, plus (count_include_pad) those on declared padding;
    # the extra units a ceil_mode window hangs past the declared padding never count
    ones = np.ones((1, 1, *x.shape[2:]))
    if count_include_pad:
        ones = pad(ones, padding, 1.0)
        extra = [(r[0] - p[0], r[1] - p[1]) for r, p in zip(real, padding)]
    else:
        extra = real
    count = windows(pad(ones, extra), kernel_size, stride, dilation, out).sum(axis=axes)
    return win.sum(axis=axes) / count


def _lp_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode, norm_type):
    win, axes, _, _ = _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, 0.0)
    return (np.abs(win) ** norm_type).sum(axis=axes) ** (1.0 / norm_type)


# -- the records -----------------------------------------------------------------------------


class _PoolSpec(OpSpec):
    inputs = ("input",)
    _extra: Mapping[str, Any] = {}

    def __init__(self) -> None:
        self.defaults = {
            "kernel_size": OpSpec.REQUIRED,
            "stride": None,
            "padding": 0,
            "dilation": 1,
            "ceil_mode": False,
            "dims": None,
            **self._extra,
        }

    def check(self, where, infos, attrs):
        (x,) = infos
        dims = spatial_dims(where, attrs, x)
        out = check_window(where, x, attrs, dims)
        if "count_include_pad" in attrs:
            out["count_include_pad"] = as_bool(attrs["count_include_pad"], "count_include_pad", where)
        if "divisor_override" in attrs:
            div = attrs["divisor_override"]
            out["divisor_override"] = (
                None if div is None else as_int_tuple(div, 1, "divisor_override", where)[0]
            )
        if "norm_type" in attrs:
            p = as_float(attrs["norm_type"], "norm_type", where)
            if not (p > 0 and math.isfinite(p)):
                raise ValueError(f"{where}: norm_type must be a finite number > 0, got {p}")
            out["norm_type"] = p
        return out

    def output_shape(self, infos, attrs):
        return window_output_shape(infos[0], attrs)

    def cases(self):
        return [c for c in _all_cases() if c.op == self.name]


class MaxPoolSpec(_PoolSpec):
    """Max pooling: the largest unit of each window (padding acts as -inf, never wins).

    Forward: ``a[n, c, i] = max_m y_pad[n, c, S·i + D·m]``.

    Backward: ``δ_prev[n, c, S·i + D·m*] += δ[n, c, i]`` for the winning tap ``m*``
    (ties: the first maximum in row-major window order, as PyTorch); every
    other unit gets zero.

    Shape: ``(N, C, *spatial) -> (N, C, *O)``, ``O`` as for a convolution (``ceil`` with ``ceil_mode``).
    """

    name = "max_pool"
    properties = (_max_of_constant, _max_grad_sum, _max_ge_avg, nan_and_inf_propagate)

    def oracle(self, x, **attrs):
        return _max_pool(x, **attrs)


class AvgPoolSpec(_PoolSpec):
    """Average pooling: the mean of each window.

    Forward: ``a[n, c, i] = (1/|window_i|) Σ_m y_pad[n, c, S·i + D·m]``, ``|window_i|``
    counting the declared padding with ``count_include_pad`` (never the ceil-mode overhang).

    Backward: ``δ_prev[n, c, S·i + D·m] += δ[n, c, i] / |window_i|`` for every tap.

    ``divisor_override`` (an int >= 1) replaces ``|window_i|`` in both, as in PyTorch.

    Shape: ``(N, C, *spatial) -> (N, C, *O)``.
    """

    name = "avg_pool"
    _extra: Mapping[str, Any] = {"count_include_pad": True, "divisor_override": None}
    properties = (_max_ge_avg, nan_propagates)

    def oracle(self, x, **attrs):
        return _avg_pool(x, **attrs)


class LpPoolSpec(_PoolSpec):
    """Lp pooling, the true norm: ``a = (Σ_m |y|^p)^(1/p)`` over each window (p = 2: L2 pooling).

    Backward: ``δ_prev = δ · sign(y) |y|^(p-1) / a^(p-1)`` on every tap (zero
    where the window is all zero).

    Shape: ``(N, C, *spatial) -> (N, C, *O)``.
    """

    name = "lp_pool"
    _extra: Mapping[str, Any] = {"norm_type": OpSpec.REQUIRED}
    properties = (_lp1_is_sum, nan_propagates)

    def oracle(self, x, **attrs):
        return _lp_pool(x, **attrs)


# -- the functions ---------------------------------------------------------------------------

_FUNCTION_DOC = """{d}-D {what} pooling: {formula}

    Args:
        input: ``(N, C, {axes})``.{extra_args}
        kernel_size: ``F``, the window, an int or one per axis.
        stride: ``S`` (default: ``kernel_size``).
        padding: as for the convolutions; at most the window's extent minus one per side,
            every window holding an input unit (ONNX's rule).
            {pad_note}
        dilation: spacing of the window's taps, >= 1.
        ceil_mode: keep a last, partial window (never one that starts in the
            right padding).{cip}
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(N, C, {out_axes})`` with, per axis,
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1``
        (``ceil`` instead of ``floor`` with ``ceil_mode``).

    Returns:
        The pooled output, in the input's dtype.

    Raises:
        ValueError: wrong number of dimensions, sizes < 1, too much padding
            (a window that reads padding only), a window larger than the padded input.
        TypeError: non-integer sizes, a non-floating input.

    Example:
        >>> import numpy as np
        >>> x = {example_input}
        >>> {example}
    """

_KINDS = {
    "max": dict(
        formula="the largest unit of each window.\n\n    The backward pass routes each "
        "gradient to the window's winning unit (the first maximum\n    in row-major order); "
        "every other unit gets zero.",
        pad_note="Padding never wins: it acts as -inf.",
        cip="\n        return_indices: also return each maximum's flat index in its ``(n, c)`` plane,"
        "\n            as PyTorch does (``(output, indices)``; default False).",
        example={
            1: "max_pool1d(x, 2).tolist()\n        [[[3.0, 4.0]]]",
            2: "max_pool2d(x, 2)[0, 0].tolist()\n        [[6.0, 8.0], [3.0, 4.0]]",
            3: "max_pool3d(x, 2).ravel().tolist()\n        [7.0]",
        },
    ),
    "avg": dict(
        formula="the mean of each window.\n\n    The backward pass spreads each gradient "
        "as ``1/|window|`` over its window.",
        pad_note="Padding counts as zeros (see ``count_include_pad``).",
        cip="\n        count_include_pad: divide by the whole window, padding included "
        "(default),\n            or only by the input units it covers."
        "\n        divisor_override: divide every window by this int instead (2-D, 3-D; default None).",
        example={
            1: "avg_pool1d(x, 2).tolist()\n        [[[2.0, 3.0]]]",
            2: "avg_pool2d(x, 2)[0, 0].tolist()\n        [[3.25, 5.25], [2.0, 2.0]]",
            3: "avg_pool3d(x, 2).ravel().tolist()\n        [3.5]",
        },
    ),
    "lp": dict(
        formula="the Lp norm ``(Σ|x|^p)^(1/p)`` of each window\n    "
        "(p = 2: the lecture's L2 pooling). Unlike PyTorch's ``lp_pool``,\n    "
        "this is the true norm: the absolute value is taken.",
        pad_note="Padding counts as zeros.",
        extra_args="\n        norm_type: ``p`` > 0.",
        example={
            1: "lp_pool1d(x, 1, 2).tolist()\n        [[[4.0, 6.0]]]",
            2: "lp_pool2d(x, 1, 2)[0, 0].tolist()\n        [[13.0, 21.0], [8.0, 8.0]]",
            3: "lp_pool3d(x, 1, 2).ravel().tolist()\n        [28.0]",
        },
    ),
}


_EXAMPLE_INPUT = {
    1: "np.array([[[1.0, 3, 2, 4, 0]]])",
    2: "np.array([[[[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]]])",
    3: "np.arange(8.0).reshape(1, 1, 2, 2, 2)",
}


def _function_doc(kind: str, d: int) -> Any:
    info = {"extra_args": "", "cip": "", **_KINDS[kind]}
    return doc(
        _FUNCTION_DOC,
        d=d,
        what=kind,
        example_input=_EXAMPLE_INPUT[d],
        **{**info, "example": info["example"][d]},
    )


def _pool(op: str, dims: int, input, backend, **attrs):
    return call(op, input, backend=backend, where=f"{op}{dims}d", dims=dims, **attrs)


def _max_pool_call(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend):
    attrs = dict(
        kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode
    )
    out = _pool("max_pool", dims, input, backend, **attrs)
    if not as_bool(return_indices, "return_indices", f"max_pool{dims}d"):
        return out
    where = f"max_pool{dims}d"
    return out, call("max_pool_indices", input, backend=backend, where=where, dims=dims, **attrs)


@_function_doc("max", 1)
def max_pool1d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
    *,
    backend=None,
):
    return _max_pool_call(
        1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend
    )


@_function_doc("max", 2)
def max_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
    *,
    backend=None,
):
    return _max_pool_call(
        2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend
    )


@_function_doc("max", 3)
def max_pool3d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
    *,
    backend=None,
):
    return _max_pool_call(
        3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend
    )


@_function_doc("avg", 1)
def avg_pool1d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=True,
    *,
    backend=None,
):
    return _pool(
        "avg_pool",
        1,
        input,
        backend,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
    )


@_function_doc("avg", 2)
def avg_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
    *,
    backend=None,
):
    return _pool(
        "avg_pool",
        2,
        input,
        backend,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
    )


@_function_doc("avg", 3)
def avg_pool3d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
    *,
    backend=None,
):
    return _pool(
        "avg_pool",
        3,
        input,
        backend,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
    )


@_function_doc("lp", 1)
def lp_pool1d(
    input, norm_type, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend=None
):
    return _pool(
        "lp_pool",
        1,
        input,
        backend,
        norm_type=norm_type,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )


@_function_doc("lp", 2)
def lp_pool2d(
    input, norm_type, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend=None
):
    return _pool(
        "lp_pool",
        2,
        input,
        backend,
        norm_type=norm_type,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )


@_function_doc("lp", 3)
def lp_pool3d(
    input, norm_type, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend=None
):
    return _pool(
        "lp_pool",
        3,
        input,
        backend,
        norm_type=norm_type,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )


def _spatial_shape(input: Any, where: str) -> tuple[int, ...]:
    shape = getattr(input, "shape", None)
    if shape is None:
        try:
            shape = np.shape(input)
        except ValueError as exc:  # a ragged list
            raise TypeError(f"{where}: input cannot be read as an array ({exc})") from None
    shape = tuple(shape)
    if len(shape) < 3:
        raise ValueError(f"{where}: input must be (N, C, *spatial) with 1 to 3 spatial axes, got {shape}")
    return shape[2:]


def global_max_pool(input: Any, *, backend: BackendArg = None) -> Any:
    """The largest unit of each channel: ``max_pool`` with the whole input as its window.

    Args:
        input: ``(N, C, *spatial)`` with 1 to 3 spatial axes.
        backend: the backend to run on (default: the active one).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        One value per sample and channel, in the input's dtype, spatial axes kept as size 1.

    Raises:
        ValueError: fewer than 1 or more than 3 spatial axes, an empty spatial axis.
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> global_max_pool(np.arange(8.0).reshape(1, 2, 2, 2)).ravel().tolist()
        [3.0, 7.0]
    """
    spatial = _spatial_shape(input, "global_max_pool")
    return call("max_pool", input, backend=backend, where="global_max_pool", kernel_size=spatial)


def global_avg_pool(input: Any, *, backend: BackendArg = None) -> Any:
    """The mean of each channel: ``avg_pool`` with the whole input as its window.

    Args:
        input: ``(N, C, *spatial)`` with 1 to 3 spatial axes.
        backend: the backend to run on (default: the active one).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        One value per sample and channel, in the input's dtype, spatial axes kept as size 1.

    Raises:
        ValueError: fewer than 1 or more than 3 spatial axes, an empty spatial axis.
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> global_avg_pool(np.arange(8.0).reshape(1, 2, 2, 2)).ravel().tolist()
        [1.5, 5.5]
    """
    spatial = _spatial_shape(input, "global_avg_pool")
    return call("avg_pool", input, backend=backend, where="global_avg_pool", kernel_size=spatial)


def global_lp_pool(input: Any, norm_type: float, *, backend: BackendArg = None) -> Any:
    """The Lp norm ``(Σ|x|^p)^(1/p)`` of each channel.

    Args:
        input: ``(N, C, *spatial)`` with 1 to 3 spatial axes.
        norm_type: ``p`` > 0, finite.
        backend: the backend to run on (default: the active one).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        One value per sample and channel, in the input's dtype, spatial axes kept as size 1.

    Raises:
        ValueError: fewer than 1 or more than 3 spatial axes, an empty spatial axis.
            A ``norm_type`` <= 0 or not finite.
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> global_lp_pool(np.array([[[3.0, -4.0]]]), 2).ravel().tolist()
        [5.0]
    """
    spatial = _spatial_shape(input, "global_lp_pool")
    return call(
        "lp_pool", input, backend=backend, where="global_lp_pool", kernel_size=spatial, norm_type=norm_type
    )


# -- the layers ------------------------------------------------------------------------------

_LAYER_DOC = """{d}-D {what} pooling layer: {formula}

    Args:{extra}
        kernel_size: ``F``, the window, an int or one per axis.
        stride: ``S`` (default: ``kernel_size``).
        padding: as for the convolution layers; at most the window's extent minus one per side,
            every window holding an input unit (ONNX's rule).
        dilation: spacing of the window's taps (default 1).
        ceil_mode: keep a last, partial window.{cip}

    Shape:
        input ``(N, C, {axes})`` -> output ``(N, C, {out_axes})`` with, per axis,
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1``
        (``ceil`` with ``ceil_mode``).

    Returns:
        ``forward(x)`` returns the pooled output; the layer has no parameters.

    Example:
        >>> import numpy as np
        >>> {cls}{d}d({ex_args}2)(np.zeros((1, 3, {example}), dtype=np.float32)).shape
        (1, 3, {half})
    """

_LAYER_KINDS = {
    "max": dict(
        formula="the largest unit of each window.\n\n    Backward: the gradient goes to the "
        "window's winning unit, all others get zero.",
        cls="MaxPool",
        cip="\n        return_indices: also return each maximum's flat index in its plane (default False).",
    ),
    "avg": dict(
        formula="the mean of each window.\n\n    Backward: each output's gradient is spread "
        "as ``1/|window|`` over its window.",
        cls="AvgPool",
        cip="\n        count_include_pad: divide by the whole window, padding included (default)."
        "\n        divisor_override: divide every window by this int instead (default None).",
    ),
    "lp": dict(
        formula="the norm ``(Σ|x|^p)^(1/p)`` of each window (p = 2: L2 pooling).\n\n    "
        "Backward: ``dE/dx = δ · sign(x)|x|^(p-1) / y^(p-1)``.",
        cls="LPPool",
        extra="\n        norm_type: ``p`` > 0.",
        ex_args="2, ",
    ),
}


def _layer_doc(kind: str, d: int) -> Any:
    info = {"extra": "", "cip": "", "ex_args": "", **_LAYER_KINDS[kind]}
    return doc(_LAYER_DOC, d=d, what=kind, example=", ".join(["4"] * d), half=", ".join(["2"] * d), **info)


class _PoolNd(Layer):
    dims = 0
    op = ""

    def _keep(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any) -> None:
        """Check the window's arguments as the op will, and keep them as given (as torch.nn does)."""
        where = type(self).__name__
        as_int_tuple(kernel_size, self.dims, "kernel_size", where)
        if stride is not None:
            as_int_tuple(stride, self.dims, "stride", where)
        if isinstance(padding, str):
            if padding.lower() not in ("same", "valid"):
                raise ValueError(f"{where}: padding must be 'same', 'valid', ints or pairs, got {padding!r}")
        elif not (isinstance(padding, (list, tuple)) and padding and isinstance(padding[0], (list, tuple))):
            as_int_tuple(padding, self.dims, "padding", where, minimum=0)
        as_int_tuple(dilation, self.dims, "dilation", where)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = as_bool(ceil_mode, "ceil_mode", where)

    def _attrs(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "ceil_mode": self.ceil_mode,
        }

    def function(self, x):
        return _pool(self.op, self.dims, x, None, **self._attrs())

    def config(self):
        return dict(self._attrs())

    def window(self):
        where = type(self).__name__
        kernel = as_int_tuple(self.kernel_size, self.dims, "kernel_size", where)
        stride = kernel if self.stride is None else as_int_tuple(self.stride, self.dims, "stride", where)
        return window_of(
            kernel, stride, self.padding, as_int_tuple(self.dilation, self.dims, "dilation", where)
        )


class _MaxPoolNd(_PoolNd):
    op = "max_pool"

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.return_indices = as_bool(return_indices, "return_indices", type(self).__name__)
        self._keep(kernel_size, stride, padding, dilation, ceil_mode)

    def _indices(self, x):
        return _pool("max_pool_indices", self.dims, x, None, **self._attrs())

    def function(self, x):
        out = super().function(x)
        return (out, self._indices(x)) if self.return_indices else out

    def forward(self, x):
        if not self.return_indices:
            return super().forward(x)
        be = self._run_backend(x)
        x, _ = self._arrays(be, x)
        with use_backend(be):
            y, self._pullback = vjp(super().function, x)  # the gradient flows through the values only
            return y, self._indices(x)

    def config(self):
        return {**super().config(), "return_indices": self.return_indices}

    def extra_repr(self):
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


@_layer_doc("max", 1)
class MaxPool1d(_MaxPoolNd):
    dims = 1


@_layer_doc("max", 2)
class MaxPool2d(_MaxPoolNd):
    dims = 2


@_layer_doc("max", 3)
class MaxPool3d(_MaxPoolNd):
    dims = 3


class _AvgPoolNd(_PoolNd):
    op = "avg_pool"

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        dilation: Any = 1,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        self._keep(kernel_size, stride, padding, dilation, ceil_mode)
        self.count_include_pad = as_bool(count_include_pad, "count_include_pad", where)
        self.divisor_override = (
            None
            if divisor_override is None
            else as_int_tuple(divisor_override, 1, "divisor_override", where)[0]
        )
        if self.dims == 1:  # torch.nn.AvgPool1d keeps 1-tuples
            self.kernel_size = as_int_tuple(self.kernel_size, 1, "kernel_size", where)
            self.stride = as_int_tuple(self.stride, 1, "stride", where)
            if not isinstance(padding, str):
                self.padding = tuple(padding) if isinstance(padding, (list, tuple)) else (padding,)

    def _attrs(self):
        attrs = {**super()._attrs(), "count_include_pad": self.count_include_pad}
        if self.divisor_override is not None:
            attrs["divisor_override"] = self.divisor_override
        return attrs

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


@_layer_doc("avg", 1)
class AvgPool1d(_AvgPoolNd):
    dims = 1


@_layer_doc("avg", 2)
class AvgPool2d(_AvgPoolNd):
    dims = 2


@_layer_doc("avg", 3)
class AvgPool3d(_AvgPoolNd):
    dims = 3


def _norm_type(value: Any, where: str) -> Any:
    """``p`` of an Lp pool, checked when the layer is built: a finite number > 0."""
    p = as_float(value, "norm_type", where)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"{where}: norm_type must be a finite number > 0, got {value!r}")
    return value  # kept as given, as torch.nn.LPPool does (its repr shows it)


class _LPPoolNd(_PoolNd):
    op = "lp_pool"

    def __init__(
        self,
        norm_type: float,
        kernel_size: Any,
        stride: Any = None,
        ceil_mode: bool = False,
        *,
        padding: Any = 0,
        dilation: Any = 1,
    ) -> None:
        super().__init__()
        self._keep(kernel_size, stride, padding, dilation, ceil_mode)
        self.stride = stride  # torch.nn.LPPool keeps None (the window's own size)
        self.norm_type = _norm_type(norm_type, type(self).__name__)

    def function(self, x):
        return _pool(self.op, self.dims, x, None, norm_type=self.norm_type, **self._attrs())

    def config(self):
        return {"norm_type": self.norm_type, **super().config()}

    def extra_repr(self):
        return (
            f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"ceil_mode={self.ceil_mode}"
        )


@_layer_doc("lp", 1)
class LPPool1d(_LPPoolNd):
    dims = 1


@_layer_doc("lp", 2)
class LPPool2d(_LPPoolNd):
    dims = 2


@_layer_doc("lp", 3)
class LPPool3d(_LPPoolNd):
    dims = 3


class GlobalMaxPool(Layer):
    """The largest unit of each channel, over all spatial axes (1-D, 2-D or 3-D input).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        ``forward(x)`` returns the pooled output; reshape it for a dense layer.

    Example:
        >>> import numpy as np
        >>> GlobalMaxPool()(np.arange(8.0).reshape(1, 2, 4)).ravel().tolist()
        [3.0, 7.0]
    """

    def function(self, x):
        return global_max_pool(x)

    def window(self):
        return ()


class GlobalAvgPool(Layer):
    """The mean of each channel, over all spatial axes (1-D, 2-D or 3-D input).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        ``forward(x)`` returns the pooled output; reshape it for a dense layer.

    Example:
        >>> import numpy as np
        >>> GlobalAvgPool()(np.arange(8.0).reshape(1, 2, 4)).ravel().tolist()
        [1.5, 5.5]
    """

    def function(self, x):
        return global_avg_pool(x)

    def window(self):
        return ()


class GlobalLPPool(Layer):
    """The Lp norm ``(Σ|x|^p)^(1/p)`` of each channel, over all spatial axes (1-D, 2-D or 3-D input).

    Args:
        norm_type: ``p`` > 0, finite.

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        ``forward(x)`` returns the pooled output; reshape it for a dense layer.

    Raises:
        ValueError: ``norm_type`` not a finite number > 0.
        TypeError: ``norm_type`` not a number.

    Example:
        >>> import numpy as np
        >>> GlobalLPPool(2)(np.array([[[3.0, -4.0], [0.0, 0.0]]])).ravel().tolist()
        [5.0, 0.0]
    """

    def __init__(self, norm_type: float) -> None:
        super().__init__()
        self.norm_type = _norm_type(norm_type, "GlobalLPPool")

    def function(self, x):
        return global_lp_pool(x, self.norm_type)

    def config(self):
        return {"norm_type": self.norm_type}

    def extra_repr(self):
        return f"norm_type={self.norm_type}"

    def window(self):
        return ()


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.layers` show of this family.
FUNCTIONS = (
    max_pool1d,
    max_pool2d,
    max_pool3d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    global_max_pool,
    global_avg_pool,
    global_lp_pool,
)
LAYERS = (
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    GlobalMaxPool,
    GlobalAvgPool,
    GlobalLPPool,
)
#: The family's op records.
SPECS = (MaxPoolSpec(), AvgPoolSpec(), LpPoolSpec())


# == adaptive pooling (issue 10a) ==============================================================

#: one run of seeds per op, so that each op's cases are the same whichever is built first
_ASEED = {"adaptive_avg_pool": 26000, "adaptive_max_pool": 27000, "adaptive_max_pool_indices": 28000}


def adaptive_windows(n: int, o: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive windows along one axis: ``[floor(i·N/O), ceil((i+1)·N/O))`` for ``i < O``.

    Example:
        >>> adaptive_windows(5, 3)
        [(0, 2), (1, 4), (3, 5)]
    """
    return [((i * n) // o, -((-(i + 1) * n) // o)) for i in range(o)]


def _adaptive_oracle(x: np.ndarray, output_size: tuple[int, ...], reduce) -> np.ndarray:
    """The definition: each output unit reduces its window, one window at a time."""
    d = len(output_size)
    wins = [adaptive_windows(n, o) for n, o in zip(x.shape[2:], output_size)]
    y = np.empty((*x.shape[:2], *output_size))
    axes = tuple(range(2, 2 + d))
    for i in np.ndindex(*output_size):
        sl = tuple(slice(*wins[a][i[a]]) for a in range(d))
        y[(slice(None), slice(None), *i)] = reduce(x[(slice(None), slice(None), *sl)], axis=axes)
    return y


def _a_case(rand: Seeds, op: str, d: int, shape: tuple[int, ...], output_size: Any, extra: str = "") -> Case:
    out = output_size if isinstance(output_size, int) else "x".join(str(v) for v in output_size)
    name = f"{op}{d}d-in{'x'.join(map(str, shape[2:]))}-out{out}" + (f"-{extra}" if extra else "")
    attrs = {"output_size": output_size, "dims": d}
    return Case(name, op, (rand(*shape),), attrs, tags=("pool", "adaptive", f"{d}d"))


def _adaptive_cases(op: str) -> Iterator[Case]:
    rand = Seeds(_ASEED[op])
    yield _a_case(rand, op, 1, (2, 2, 7), 3)  # windows overlap (7 / 3 is not whole)
    yield _a_case(rand, op, 1, (2, 2, 6), 3)  # windows tile the input
    yield _a_case(rand, op, 1, (2, 2, 3), 5)  # more outputs than inputs: windows repeat units
    yield _a_case(rand, op, 1, (1, 2, 5), 1, "global")
    yield _a_case(rand, op, 2, (2, 2, 7, 5), (3, 2))
    yield _a_case(rand, op, 2, (1, 3, 4, 6), (4, 4))
    yield _a_case(rand, op, 2, (2, 2, 5, 5), (None, 2), "keep")  # None keeps the input's size
    yield _a_case(rand, op, 3, (1, 2, 5, 4, 3), (2, 3, 2))
    yield _a_case(rand, op, 3, (2, 1, 3, 3, 3), 2)
    yield from error_cases(
        [
            (
                f"{op}-error-output-size-0",
                op,
                (rand(1, 2, 4, 4),),
                {"output_size": 0, "dims": 2},
                ValueError,
                "output_size must be >= 1",
            ),
            (
                f"{op}-error-output-size-length",
                op,
                (rand(1, 2, 4, 4),),
                {"output_size": (2, 2, 2), "dims": 2},
                ValueError,
                "output_size must be an int or 2 ints",
            ),
            (
                f"{op}-error-output-size-float",
                op,
                (rand(1, 2, 4, 4),),
                {"output_size": 2.5, "dims": 2},
                TypeError,
                "output_size",
            ),
            (
                f"{op}-error-wrong-ndim",
                op,
                (rand(2, 4, 4),),
                {"output_size": 2, "dims": 2},
                ValueError,
                "input must have 4 dimensions",
            ),
        ]
    )


class _AdaptivePoolSpec(OpSpec):
    inputs = ("input",)
    defaults: Mapping[str, Any] = {"output_size": OpSpec.REQUIRED, "dims": None}

    def check(self, where, infos, attrs):
        (x,) = infos
        dims = spatial_dims(where, attrs, x)
        check_ndim(where, "input", x, dims + 2, layout(dims))
        check_spatial_nonempty(where, x)
        size = attrs["output_size"]
        if isinstance(size, (tuple, list)) and len(size) == dims:  # None keeps that axis
            size = tuple(n if v is None else v for v, n in zip(size, x.shape[2:]))
        return {"output_size": as_int_tuple(size, dims, "output_size", where)}

    def output_shape(self, infos, attrs):
        (x,) = infos
        return (*x.shape[:2], *attrs["output_size"])

    @functools.cache  # noqa: B019 - one record per op, built once
    def cases(self):
        return tuple(_adaptive_cases(self.name))


class AdaptiveAvgPoolSpec(_AdaptivePoolSpec):
    """Adaptive average pooling: ``O`` windows per axis, whatever the input's length ``N``.

    Forward, window ``i`` along an axis being ``[s_i, e_i) = [floor(i·N/O), ceil((i+1)·N/O))``::

        a[n, c, i] = Σ_{u ∈ window_i} y[n, c, u] / |window_i|

    Backward::

        δ_prev[n, c, u] = Σ_{windows i ∋ u} δ[n, c, i] / |window_i|

    Shape: ``(N, C, *spatial)`` -> ``(N, C, *output_size)``.

    Canonical attributes: ``output_size: (d,) ints >= 1``.
    """

    name = "adaptive_avg_pool"

    def oracle(self, x, *, output_size):
        return _adaptive_oracle(x, output_size, np.mean)

    properties = (nan_and_inf_propagate,)


class AdaptiveMaxPoolSpec(_AdaptivePoolSpec):
    """Adaptive max pooling: ``O`` windows per axis, whatever the input's length ``N``.

    Forward, with PyTorch's windows ``[floor(i·N/O), ceil((i+1)·N/O))``::

        a[n, c, i] = max_{u ∈ window_i} y[n, c, u]

    Backward (``u*`` the first maximum of window ``i`` in row-major order)::

        δ_prev[n, c, u*] += δ[n, c, i]

    Shape: ``(N, C, *spatial)`` -> ``(N, C, *output_size)``.

    Canonical attributes: ``output_size: (d,) ints >= 1``.
    """

    name = "adaptive_max_pool"

    def oracle(self, x, *, output_size):
        return _adaptive_oracle(x, output_size, np.max)

    properties = (nan_propagates,)


_ADAPTIVE_DOC = """{d}-D adaptive {kind} pooling: ``output_size`` windows per axis, whatever the input size.

    Window ``i`` along an axis of length ``N`` covers ``[floor(i·N/O), ceil((i+1)·N/O))``
    (PyTorch's rule: windows may overlap by one unit, or repeat units when ``O > N``).

    Args:
        input: ``(N, C, {axes})``.
        output_size: ``O``, an int or one per axis (``None`` keeps that axis's size), >= 1.{extra_arg}
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(N, C, {out_axes})`` = ``(N, C, *output_size)``.

    Returns:
        The pooled output as the backend's array type.{extra_ret}

    Raises:
        ValueError: wrong number of dimensions, an output_size < 1 or of the wrong length.
        TypeError: a non-integer output_size, a non-floating input.

    Example:
        >>> import numpy as np
        >>> adaptive_{kind}_pool{d}d(np.arange(1.0, {n}).reshape(1, 1, {shape}), {o}).ravel().tolist()
        {want}
    """


def _adaptive(op: str, dims: int, input, output_size, backend):
    return call(op, input, backend=backend, where=f"{op}{dims}d", output_size=output_size, dims=dims)


_AVG_EX = {
    1: ("6", "5", "2", "[2.0, 4.0]"),
    2: ("5", "2, 2", "1", "[2.5]"),
    3: ("9", "2, 2, 2", "1", "[4.5]"),
}
_MAX_EX = {
    1: ("6", "5", "2", "[3.0, 5.0]"),
    2: ("5", "2, 2", "1", "[4.0]"),
    3: ("9", "2, 2, 2", "1", "[8.0]"),
}


def _adoc(kind: str, d: int):
    n, shape, o, want = (_AVG_EX if kind == "avg" else _MAX_EX)[d]
    extra_arg = (
        "\n        return_indices: also return the flat index of each maximum in its plane."
        if kind == "max"
        else ""
    )
    extra_ret = " With ``return_indices``, ``(output, indices)``." if kind == "max" else ""
    return doc(
        _ADAPTIVE_DOC,
        d=d,
        kind=kind,
        n=n,
        shape=shape,
        o=o,
        want=want,
        extra_arg=extra_arg,
        extra_ret=extra_ret,
    )


@_adoc("avg", 1)
def adaptive_avg_pool1d(input, output_size, *, backend=None):
    return _adaptive("adaptive_avg_pool", 1, input, output_size, backend)


@_adoc("avg", 2)
def adaptive_avg_pool2d(input, output_size, *, backend=None):
    return _adaptive("adaptive_avg_pool", 2, input, output_size, backend)


@_adoc("avg", 3)
def adaptive_avg_pool3d(input, output_size, *, backend=None):
    return _adaptive("adaptive_avg_pool", 3, input, output_size, backend)


def _adaptive_max(dims, input, output_size, return_indices, backend):
    where = f"adaptive_max_pool{dims}d"
    out = _adaptive("adaptive_max_pool", dims, input, output_size, backend)
    if not as_bool(return_indices, "return_indices", where):
        return out
    return out, call(
        "adaptive_max_pool_indices", input, backend=backend, where=where, output_size=output_size, dims=dims
    )


@_adoc("max", 1)
def adaptive_max_pool1d(input, output_size, return_indices=False, *, backend=None):
    return _adaptive_max(1, input, output_size, return_indices, backend)


@_adoc("max", 2)
def adaptive_max_pool2d(input, output_size, return_indices=False, *, backend=None):
    return _adaptive_max(2, input, output_size, return_indices, backend)


@_adoc("max", 3)
def adaptive_max_pool3d(input, output_size, return_indices=False, *, backend=None):
    return _adaptive_max(3, input, output_size, return_indices, backend)


_ADAPTIVE_LAYER_DOC = """{d}-D adaptive {kind} pooling layer: ``output_size`` windows per axis.

    Window ``i`` along an axis of length ``N`` covers ``[floor(i·N/O), ceil((i+1)·N/O))``.

    Args:
        output_size: ``O``, an int or one per axis (``None`` keeps that axis's size).{extra_arg}

    Shape:
        input ``(N, C, {axes})`` -> output ``(N, C, {out_axes})`` = ``(N, C, *output_size)``.

    Returns:
        ``forward(x)`` returns the pooled output.

    Raises:
        ValueError: an output_size < 1.

    Example:
        >>> import numpy as np
        >>> Adaptive{Kind}Pool{d}d(2)(np.zeros((1, 3, {example}))).shape
        (1, 3, {out})
    """

_EXAMPLE = {1: ("5", "2"), 2: ("5, 4", "2, 2"), 3: ("5, 4, 3", "2, 2, 2")}


def _alayer_doc(kind: str, d: int):
    example, out = _EXAMPLE[d]
    extra_arg = (
        "\n        return_indices: also return the indices of the maxima (default ``False``)."
        if kind == "max"
        else ""
    )
    return doc(
        _ADAPTIVE_LAYER_DOC,
        d=d,
        kind=kind,
        Kind=kind.capitalize(),
        example=example,
        out=out,
        extra_arg=extra_arg,
    )


def _output_size(value: Any, dims: int, where: str) -> Any:
    """``output_size`` checked and kept as given (an int stays an int; ``None`` keeps an axis)."""
    if isinstance(value, (tuple, list)) and len(value) == dims and any(v is None for v in value):
        return tuple(None if v is None else as_int_tuple(v, 1, "output_size", where)[0] for v in value)
    size = as_int_tuple(value, dims, "output_size", where)
    return size[0] if _is_int(value) else size


class _AdaptiveAvgPoolNd(Layer):
    dims = 0

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = _output_size(output_size, self.dims, type(self).__name__)

    def function(self, x):
        return _adaptive("adaptive_avg_pool", self.dims, x, self.output_size, None)

    def config(self):
        return {"output_size": self.output_size}

    def extra_repr(self):
        return f"output_size={self.output_size}"  # as given, as torch shows it

    def window(self):
        return ()  # the windows depend on the input's size: no fixed receptive field


class _AdaptiveMaxPoolNd(_AdaptiveAvgPoolNd):
    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__(output_size)
        self.return_indices = as_bool(return_indices, "return_indices", type(self).__name__)

    def _values(self, x):
        return _adaptive("adaptive_max_pool", self.dims, x, self.output_size, None)

    def _indices(self, x):
        where = type(self).__name__
        return call("adaptive_max_pool_indices", x, where=where, output_size=self.output_size, dims=self.dims)

    def function(self, x):
        out = self._values(x)
        return (out, self._indices(x)) if self.return_indices else out

    def forward(self, x):
        if not self.return_indices:
            return super().forward(x)
        be = self._run_backend(x)
        x, _ = self._arrays(be, x)
        with use_backend(be):
            y, self._pullback = vjp(self._values, x)  # the gradient flows through the values only
            return y, self._indices(x)

    def config(self):
        return {"output_size": self.output_size, "return_indices": self.return_indices}


@_alayer_doc("avg", 1)
class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    dims = 1


@_alayer_doc("avg", 2)
class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    dims = 2


@_alayer_doc("avg", 3)
class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    dims = 3


@_alayer_doc("max", 1)
class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    dims = 1


@_alayer_doc("max", 2)
class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    dims = 2


@_alayer_doc("max", 3)
class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    dims = 3


class AdaptiveMaxPoolIndicesSpec(AdaptiveMaxPoolSpec):
    """Where each adaptive max pooling window's maximum is: its flat index in its ``(n, c)`` plane.

    ``indices[n, c, i] = Σ_a u*_a · Π_{b > a} N_b`` for the first maximum ``u*`` of
    window ``i`` (PyTorch's ``return_indices``). Backward: none, the output is
    integers; checked against torch's own indices in ``tests/test_native_oracle.py``.
    """

    name = "adaptive_max_pool_indices"
    properties = ()
    #: its output holds integers: its cases are error contracts only (the values are torch's)
    index_output = True

    def cases(self):
        return tuple(_adaptive_cases(self.name))[-4:]  # the error contracts

    @property
    def has_oracle(self) -> bool:
        return False


FUNCTIONS = (
    *FUNCTIONS,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
)
LAYERS = (
    *LAYERS,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
)
SPECS = (*SPECS, AdaptiveAvgPoolSpec(), AdaptiveMaxPoolSpec(), AdaptiveMaxPoolIndicesSpec())


# == max_pool's indices, max_unpool (issue 10a) ===================================================


class MaxPoolIndicesSpec(MaxPoolSpec):
    """Where each max pooling window's maximum is: its flat index in its ``(n, c)`` input plane.

    ``indices[n, c, i] = Σ_a u*_a · Π_{b > a} N_b`` with ``u* = S·i + D·m* - P_before``
    the first maximum of window ``i`` (PyTorch's ``return_indices``). Backward:
    none, the output is integers; held to torch's own indices in
    ``tests/test_native_oracle.py``.
    """

    name = "max_pool_indices"
    properties = ()
    index_output = True

    def cases(self):
        rand = Seeds(29500)  # its own seeds: the same inputs however often this is called
        x4 = rand(1, 1, 4, 4)
        return tuple(
            error_cases(
                [
                    (
                        "max_pool_indices-error-stride0",
                        self.name,
                        (x4,),
                        {"kernel_size": 2, "stride": 0},
                        ValueError,
                        "stride",
                    ),
                    (
                        "max_pool_indices-error-wrong-ndim",
                        self.name,
                        (rand(4, 4),),
                        {"kernel_size": 2, "dims": 2},
                        ValueError,
                        "input must have 4",
                    ),
                ]
            )
        )

    @property
    def has_oracle(self) -> bool:
        return False


_URAND = Seeds(29000)


def _unpool_case(
    d: int,
    spatial: tuple[int, ...],
    kernel: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
    extra: str = "",
) -> Case:
    """A ``max_unpool{d}d`` case: indices of a max pooling of a seeded input with the same geometry."""
    k = (kernel,) * d if isinstance(kernel, int) else tuple(kernel)
    s = k if stride is None else ((stride,) * d if isinstance(stride, int) else tuple(stride))
    p = (padding,) * d if isinstance(padding, int) else tuple(padding)
    out_default = [(n - 1) * si - 2 * pi + ki for n, si, pi, ki in zip(spatial, s, p, k)]
    size = out_default if output_size is None else list(output_size)
    rng = np.random.default_rng(_URAND(1).seed)
    n, c = 2, 2
    # one distinct unit per window, as a pooling with stride >= kernel picks it: window i's
    # taps are S·i + m - P; a random tap inside the output plane
    flat = np.zeros((n, c, *spatial), dtype=np.int64)
    for axis, (o, si, pi, ki, full) in enumerate(zip(spatial, s, p, k, size)):
        i = np.arange(o).reshape([-1 if b == axis else 1 for b in range(d)])
        m = rng.integers(0, ki, size=(n, c, *spatial))
        pos = np.clip(si * i + m - pi, 0, full - 1)
        flat = flat * full + pos
    attrs: dict[str, Any] = {"kernel_size": kernel, "dims": d}
    name = [f"max_unpool{d}d", f"k{kernel}" if isinstance(kernel, int) else "k" + "x".join(map(str, kernel))]
    if stride is not None:
        attrs["stride"] = stride
        name.append(f"stride{stride}" if isinstance(stride, int) else "stride" + "x".join(map(str, stride)))
    if padding:
        attrs["padding"] = padding
        name.append(f"pad{padding}" if isinstance(padding, int) else "pad" + "x".join(map(str, padding)))
    if output_size is not None:
        attrs["output_size"] = output_size
        name.append("out" + "x".join(map(str, output_size)))
    if extra:
        name.append(extra)
    return Case("-".join(name), "max_unpool", (_URAND(n, c, *spatial), flat), attrs, tags=("pool", "unpool"))


def _unpool_oracle(x, indices, *, output_size, **_):
    """The definition: output unit ``indices[n, c, i]`` of plane ``(n, c)`` gets ``x[n, c, i]``."""
    n, c = x.shape[:2]
    y = np.zeros((n, c, math.prod(output_size)))
    for a in range(n):
        for b in range(c):
            y[a, b, indices[a, b].ravel()] = x[a, b].ravel()
    return y.reshape(n, c, *output_size)


def _unpool_cases() -> Iterator[Case]:
    yield _unpool_case(1, (4,), 2)
    yield _unpool_case(1, (3,), 3, 3, 1)
    yield _unpool_case(2, (3, 2), 2)
    yield _unpool_case(2, (2, 3), (2, 3), (3, 3), (0, 1))
    yield _unpool_case(2, (3, 3), 2, output_size=(7, 7), extra="bigger")
    yield _unpool_case(3, (2, 2, 1), 2)
    yield _unpool_case(3, (1, 2, 2), (1, 2, 2), output_size=(1, 5, 4))
    yield Case(
        "max_unpool1d-golden",
        "max_unpool",
        ([[[5.0, 7.0]]], np.array([[[1, 2]]], dtype=np.int64)),
        {"kernel_size": 2, "dims": 1},
        expected=[[[0.0, 5.0, 7.0, 0.0]]],
        tags=("golden", "unpool"),
    )
    x, idx = _URAND(1, 1, 2, 2), np.zeros((1, 1, 2, 2), dtype=np.int64)
    yield from error_cases(
        [
            (
                "max_unpool-error-index-out-of-range",
                "max_unpool",
                (x, idx + 16),
                {"kernel_size": 2, "dims": 2},
                ValueError,
                r"indices must be in \[0, 16\)",
            ),
            (
                "max_unpool-error-negative-index",
                "max_unpool",
                (x, idx - 1),
                {"kernel_size": 2, "dims": 2},
                ValueError,
                "indices must be in",
            ),
            (
                "max_unpool-error-index-shape",
                "max_unpool",
                (x, idx[..., :1]),
                {"kernel_size": 2, "dims": 2},
                ValueError,
                "indices must have the input's shape",
            ),
            (
                "max_unpool-error-float-indices",
                "max_unpool",
                (x, x),
                {"kernel_size": 2, "dims": 2},
                TypeError,
                "indices must hold integers",
            ),
            (
                "max_unpool-error-output-size-length",
                "max_unpool",
                (x, idx),
                {"kernel_size": 2, "output_size": (4,), "dims": 2},
                ValueError,
                "output_size",
            ),
            (
                "max_unpool-error-output-size-0",
                "max_unpool",
                (x, idx),
                {"kernel_size": 2, "output_size": (0, 4), "dims": 2},
                ValueError,
                "output_size",
            ),
        ]
    )


class MaxUnpoolSpec(OpSpec):
    """The partial inverse of max pooling: each value back at its maximum's place, zeros elsewhere.

    Forward, ``indices`` the flat positions ``return_indices`` gave::

        out[n, c, :].flat[indices[n, c, i]] = x[n, c, i];   every other unit 0

    Backward::

        δ_prev[n, c, i] = δ[n, c, :].flat[indices[n, c, i]]

    Shape: input and indices ``(N, C, *spatial)`` -> ``(N, C, *output_size)``, by
    default ``O = (N - 1)·S - P_before - P_after + F`` per axis.

    Canonical attributes: ``output_size: (d,) ints``.
    """

    name = "max_unpool"
    inputs = ("input", "indices")
    integer_inputs = frozenset({"indices"})
    defaults: Mapping[str, Any] = {
        "kernel_size": OpSpec.REQUIRED,
        "stride": None,
        "padding": 0,
        "output_size": None,
        "dims": None,
    }

    def check(self, where, infos, attrs):
        x, idx = infos
        dims = spatial_dims(where, attrs, x)
        check_ndim(where, "input", x, dims + 2, layout(dims))
        if idx.shape != x.shape:
            raise ValueError(f"{where}: indices must have the input's shape {x.shape}, got {idx.shape}")
        kernel = as_int_tuple(attrs["kernel_size"], dims, "kernel_size", where)
        stride = kernel if attrs["stride"] is None else as_int_tuple(attrs["stride"], dims, "stride", where)
        padding = as_int_tuple(attrs["padding"], dims, "padding", where, minimum=0)
        size = attrs["output_size"]
        default = tuple((n - 1) * s - 2 * p + f for n, s, p, f in zip(x.shape[2:], stride, padding, kernel))
        if size is None:
            size = default
            if min(size) < 1:
                raise ValueError(f"{where}: padding {padding} leaves an empty output (sizes {size})")
        else:
            if isinstance(size, (tuple, list)) and len(size) == dims + 2:
                size = tuple(size)[2:]  # torch takes (N, C, *spatial) too
            size = as_int_tuple(size, dims, "output_size", where)
            for axis, (o, o0, s) in enumerate(zip(size, default, stride)):
                if not o0 - s < o < o0 + s:  # PyTorch's rule: within one stride of the default
                    raise ValueError(
                        f"{where}: output_size {size} must be within one stride of {default} "
                        f"((N - 1)·S - 2P + F) on every axis: {o} on axis {axis} is not in "
                        f"({o0 - s}, {o0 + s})"
                    )
        return {"output_size": size}

    def check_values(self, where, inputs, to_numpy, attrs=None):
        """Every index must name a unit of its output plane (``Π output_size`` units)."""
        idx = to_numpy(inputs[1])
        if idx.size == 0 or attrs is None:
            return
        plane = math.prod(attrs["output_size"])
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= plane:
            raise ValueError(
                f"{where}: indices must be in [0, {plane}) (the output plane), got values from {lo} to {hi}"
            )

    def output_shape(self, infos, attrs):
        return (*infos[0].shape[:2], *attrs["output_size"])

    @functools.cache  # noqa: B019 - one record, built once
    def cases(self):
        return tuple(_unpool_cases())

    def oracle(self, x, indices, **attrs):
        return _unpool_oracle(x, indices, **attrs)


_UNPOOL_DOC = """{d}-D max unpooling: each value back at the flat index max pooling gave, zeros elsewhere.

    Args:
        input: ``(N, C, {axes})``, a max pooling's output.
        indices: its ``return_indices``, integers of the input's shape.
        kernel_size, stride, padding: the pooling's (``stride`` default: ``kernel_size``).
        output_size: the output's spatial size (or ``(N, C, *spatial)``); by default
            ``(N - 1)·S - 2P + F`` per axis.
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(N, C, {out_axes})``.

    Returns:
        The unpooled output as the backend's array type.

    Raises:
        ValueError: indices outside the output plane or of another shape, a wrong output_size.
        TypeError: indices that are not integers.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[5.0, 7.0]]]); idx = np.array([[[1, 2]]])
        >>> max_unpool{d}d(x.reshape(1, 1, {shape}), idx.reshape(1, 1, {shape}), {k}).ravel().tolist()
        {want}
    """

_UNPOOL_EX = {
    1: dict(shape="2", k="2", want="[0.0, 5.0, 7.0, 0.0]"),
    2: dict(shape="1, 2", k="(1, 2)", want="[0.0, 5.0, 7.0, 0.0]"),
    3: dict(shape="1, 1, 2", k="(1, 1, 2)", want="[0.0, 5.0, 7.0, 0.0]"),
}


def _unpool(dims, input, indices, kernel_size, stride, padding, output_size, backend):
    return call(
        "max_unpool",
        input,
        indices,
        backend=backend,
        where=f"max_unpool{dims}d",
        dims=dims,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_size=output_size,
    )


@doc(_UNPOOL_DOC, d=1, **_UNPOOL_EX[1])
def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    return _unpool(1, input, indices, kernel_size, stride, padding, output_size, backend)


@doc(_UNPOOL_DOC, d=2, **_UNPOOL_EX[2])
def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    return _unpool(2, input, indices, kernel_size, stride, padding, output_size, backend)


@doc(_UNPOOL_DOC, d=3, **_UNPOOL_EX[3])
def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    return _unpool(3, input, indices, kernel_size, stride, padding, output_size, backend)


_UNPOOL_LAYER_DOC = """{d}-D max unpooling layer: ``forward(x, indices)`` puts each value back in place.

    Args:
        kernel_size, stride, padding: the pooling's (``stride`` default: ``kernel_size``).

    Shape:
        input and indices ``(N, C, {axes})`` -> output ``(N, C, {out_axes})``, by default
        ``(N - 1)·S - 2P + F`` per axis.

    Returns:
        ``forward(x, indices)`` returns the unpooled output; ``backward(δ)`` returns ``dE/dx``.

    Raises:
        ValueError: indices outside the output plane.

    Example:
        >>> import numpy as np
        >>> MaxUnpool{d}d(2)(np.ones((1, 1, {ones})), np.zeros((1, 1, {ones}), dtype=np.int64)).shape
        (1, 1, {out})
    """


class _MaxUnpoolNd(Layer):
    dims = 0

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        where = type(self).__name__
        self.kernel_size = as_int_tuple(kernel_size, self.dims, "kernel_size", where)
        self.stride = self.kernel_size if stride is None else as_int_tuple(stride, self.dims, "stride", where)
        self.padding = as_int_tuple(padding, self.dims, "padding", where, minimum=0)

    def function(self, x, indices, output_size=None):
        return _unpool(self.dims, x, indices, self.kernel_size, self.stride, self.padding, output_size, None)

    def forward(self, x, indices=None, output_size=None):
        if indices is None:
            raise TypeError(f"{type(self).__name__}: forward needs the pooling's indices")
        be = self._run_backend(x)
        x, _ = self._arrays(be, x)
        with use_backend(be):
            fn = functools.partial(self.function, output_size=output_size)
            y, self._pullback = vjp(fn, x, indices)
        return y

    def __call__(self, x, indices=None, output_size=None):
        return self.forward(x, indices, output_size)

    def config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def window(self):
        return ()  # each output unit reads the one input its index names: no fixed window


@doc(_UNPOOL_LAYER_DOC, d=1, ones="2", out="4")
class MaxUnpool1d(_MaxUnpoolNd):
    dims = 1


@doc(_UNPOOL_LAYER_DOC, d=2, ones="2, 2", out="4, 4")
class MaxUnpool2d(_MaxUnpoolNd):
    dims = 2


@doc(_UNPOOL_LAYER_DOC, d=3, ones="2, 2, 2", out="4, 4, 4")
class MaxUnpool3d(_MaxUnpoolNd):
    dims = 3


FUNCTIONS = (*FUNCTIONS, max_unpool1d, max_unpool2d, max_unpool3d)
LAYERS = (*LAYERS, MaxUnpool1d, MaxUnpool2d, MaxUnpool3d)
SPECS = (*SPECS, MaxPoolIndicesSpec(), MaxUnpoolSpec())
