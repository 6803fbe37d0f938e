"""The convolution record: ``conv`` in 1-3 D, its functions, its layers, cases and oracle.

The op: :class:`ConvSpec`. The functions :func:`conv1d`, :func:`conv2d`,
:func:`conv3d` (PyTorch's names and argument order) validate once through it
and dispatch; the layers :class:`Conv1d`, :class:`Conv2d`, :class:`Conv3d`
hold the parameters. The NumPy kernel is ``cnnkit_numpy.ops.conv_forward`` /
``conv_backward``; the torch kernel ``cnnkit_torch.ops.Conv``.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnkit import geometry
from cnnkit.conformance.cases import Case, Random, Seeds, error_cases, pad_id, per_axis
from cnnkit.dispatch import call
from cnnkit.layer import Layer, ParamSpec, window_of
from cnnkit.ops._shared import BackendArg, check_pads, doc, nan_propagates, pad, windows
from cnnkit.spec import (
    OpSpec,
    PropertySkip,
    _is_int,
    as_bool,
    as_int_tuple,
    check_ndim,
    check_spatial_nonempty,
    layout,
    spatial_dims,
)

__all__ = ["FUNCTIONS", "LAYERS", "Conv1d", "Conv2d", "Conv3d", "ConvSpec", "conv1d", "conv2d", "conv3d"]

# -- the record ----------------------------------------------------------------------------

LAYOUT = {1: (9,), 2: (7, 6), 3: (5, 4, 4)}
#: torch.nn's conv padding modes
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
rand = Seeds(1000)


def _case(
    d: int,
    *,
    c: int = 2,
    k: int = 3,
    f: int | tuple = 3,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    bias: bool = True,
    flip: bool = False,
    n: int = 2,
    spatial: tuple[int, ...] | None = None,
    extra: str = "",
) -> Case:
    spatial = spatial or LAYOUT[d]
    kernel = (f,) * d if isinstance(f, int) else f
    parts = [f"conv{d}d"]
    if extra:
        parts.append(extra)
    if stride != 1:
        parts.append(f"stride{stride}" if isinstance(stride, int) else "stride" + "x".join(map(str, stride)))
    if padding != 0:
        parts.append(pad_id(padding))
    if dilation != 1:
        parts.append(f"dil{dilation}")
    if groups != 1:
        parts.append("depthwise" if groups == c and k % c == 0 and groups > 2 else f"groups{groups}")
    if not bias:
        parts.append("nobias")
    if flip:
        parts.append("flip")
    attrs: dict[str, Any] = {}
    for key, value, default in (
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
        ("groups", groups, 1),
        ("flip", flip, False),
    ):
        if value != default:
            attrs[key] = value
    attrs["dims"] = d
    inputs = (rand(n, c, *spatial), rand(k, c // groups, *kernel), rand(k) if bias else None)
    return Case("-".join(parts), "conv", inputs, attrs, tags=("conv", f"{d}d"))


def _random_cases() -> Iterator[Case]:
    """Convolution in 1-3 D: stride x padding forms, dilation, groups, bias, flip, kernel shapes."""
    for d in (1, 2, 3):
        pair_pad = per_axis(d, ((0, 1), (2, 1), (1, 0)))
        tuple_pad = per_axis(d, (2, 0, 1))
        for stride in (1, 2, 3):
            for padding in (0, 1, tuple_pad, "valid", "same", pair_pad):
                yield _case(d, stride=stride, padding=padding)
        # "same" with an even kernel: an odd total, the extra unit after (SAME_UPPER)
        for stride in (1, 2, 3):
            yield _case(d, f=2, stride=stride, padding="same", extra="k2")
        yield _case(d, f=1, extra="k1")
        big = {"n": 1, "spatial": (5, 5, 5)} if d == 3 else {}
        for stride in (1, 2):
            for padding in (0, "same"):
                yield _case(d, dilation=2, stride=stride, padding=padding, **big)
        yield _case(d, dilation=per_axis(d, (1, 2)), padding=1, extra="mixdil")
        for groups, c, k in ((2, 4, 4), (4, 4, 4), (4, 4, 8)):
            for stride in (1, 2):
                yield _case(
                    d, c=c, k=k, groups=groups, stride=stride, padding=1, extra="" if k == c else f"k{k}"
                )
        yield _case(d, c=4, k=4, groups=2, bias=False)
        for padding in (0, "same", pair_pad):
            yield _case(d, flip=True, padding=padding)
        yield _case(d, flip=True, stride=2, groups=2, c=4, k=4, padding=1)
        yield _case(d, bias=False)
        yield _case(d, bias=False, stride=2, padding="same")
        yield _case(d, f=per_axis(d, (3, 2, 1)), stride=per_axis(d, (2, 1)), padding=1, extra="rect")
        yield _case(d, n=1, c=1, k=1, extra="single")
    # a kernel as large as the input: one output unit
    yield _case(2, f=(7, 6), extra="fullkernel")
    yield _case(2, f=3, padding=((2, 2), (2, 2)), extra="full")
    # shapes that take a backend's other paths: more filters than a window has taps (K > C·ΠF),
    # stride 1 with asymmetric padding and dilation in groups, a wide kernel along one axis
    yield _case(2, c=2, k=20, f=2, padding=((1, 0), (0, 1)), extra="manyfilters")
    yield _case(2, c=4, k=4, f=(3, 2), padding=((2, 1), (0, 3)), dilation=(2, 1), groups=2, extra="s1asym")
    yield _case(2, c=1, k=3, f=(2, 5), padding=((0, 0), (2, 2)), dilation=(1, 2), extra="widekernel")
    yield _case(
        3, c=2, k=3, f=(2, 2, 3), padding=((1, 0), (0, 1), (2, 1)), dilation=(2, 1, 1), n=1, extra="s1asym"
    )
    # padding_mode (torch.nn's): the padding holds reflected, replicated or wrapped units
    for d in (1, 2, 3):
        for j, mode in enumerate(("reflect", "replicate", "circular")):
            kw = ({"padding": 1}, {"padding": per_axis(d, ((2, 1), (0, 2))), "stride": 2})[(d + j) % 2]
            case = _case(d, extra=mode, **kw)
            yield Case(case.id, "conv", case.inputs, {**case.attrs, "padding_mode": mode}, tags=case.tags)
    case = _case(2, c=4, k=4, groups=2, dilation=2, padding="same", extra="reflect")
    yield Case(case.id, "conv", case.inputs, {**case.attrs, "padding_mode": "reflect"}, tags=case.tags)


def _goldens() -> Iterator[Case]:
    """The lecture's worked examples, verbatim."""
    sobel_i = [[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]
    sobel_k = [[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]
    yield Case(
        "conv2d-lecture-sobel-flip-same",
        "conv",
        ([[sobel_i]], [[sobel_k]], None),
        {"padding": "same", "flip": True, "dims": 2},
        expected=[[[[-13.0, -20, -17], [-18, -24, -18], [13, 20, 17]]]],
        tags=("golden", "lecture", "conv"),
    )

    def rows(*lines: str) -> list[list[float]]:
        return [[float(ch) for ch in line] for line in lines]

    # lecture layout x[:, :, d] -> NCHW x[0, d]
    x = [
        rows("20000", "22210", "21122", "11122", "00100"),
        rows("11121", "12100", "12021", "20111", "11122"),
        rows("00020", "21112", "11202", "12120", "00021"),
    ]
    w0 = [
        [[1.0, -1, 0], [1, 1, 1], [0, 1, 1]],
        [[1.0, 1, 0], [-1, -1, 1], [1, -1, -1]],
        [[1.0, -1, 1], [-1, 0, 1], [1, 1, 1]],
    ]
    w1 = [
        [[-1.0, 1, 0], [1, -1, -1], [0, 1, 1]],
        [[0.0, -1, -1], [0, -1, 0], [0, 1, 1]],
        [[0.0, -1, -1], [0, 0, 0], [-1, 1, 0]],
    ]
    o0 = [[7.0, 10, -1], [7, 14, 6], [3, 8, -1]]
    o1 = [[6.0, 3, 0], [-3, -1, -3], [-5, -7, -3]]
    yield Case(
        "conv2d-lecture-volume-stride2-pad1",
        "conv",
        ([x], [w0, w1], [1.0, 0.0]),
        {"stride": 2, "padding": 1, "dims": 2},
        expected=[[o0, o1]],
        tags=("golden", "lecture", "conv"),
    )
    # The lecture's output-size table: N = 7, F = 3 gives (7 - 3) / S + 1 outputs. With S = 3 the
    # window does not fit (4 / 3 is not whole): cnnkit.geometry.conv_output_size(strict=True) raises,
    # and the op, like PyTorch, keeps the whole windows only. A ones kernel over 1..7 makes each
    # output the sum of its window, so the expected values show which windows were taken.
    ramp = [[[1.0, 2, 3, 4, 5, 6, 7]]]
    for stride, sums in ((1, [6.0, 9, 12, 15, 18]), (2, [6.0, 12, 18]), (3, [6.0, 15])):
        yield Case(
            f"conv1d-lecture-size-table-n7-f3-s{stride}",
            "conv",
            (ramp, [[[1.0, 1, 1]]], None),
            {"stride": stride, "dims": 1},
            expected=[[sums]],
            tags=("golden", "lecture", "conv"),
        )
    # NaN and inf: dE/dx = δ ⋆_full rot180(W) never reads x, dE/dW = y ⋆ δ carries them
    yield Case(
        "conv1d-golden-nan-inf",
        "conv",
        ([[[np.nan, 1.0, 2.0, np.inf]]], [[[1.0, 1.0]]], [0.5]),
        {"dims": 1},
        expected=[[[np.nan, 3.5, np.inf]]],
        grad_output=[[[1.0, 1.0, 1.0]]],
        expected_grads=([[[1.0, 2.0, 2.0, 1.0]]], [[[np.nan, np.inf]]], [3.0]),
        differentiable=False,
        tags=("golden", "conv", "nan"),
    )
    # hand-computed: a 1-D true convolution is the polynomial product
    yield Case(
        "conv1d-golden-polyproduct-flip-full",
        "conv",
        ([[[1.0, 2, 3]]], [[[1.0, 1]]], None),
        {"padding": 1, "flip": True, "dims": 1},
        expected=[[[1.0, 3, 5, 3]]],
        tags=("golden", "conv"),
    )


def sized_case(
    case_id: str, *, batch: int, channels: int, size: int, kernel: int = 3, stride: int = 1, seed: int = 0
) -> Case:
    """A 2-D case of a chosen size, with 3 filters and a bias, for a backend that sizes cases from
    its own limits (a batch large enough that a chunked path crosses a chunk boundary)."""
    inputs = (
        Random((batch, channels, size, size), seed=seed),
        Random((3, channels, kernel, kernel), seed=seed + 1),
        Random((3,), seed=seed + 2),
    )
    return Case(case_id, "conv", inputs, {"stride": stride, "dims": 2}, tags=("conv", "size"))


@functools.cache
def _all_cases() -> tuple[Case, ...]:
    return (*_goldens(), *_random_cases(), *_error_cases())


def _error_cases() -> Iterator[Case]:
    x4, w4 = rand(1, 3, 6, 6), rand(2, 3, 3, 3)
    yield from error_cases(
        [
            (
                "conv-error-wrong-ndim",
                "conv",
                (rand(3, 6, 6), w4, None),
                {"dims": 2},
                ValueError,
                "input must have 4",
            ),
            (
                "conv-error-channel-mismatch",
                "conv",
                (x4, rand(2, 4, 3, 3), None),
                {},
                ValueError,
                "weight has 4 input channels but input has 3",
            ),
            (
                "conv-error-groups-not-dividing",
                "conv",
                (x4, w4, None),
                {"groups": 2},
                ValueError,
                "groups=2 does not divide",
            ),
            (
                "conv-error-kernel-too-large",
                "conv",
                (rand(1, 3, 2, 2), w4, None),
                {},
                ValueError,
                "larger than",
            ),
            ("conv-error-stride0", "conv", (x4, w4, None), {"stride": 0}, ValueError, "stride must be >= 1"),
            (
                "conv-error-dilation0",
                "conv",
                (x4, w4, None),
                {"dilation": 0},
                ValueError,
                "dilation must be >= 1",
            ),
            (
                "conv-error-negative-padding",
                "conv",
                (x4, w4, None),
                {"padding": -1},
                ValueError,
                "padding must be >= 0",
            ),
            (
                "conv-error-bad-padding-string",
                "conv",
                (x4, w4, None),
                {"padding": "full"},
                ValueError,
                "padding",
            ),
            ("conv-error-float-stride", "conv", (x4, w4, None), {"stride": 1.5}, TypeError, "stride"),
            ("conv-error-bias-shape", "conv", (x4, w4, rand(3)), {}, ValueError, "bias must have shape"),
            (
                "conv-error-mismatched-dtypes",
                "conv",
                (
                    Random((1, 3, 6, 6), seed=7, dtype="float32"),
                    Random((2, 3, 3, 3), seed=8, dtype="float64"),
                    None,
                ),
                {},
                TypeError,
                "dtype",
            ),
            (
                "conv-error-int-input",
                "conv",
                (np.ones((1, 3, 6, 6), dtype=np.int64), w4, None),
                {},
                TypeError,
                "floating",
            ),
            (
                "conv-error-reflect-too-wide",
                "conv",
                (x4, w4, None),
                {"padding": 6, "padding_mode": "reflect"},
                ValueError,
                "reflect padding must be smaller than the input",
            ),
            (
                "conv-error-padding-mode",
                "conv",
                (x4, w4, None),
                {"padding": 1, "padding_mode": "mirror"},
                ValueError,
                "padding_mode must be one of",
            ),
            (
                "conv-error-unknown-attr",
                "conv",
                (x4, w4, None),
                {"strides": 2},
                TypeError,
                "unexpected attribute",
            ),
        ]
    )


def _linearity_in_x(run) -> None:
    x1, w, _ = run.inputs
    x2 = run.rng("x2").uniform(-1, 1, size=x1.shape).astype(run.dtype)
    a, b = 0.75, -1.25
    lhs = run.run([a * x1 + b * x2, w, None])
    rhs = a * run.run([x1, w, None]) + b * run.run([x2, w, None])
    run.compare("property: conv(a·x1 + b·x2, W) == a·conv(x1, W) + b·conv(x2, W)", lhs, rhs)


def _linearity_in_w(run) -> None:
    x, w1, _ = run.inputs
    w2 = run.rng("w2").uniform(-1, 1, size=w1.shape).astype(run.dtype)
    a, b = 0.75, -1.25
    lhs = run.run([x, a * w1 + b * w2, None])
    rhs = a * run.run([x, w1, None]) + b * run.run([x, w2, None])
    run.compare("property: conv(x, a·W1 + b·W2) == a·conv(x, W1) + b·conv(x, W2)", lhs, rhs)


def _flip_is_rot180(run) -> None:
    x, w, b = run.inputs
    d = w.ndim - 2
    rot = np.ascontiguousarray(w[(slice(None), slice(None), *([slice(None, None, -1)] * d))])
    attrs = dict(run.case.attrs)
    flip = bool(attrs.get("flip", False))
    attrs["flip"] = not flip
    run.compare(
        "property: conv(x, W, flip=True) == conv(x, rot180(W), flip=False)",
        run.run([x, rot, b], attrs),
        run.run([x, w, b]),
    )


def _translation_equivariance(run) -> None:
    _, canonical = run.canonical()
    if any(s != 1 for s in canonical["stride"]):
        raise PropertySkip("translation equivariance holds at stride 1 only")
    x, w, b = run.inputs
    d = w.ndim - 2
    ext = canonical["dilation"][-1] * (w.shape[-1] - 1) + 1
    margin = ext + max(canonical["padding"][-1]) + 1
    z = np.zeros((*x.shape[:-1], x.shape[-1] + 2 * margin), dtype=x.dtype)
    z[..., margin : margin + x.shape[-1]] = x
    shifted = np.roll(z, 1, axis=-1)
    attrs = {**canonical, "dims": d}
    y = run.run([z, w, b], attrs)
    y_shift = run.run([shifted, w, b], attrs)
    run.compare("property: conv(shift(x)) == shift(conv(x)) (stride 1)", y_shift[..., 1:], y[..., :-1])


def _oracle(x, w, b, *, stride, padding, dilation, groups, flip, padding_mode="zeros"):
    """The definition, with every window gathered at once and reduced by one einsum."""
    d = x.ndim - 2
    if padding_mode != "zeros":  # NumPy's own modes: reflect, edge, wrap
        mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[padding_mode]
        x = np.pad(x, ((0, 0), (0, 0), *padding), mode=mode)
        padding = tuple((0, 0) for _ in padding)
    if flip:
        w = w[(slice(None), slice(None), *([slice(None, None, -1)] * d))]
    kernel = w.shape[2:]
    out = [
        geometry.conv_output_size(n, f, s, p, dd)
        for n, f, s, p, dd in zip(x.shape[2:], kernel, stride, padding, dilation)
    ]
    win = windows(pad(x, padding), kernel, stride, dilation, out)  # (N, C, *O, *F)
    n, c = x.shape[:2]
    k = w.shape[0]
    win = win.reshape(n, groups, c // groups, *win.shape[2:])  # (N, G, C/G, *O, *F)
    wg = w.reshape(groups, k // groups, *w.shape[1:])  # (G, K/G, C/G, *F)
    o_ax, f_ax = string.ascii_uppercase[:d], string.ascii_uppercase[d : 2 * d]
    y = np.einsum(f"ngc{o_ax}{f_ax},gkc{f_ax}->ngk{o_ax}", win, wg).reshape(n, k, *out)
    if b is not None:
        y = y + b.reshape(k, *([1] * d))
    return y


class ConvSpec(OpSpec):
    """Convolution / cross-correlation in 1, 2 or 3 spatial dimensions.

    Forward (cross-correlation; ``flip=True`` uses ``rot180(W)``, the lecture's
    true convolution ``(I * K)(i) = Σ_m I(i - m) K(m)``)::

        a[n, k, i] = b[k] + Σ_c Σ_m W[k, c, m] · y_pad[n, g(k)·C/G + c, S·i + D·m]

    Backward (the lecture's formulas)::

        dE/dW[k, c, m] = Σ_n Σ_i δ[n, k, i] · y_pad[n, c, S·i + D·m]     (y ⋆ δ, δ dilated by S)
        dE/db[k]       = Σ_n Σ_i δ[n, k, i]
        δ_prev         = δ ⋆_full rot180(W)                              (δ dilated by S, padding cropped)

    Shape: input ``(N, C, *spatial)``, weight ``(K, C/groups, *F)``, bias ``(K,)``
    -> ``(N, K, *O)`` with ``O = floor((N + P_before + P_after - D·(F-1) - 1) / S) + 1``.

    ``padding_mode`` (torch.nn's): ``"zeros"``, or ``"reflect"``, ``"replicate"``,
    ``"circular"``: ``y_pad`` is then the ``pad`` op's padding of ``y`` in that mode,
    and ``δ_prev`` is the pad op's backward of the padded input's gradient.

    Canonical attributes: ``stride, dilation: (d,) ints``, ``padding: (d,)
    (before, after)``, ``groups: int``, ``flip: bool``, ``padding_mode: str``.
    """

    name = "conv"
    inputs = ("input", "weight", "bias")
    optional = frozenset({"bias"})
    defaults: Mapping[str, Any] = {
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
        "flip": False,
        "padding_mode": "zeros",
        "dims": None,
    }

    def check(self, where, infos, attrs):
        x, w, b = infos
        dims = spatial_dims(where, attrs, x)
        check_ndim(where, "input", x, dims + 2, layout(dims))
        check_ndim(where, "weight", w, dims + 2, layout(dims, "K, C/groups"))
        check_spatial_nonempty(where, x)
        stride = as_int_tuple(attrs["stride"], dims, "stride", where)
        dilation = as_int_tuple(attrs["dilation"], dims, "dilation", where)
        groups = attrs["groups"]
        if not _is_int(groups):
            raise TypeError(f"{where}: groups must be an int, got {groups!r}")
        if groups < 1:
            raise ValueError(f"{where}: groups must be >= 1, got {groups}")
        flip = as_bool(attrs["flip"], "flip", where)
        _n, c = x.shape[:2]
        k, cg = w.shape[:2]
        kernel = w.shape[2:]
        if k < 1:
            raise ValueError(f"{where}: weight must have at least 1 filter, got weight {w.shape}")
        if c % groups:
            raise ValueError(
                f"{where}: groups={groups} does not divide the {c} input channels (input {x.shape})"
            )
        if k % groups:
            raise ValueError(f"{where}: groups={groups} does not divide the {k} filters (weight {w.shape})")
        if cg * groups != c:
            per_group = "" if groups == 1 else f" per group ({c} in {groups} groups)"
            raise ValueError(
                f"{where}: weight has {cg} input channels but input has {c // groups}{per_group} "
                f"(input {x.shape}, weight {w.shape})"
            )
        if min(kernel) < 1:
            raise ValueError(f"{where}: weight has an empty kernel (weight {w.shape})")
        if b is not None and b.shape != (k,):
            raise ValueError(
                f"{where}: bias must have shape ({k},), one per filter, got {b.shape} (weight {w.shape})"
            )
        padding = geometry.resolve_padding(
            attrs["padding"], kernel, stride, dilation, x.shape[2:], where=where
        )
        for axis, (size, f, _s, p, d) in enumerate(zip(x.shape[2:], kernel, stride, padding, dilation)):
            if size + p[0] + p[1] < geometry.effective_kernel(f, d):
                raise ValueError(
                    f"{where}: weight's kernel (extent {geometry.effective_kernel(f, d)} with "
                    f"dilation {d}) is larger than the padded input along spatial axis {axis} "
                    f"({size} + padding {p}) (input {x.shape}, weight {w.shape})"
                )
        mode = attrs["padding_mode"]
        if mode not in PADDING_MODES:
            raise ValueError(f"{where}: padding_mode must be one of {', '.join(PADDING_MODES)}, got {mode!r}")
        if mode != "zeros":
            check_pads(where, x.shape[2:], padding, mode)
        return {
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
            "flip": flip,
            "padding_mode": mode,
        }

    def output_shape(self, infos, attrs):
        x, w, _ = infos
        spatial = tuple(
            geometry.conv_output_size(n, f, s, p, d)
            for n, f, s, p, d in zip(
                x.shape[2:], w.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"]
            )
        )
        return (x.shape[0], w.shape[0], *spatial)

    def cases(self):
        return _all_cases()

    def oracle(self, x, w, b, **attrs):
        return _oracle(x, w, b, **attrs)

    properties = (
        _linearity_in_x,
        _linearity_in_w,
        _flip_is_rot180,
        _translation_equivariance,
        nan_propagates,
    )


# -- the functions ---------------------------------------------------------------------------

_FUNCTION_DOC = """{d}-D convolution (cross-correlation by default) of ``input`` with ``weight``.

    ``out[n, k, i] = bias[k] + Σ_c Σ_m weight[k, c, m] · input_pad[n, g·C/G + c, S·i + D·m]``
    with ``g`` the group of filter ``k``; ``flip=True`` rotates the kernel 180°
    first, the lecture's true convolution ``(I * K)(i) = Σ_m I(i - m) K(m)``.

    Args:
        input: ``(N, C, {axes})``.
        weight: ``(K, C/groups, {kernel})``, ``K`` filters.
        bias: ``(K,)`` or ``None``.
        stride: ``S``, an int or one per axis, >= 1.
        padding: an int, one int per axis, one ``(before, after)`` pair per axis,
            ``"valid"`` or ``"same"`` (output ``ceil(N/S)``, extra unit after).
        dilation: ``D``, spacing of the kernel taps, >= 1.
        groups: split channels and filters into this many independent groups
            (``groups == C`` with ``K == C`` is depthwise).
        flip: ``True`` for true convolution, ``False`` (default) for cross-correlation.
        padding_mode: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or
            ``"circular"``: what the padding holds (torch.nn's conv modes).
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(N, K, {out_axes})`` with, per axis,
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1``.

    Returns:
        The output, in the input's dtype, as the backend's array type.

    Raises:
        ValueError: wrong number of dimensions, channels that do not match the
            weight, groups that do not divide them, a kernel larger than the
            padded input, stride or dilation < 1, negative padding, an unknown
            padding_mode, reflect padding not smaller than the input.
        TypeError: non-integer sizes, non-floating or mismatched dtypes.

    Example:
        >>> import numpy as np
        >>> x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
        >>> k = np.array([[[[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]]])
        >>> conv2d(x, k, padding="same", flip=True)[0, 0].tolist()
        [[-13.0, -20.0, -17.0], [-18.0, -24.0, -18.0], [13.0, 20.0, 17.0]]
    """


def _conv(
    dims: int, input, weight, bias, stride, padding, dilation, groups, flip, backend, padding_mode="zeros"
):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip)
    if padding_mode != "zeros":
        attrs["padding_mode"] = padding_mode
    return call("conv", input, weight, bias, backend=backend, where=f"conv{dims}d", dims=dims, **attrs)


@doc(_FUNCTION_DOC, d=1)
def conv1d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    flip=False,
    padding_mode="zeros",
    *,
    backend=None,
):
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, flip, backend, padding_mode)


@doc(_FUNCTION_DOC, d=2)
def conv2d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    flip=False,
    padding_mode="zeros",
    *,
    backend=None,
):
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, flip, backend, padding_mode)


@doc(_FUNCTION_DOC, d=3)
def conv3d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    flip=False,
    padding_mode="zeros",
    *,
    backend=None,
):
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, flip, backend, padding_mode)


# -- the layers ------------------------------------------------------------------------------

_LAYER_DOC = """{d}-D convolution layer (cross-correlation by default): ``y = W ⋆ x + b``.

    ``y[n, k, i] = b[k] + Σ_c Σ_m W[k, c, m] · x_pad[n, g·C/G + c, S·i + D·m]``;
    ``flip=True`` rotates the kernel 180° (the lecture's true convolution).
    Backward (the lecture's formulas, run by the backend):
    ``dE/dW = x ⋆ δ``, ``dE/db = Σ δ``, ``dE/dx = δ ⋆_full rot180(W)``.

    Args:
        in_channels: ``C``, channels of the input.
        out_channels: ``K``, the number of filters.
        kernel_size: ``F``, an int or one per axis.
        stride: ``S``, an int or one per axis (default 1).
        padding: an int, one per axis, ``(before, after)`` pairs, ``"valid"`` or ``"same"``.
        dilation: ``D``, spacing of the kernel taps (default 1).
        groups: independent channel groups (``groups == C``: depthwise).
        bias: learn a bias per filter (default ``True``).
        padding_mode: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or ``"circular"``.
        flip: true convolution instead of cross-correlation (default ``False``).
        seed, rng: where the initial weights come from (a seed or a
            ``numpy.random.Generator``; both ``None``: fresh entropy).
        backend: the backend the parameters live on (default: the active one).

    Attributes:
        weight: ``Parameter`` of shape ``(K, C/groups, {kernel})``, ``U(±1/√fan_in)``
            with ``fan_in = C/groups · Π F``.
        bias: ``Parameter`` of shape ``(K,)``, ``U(±1/√fan_in)``, or ``None``.

    Shape:
        input ``(N, C, {axes})`` -> output ``(N, K, {out_axes})`` with, per axis,
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1``.

    Returns:
        ``forward(x)`` returns the output as the backend's array type.

    Raises:
        ValueError: sizes < 1, channels not divisible by ``groups``.
        TypeError: non-integer sizes.

    Example:
        >>> import numpy as np
        >>> layer = Conv{d}d(2, 4, 3, padding=1, seed=0)
        >>> layer(np.zeros((1, 2, {example}), dtype=np.float32)).shape
        (1, 4, {example})
    """


def _padding(padding: Any, dims: int, where: str) -> Any:
    """Padding kept as PyTorch keeps it (an int becomes one per axis; strings stay); checked early."""
    if isinstance(padding, str):
        if padding.lower() not in ("same", "valid"):
            raise ValueError(f"{where}: padding must be 'same', 'valid', ints or pairs, got {padding!r}")
        return padding.lower()
    if isinstance(padding, (list, tuple)) and padding and isinstance(padding[0], (list, tuple)):
        if len(padding) != dims:
            raise ValueError(f"{where}: padding needs one (before, after) pair per axis, got {padding!r}")
        return tuple(as_int_tuple(p, 2, "padding", where, minimum=0) for p in padding)
    return as_int_tuple(padding, dims, "padding", where, minimum=0)


class _ConvNd(Layer):
    dims = 0
    param_names = ("weight", "bias")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        flip: bool = False,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        backend: BackendArg = None,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        (self.in_channels,) = as_int_tuple(in_channels, 1, "in_channels", where)
        (self.out_channels,) = as_int_tuple(out_channels, 1, "out_channels", where)
        (self.groups,) = as_int_tuple(groups, 1, "groups", where)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{where}: groups={self.groups} must divide in_channels ({self.in_channels}) "
                f"and out_channels ({self.out_channels})"
            )
        self.kernel_size = as_int_tuple(kernel_size, self.dims, "kernel_size", where)
        self.stride = as_int_tuple(stride, self.dims, "stride", where)
        self.padding = _padding(padding, self.dims, where)
        self.dilation = as_int_tuple(dilation, self.dims, "dilation", where)
        self.has_bias = as_bool(bias, "bias", where)
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"{where}: padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        self.flip = as_bool(flip, "flip", where)
        self.init_parameters(seed=seed, rng=rng, backend=backend)

    def param_specs(self):
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        return {
            "weight": ParamSpec(shape, fan_in, "kaiming_uniform"),
            "bias": ParamSpec((self.out_channels,), fan_in) if self.has_bias else None,
        }

    def function(self, x, weight, bias):
        attrs = (self.stride, self.padding, self.dilation, self.groups, self.flip)
        return _conv(self.dims, x, weight, bias, *attrs, None, self.padding_mode)

    def config(self):
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "bias": self.has_bias,
            "padding_mode": self.padding_mode,
            "flip": self.flip,
        }

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if not self.has_bias:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.flip:
            s += ", flip=True"
        return s

    def window(self):
        return window_of(self.kernel_size, self.stride, self.padding, self.dilation)


@doc(_LAYER_DOC, d=1, example="4")
class Conv1d(_ConvNd):
    dims = 1


@doc(_LAYER_DOC, d=2, example="4, 4")
class Conv2d(_ConvNd):
    dims = 2


@doc(_LAYER_DOC, d=3, example="4, 4, 4")
class Conv3d(_ConvNd):
    dims = 3


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.layers` show of this family.
FUNCTIONS = (conv1d, conv2d, conv3d)
LAYERS = (Conv1d, Conv2d, Conv3d)
#: The family's op records.
SPECS = (ConvSpec(),)


# == conv_transpose: the record (issue 10a) ===================================================

_TRAND = Seeds(5000)
_T_LAYOUT = {1: (5,), 2: (4, 3), 3: (3, 3, 2)}


def _t_case(
    d: int,
    *,
    c: int = 2,
    k: int = 3,
    f: int | tuple = 3,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    bias: bool = True,
    n: int = 2,
    spatial: tuple[int, ...] | None = None,
    extra: str = "",
) -> Case:
    """A seeded ``conv_transpose{d}d`` case: input ``(n, c, *spatial)``, weight ``(c, k/groups, *f)``."""
    spatial = spatial or _T_LAYOUT[d]
    kernel = (f,) * d if isinstance(f, int) else f
    parts = [f"conv_transpose{d}d"]
    if extra:
        parts.append(extra)
    attrs: dict[str, Any] = {}
    for key, value, default, tag in (
        ("stride", stride, 1, "stride"),
        ("padding", padding, 0, ""),
        ("output_padding", output_padding, 0, "outpad"),
        ("dilation", dilation, 1, "dil"),
        ("groups", groups, 1, "groups"),
    ):
        if value != default:
            attrs[key] = value
            if key == "padding":
                parts.append(pad_id(value))
            else:
                parts.append(tag + ("x".join(map(str, value)) if isinstance(value, tuple) else str(value)))
    if not bias:
        parts.append("nobias")
    attrs["dims"] = d
    inputs = (_TRAND(n, c, *spatial), _TRAND(c, k // groups, *kernel), _TRAND(k) if bias else None)
    return Case("-".join(parts), "conv_transpose", inputs, attrs, tags=("conv_transpose", f"{d}d"))


def _t_random_cases() -> Iterator[Case]:
    """Transposed convolution in 1-3 D: strides, (before, after) pairs, output_padding, dilation, groups."""
    for d in (1, 2, 3):
        yield _t_case(d)
        yield _t_case(d, stride=2)
        yield _t_case(d, stride=2, padding=1, output_padding=1)
        yield _t_case(d, stride=per_axis(d, (3, 2)), padding=per_axis(d, ((1, 0), (0, 2))), extra="pairs")
        yield _t_case(d, dilation=2, padding=per_axis(d, (2, 1)))
        yield _t_case(d, stride=2, dilation=2, output_padding=per_axis(d, (1, 0)))
        yield _t_case(d, c=4, k=4, groups=2, stride=2, padding=1, bias=False)
        yield _t_case(d, c=4, k=6, f=per_axis(d, (2, 3, 1)), groups=2, extra="rect")
    # output_padding below the dilation but not the stride (torch allows it)
    yield _t_case(1, stride=1, dilation=3, output_padding=2, extra="outpad-dil")
    # a depthwise transposed conv (groups == channels) and more channels than taps
    yield _t_case(2, c=4, k=4, groups=4, stride=2, extra="depthwise")
    yield _t_case(2, c=9, k=2, f=2, stride=2, n=1, extra="manychannels")


def _t_goldens() -> Iterator[Case]:
    """Hand-computed: each input unit stamps the kernel at ``S·i``, overlaps add."""
    yield Case(
        "conv_transpose1d-golden-stamp-stride2",
        "conv_transpose",
        ([[[1.0, 2.0]]], [[[1.0, 10.0, 100.0]]], None),
        {"stride": 2, "dims": 1},
        expected=[[[1.0, 10.0, 102.0, 20.0, 200.0]]],
        tags=("golden", "conv_transpose"),
    )
    yield Case(
        "conv_transpose1d-golden-stamp-pad-outpad",
        "conv_transpose",
        ([[[1.0, 2.0]]], [[[1.0, 10.0, 100.0]]], [0.5]),
        {"stride": 2, "padding": 1, "output_padding": 1, "dims": 1},
        expected=[[[10.5, 102.5, 20.5, 200.5]]],
        tags=("golden", "conv_transpose"),
    )


def _t_error_cases() -> Iterator[Case]:
    x, w = _TRAND(1, 2, 4, 4), _TRAND(2, 3, 3, 3)
    yield from error_cases(
        [
            (
                "conv_transpose-error-output-padding-too-large",
                "conv_transpose",
                (x, w, None),
                {"stride": 2, "output_padding": 2},
                ValueError,
                "output_padding",
            ),
            (
                "conv_transpose-error-output-padding-stride1",
                "conv_transpose",
                (x, w, None),
                {"output_padding": 1},
                ValueError,
                "output_padding must be smaller than either stride or dilation",
            ),
            (
                "conv_transpose-error-channel-mismatch",
                "conv_transpose",
                (x, _TRAND(3, 3, 3, 3), None),
                {},
                ValueError,
                "weight has 3 input channels but input has 2",
            ),
            (
                "conv_transpose-error-groups-not-dividing",
                "conv_transpose",
                (_TRAND(1, 3, 4, 4), _TRAND(3, 1, 3, 3), None),
                {"groups": 2},
                ValueError,
                "groups=2 does not divide",
            ),
            (
                "conv_transpose-error-bias-shape",
                "conv_transpose",
                (x, w, _TRAND(2)),
                {},
                ValueError,
                "bias must have shape",
            ),
            (
                "conv_transpose-error-empty-output",
                "conv_transpose",
                (_TRAND(1, 2, 1, 1), w, None),
                {"padding": 2},
                ValueError,
                "padding",
            ),
            (
                "conv_transpose-error-string-padding",
                "conv_transpose",
                (x, w, None),
                {"padding": "same"},
                TypeError,
                "padding",
            ),
            (
                "conv_transpose-error-wrong-ndim",
                "conv_transpose",
                (_TRAND(2, 4, 4), w, None),
                {"dims": 2},
                ValueError,
                "input must have 4",
            ),
            (
                "conv_transpose-error-stride0",
                "conv_transpose",
                (x, w, None),
                {"stride": 0},
                ValueError,
                "stride",
            ),
        ]
    )


@functools.cache
def _t_all_cases() -> tuple[Case, ...]:
    return (*_t_goldens(), *_t_random_cases(), *_t_error_cases())


def _t_output_size(n: int, f: int, s: int, p: tuple[int, int], d: int, op: int) -> int:
    """``O = (N - 1)·S - P_before - P_after + D·(F - 1) + output_padding + 1``."""
    return (n - 1) * s - p[0] - p[1] + d * (f - 1) + op + 1


def _t_oracle(x, w, b, *, stride, padding, output_padding, dilation, groups):
    """The definition: input unit ``i`` stamps ``W[c_in, :, m]`` at ``S·i + D·m - P_before``."""
    d = x.ndim - 2
    n, c = x.shape[:2]
    kg, kernel = w.shape[1], w.shape[2:]
    full = [
        (ni - 1) * s + dl * (f - 1) + 1 + op
        for ni, s, dl, f, op in zip(x.shape[2:], stride, dilation, kernel, output_padding)
    ]
    y = np.zeros((n, groups, kg, *full))
    xg = x.reshape(n, groups, c // groups, *x.shape[2:])
    wg = w.reshape(groups, c // groups, kg, *kernel)
    sp = string.ascii_lowercase[-d:]
    for m in np.ndindex(*kernel):
        contrib = np.einsum(f"ngc{sp},gck->ngk{sp}", xg, wg[(Ellipsis, *m)])
        index = tuple(
            slice(dl * mi, dl * mi + s * (ni - 1) + 1, s)
            for mi, s, dl, ni in zip(m, stride, dilation, x.shape[2:])
        )
        y[(slice(None), slice(None), slice(None), *index)] += contrib
    crop = tuple(slice(lo, size - hi) for size, (lo, hi) in zip(full, padding))
    y = y[(Ellipsis, *crop)].reshape(
        n, groups * kg, *(size - lo - hi for size, (lo, hi) in zip(full, padding))
    )
    if b is not None:
        y = y + b.reshape(-1, *([1] * d))
    return y


def _conv_attrs(canonical: dict) -> dict:
    return {k: canonical[k] for k in ("stride", "padding", "dilation", "groups")}


def _duality_input_grad(run) -> None:
    """conv_transpose(y, W) is the input gradient of conv(x, W) at δ = y (the lecture's duality)."""
    if not run.has("conv"):
        raise PropertySkip("the backend has no conv")
    from cnnkit.dispatch import vjp

    y, w, _ = run.inputs
    _, canonical = run.canonical()
    if any(op >= s for op, s in zip(canonical["output_padding"], canonical["stride"])):
        raise PropertySkip("output_padding >= stride: the conv of that size has more outputs than y")
    want = run.run([y, w, None])  # (N, C_out, *O)
    x = np.zeros((y.shape[0], w.shape[1] * canonical["groups"], *want.shape[2:]), dtype=run.dtype)
    out, pullback = vjp("conv", x, w, None, backend=run.backend, **_conv_attrs(canonical))
    if tuple(out.shape) != tuple(y.shape):
        raise run.fail(f"conv of the transposed output has shape {tuple(out.shape)}, want {y.shape}")
    dx = pullback(y)[0]
    run.compare("property: conv_transpose(y, W) == d conv(x, W)/dx at δ = y", run.numpy(dx), want)


def _duality_inner_product(run) -> None:
    """<conv(x, W), y> = <x, conv_transpose(y, W)>: the two ops are adjoint."""
    if not run.has("conv"):
        raise PropertySkip("the backend has no conv")
    y, w, _ = run.inputs
    _, canonical = run.canonical()
    if any(op >= s for op, s in zip(canonical["output_padding"], canonical["stride"])):
        raise PropertySkip("output_padding >= stride: the conv of that size has more outputs than y")
    t = run.run([y, w, None])
    x = run.rng("x").uniform(-1, 1, size=t.shape).astype(run.dtype)
    a = run.numpy(call("conv", x, w, None, backend=run.backend, **_conv_attrs(canonical)))
    lhs = np.asarray(float(np.sum(a * y.astype(np.float64))))
    rhs = np.asarray(float(np.sum(x.astype(np.float64) * t)))
    run.compare("property: <conv(x, W), y> == <x, conv_transpose(y, W)>", lhs, rhs)


def _t_linearity(run) -> None:
    y1, w, _ = run.inputs
    y2 = run.rng("y2").uniform(-1, 1, size=y1.shape).astype(run.dtype)
    lhs = run.run([0.75 * y1 - 1.25 * y2, w, None])
    rhs = 0.75 * run.run([y1, w, None]) - 1.25 * run.run([y2, w, None])
    what = "property: conv_transpose(a·y1 + b·y2, W) == a·conv_transpose(y1, W) + b·conv_transpose(y2, W)"
    run.compare(what, lhs, rhs)


class ConvTransposeSpec(OpSpec):
    """Transposed convolution in 1, 2 or 3 spatial dimensions: the conv's input gradient.

    Forward: every input unit ``y[n, c, i]`` stamps its filter, ``S`` apart,
    taps ``D`` apart, overlapping stamps adding up, the first ``P_before`` and
    last ``P_after`` units cropped::

        a[n, g·K/G + k, S·i + D·m - P_before] += Σ_c y[n, g·C/G + c, i] · W[g·C/G + c, k, m]  (+ b[k])

    The lecture's duality: this is exactly ``δ_prev = δ ⋆_full rot180(W)`` of
    ``conv(x, W)`` (same stride, padding, dilation, groups) evaluated at
    ``δ = y``, so ``<conv(x, W), y> = <x, conv_transpose(y, W)>``.

    Backward (the conv's forward and its weight gradient)::

        δ_prev = conv(δ, W)                   (stride S, padding P, dilation D, groups G; cropped to y)
        dE/dW[c, k, m] = Σ_n Σ_i y[n, c, i] · δ_pad[n, k, S·i + D·m]      (δ ⋆ y, as conv's dE/dW)
        dE/db[k] = Σ_n Σ_j δ[n, k, j]

    Shape: input ``(N, C_in, *spatial)``, weight ``(C_in, C_out/groups, *F)``,
    bias ``(C_out,)`` -> ``(N, C_out, *O)`` with
    ``O = (N - 1)·S - P_before - P_after + D·(F - 1) + output_padding + 1``.

    Canonical attributes: ``stride, output_padding, dilation: (d,) ints``,
    ``padding: (d,) (before, after)``, ``groups: int``.
    """

    name = "conv_transpose"
    inputs = ("input", "weight", "bias")
    optional = frozenset({"bias"})
    defaults: Mapping[str, Any] = {
        "stride": 1,
        "padding": 0,
        "output_padding": 0,
        "groups": 1,
        "dilation": 1,
        "dims": None,
    }

    def check(self, where, infos, attrs):
        x, w, b = infos
        dims = spatial_dims(where, attrs, x)
        check_ndim(where, "input", x, dims + 2, layout(dims))
        check_ndim(where, "weight", w, dims + 2, layout(dims, "C_in, C_out/groups"))
        check_spatial_nonempty(where, x)
        stride = as_int_tuple(attrs["stride"], dims, "stride", where)
        dilation = as_int_tuple(attrs["dilation"], dims, "dilation", where)
        output_padding = as_int_tuple(attrs["output_padding"], dims, "output_padding", where, minimum=0)
        if isinstance(attrs["padding"], str):
            raise TypeError(
                f"{where}: padding must be ints or (before, after) pairs, got {attrs['padding']!r} "
                "(a transposed conv has no 'same' or 'valid')"
            )
        padding = geometry.resolve_padding(
            attrs["padding"], w.shape[2:], stride, dilation, x.shape[2:], where=where
        )
        groups = attrs["groups"]
        if not _is_int(groups):
            raise TypeError(f"{where}: groups must be an int, got {groups!r}")
        if groups < 1:
            raise ValueError(f"{where}: groups must be >= 1, got {groups}")
        c = x.shape[1]
        cw, kg = w.shape[:2]
        kernel = w.shape[2:]
        if c % groups:
            raise ValueError(
                f"{where}: groups={groups} does not divide the {c} input channels (input {x.shape})"
            )
        if cw != c:
            raise ValueError(
                f"{where}: weight has {cw} input channels but input has {c} "
                f"(input {x.shape}, weight {w.shape}; weight is (C_in, C_out/groups, *kernel))"
            )
        if kg < 1 or min(kernel) < 1:
            raise ValueError(f"{where}: weight has no output channels or an empty kernel (weight {w.shape})")
        if b is not None and b.shape != (kg * groups,):
            raise ValueError(
                f"{where}: bias must have shape ({kg * groups},), one per output channel, got {b.shape} "
                f"(weight {w.shape}, groups {groups})"
            )
        for axis, (op, s, dl) in enumerate(zip(output_padding, stride, dilation)):
            if op >= max(s, dl):
                raise ValueError(
                    f"{where}: output_padding must be smaller than either stride or dilation, got "
                    f"output_padding {op} with stride {s} and dilation {dl} on spatial axis {axis}"
                )
        for axis, (n, f, s, p, dl, op) in enumerate(
            zip(x.shape[2:], kernel, stride, padding, dilation, output_padding)
        ):
            if _t_output_size(n, f, s, p, dl, op) < 1:
                raise ValueError(
                    f"{where}: padding {p} crops the whole output along spatial axis {axis} "
                    f"(uncropped length {_t_output_size(n, f, s, (0, 0), dl, op)}; "
                    f"input {x.shape}, weight {w.shape})"
                )
        return {
            "stride": stride,
            "padding": padding,
            "output_padding": output_padding,
            "dilation": dilation,
            "groups": groups,
        }

    def output_shape(self, infos, attrs):
        x, w, _ = infos
        spatial = tuple(
            _t_output_size(n, f, s, p, d, op)
            for n, f, s, p, d, op in zip(
                x.shape[2:],
                w.shape[2:],
                attrs["stride"],
                attrs["padding"],
                attrs["dilation"],
                attrs["output_padding"],
            )
        )
        return (x.shape[0], w.shape[1] * attrs["groups"], *spatial)

    def cases(self):
        return _t_all_cases()

    def oracle(self, x, w, b, **attrs):
        return _t_oracle(x, w, b, **attrs)

    properties = (_duality_input_grad, _duality_inner_product, _t_linearity, nan_propagates)


# -- conv_transpose: the functions ----------------------------------------------------------

_T_FUNCTION_DOC = """{d}-D transposed convolution of ``input`` with ``weight``: the conv's input gradient.

    Each input unit stamps its filter ``S`` apart (taps ``D`` apart), stamps
    add up, ``padding`` crops the ends and ``output_padding`` adds units at the
    end: ``out = conv_transpose(y, W)`` equals ``d conv(x, W)/dx`` at ``δ = y``.

    Args:
        input: ``(N, C_in, {axes})``.
        weight: ``(C_in, C_out/groups, {kernel})``.
        bias: ``(C_out,)`` or ``None``.
        stride: ``S``, an int or one per axis, >= 1.
        padding: an int, one int per axis, or one ``(before, after)`` pair per
            axis: units cropped from each end of the output.
        output_padding: units added at the end of each axis, smaller than
            the stride or the dilation.
        groups: independent channel groups.
        dilation: ``D``, spacing of the kernel taps, >= 1.
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(N, C_out, {out_axes})`` with, per axis,
        ``O = (N - 1)·S - P_before - P_after + D·(F - 1) + output_padding + 1``.

    Returns:
        The output, in the input's dtype, as the backend's array type.

    Raises:
        ValueError: wrong number of dimensions, channels that do not match the
            weight, groups that do not divide them, output_padding not smaller
            than the stride or the dilation, padding that crops everything.
        TypeError: non-integer sizes, string padding, non-floating or mismatched dtypes.

    Example:
        >>> import numpy as np
        >>> y, w = np.array([[[1.0, 2.0]]]), np.array([[[1.0, 10.0, 100.0]]])
        >>> conv_transpose1d(y, w, stride=2).tolist()
        [[[1.0, 10.0, 102.0, 20.0, 200.0]]]
    """


def _conv_transpose(dims, input, weight, bias, stride, padding, output_padding, groups, dilation, backend):
    attrs = dict(
        stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation
    )
    return call(
        "conv_transpose",
        input,
        weight,
        bias,
        backend=backend,
        where=f"conv_transpose{dims}d",
        dims=dims,
        **attrs,
    )


@doc(_T_FUNCTION_DOC, d=1)
def conv_transpose1d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, backend=None
):
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation, backend)


@doc(_T_FUNCTION_DOC, d=2)
def conv_transpose2d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, backend=None
):
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation, backend)


@doc(_T_FUNCTION_DOC, d=3)
def conv_transpose3d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, backend=None
):
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation, backend)


# -- conv_transpose: the layers -------------------------------------------------------------

_T_LAYER_DOC = """{d}-D transposed convolution layer: the conv's input gradient, with learnt ``W`` and ``b``.

    ``y[n, g·K/G + k, S·i + D·m - P_before] += Σ_c x[n, g·C/G + c, i] · W[g·C/G + c, k, m]`` (+ ``b``).
    Backward: ``dE/dx = conv(δ, W)``, ``dE/dW = x ⋆ δ`` (as conv's weight gradient), ``dE/db = Σ δ``.

    Args:
        in_channels: ``C_in``, channels of the input.
        out_channels: ``C_out``, channels of the output.
        kernel_size: ``F``, an int or one per axis.
        stride: ``S`` (default 1).
        padding: an int, one per axis or ``(before, after)`` pairs, cropped from the output.
        output_padding: units added at the end of each output axis (default 0).
        groups: independent channel groups (default 1).
        bias: learn a bias per output channel (default ``True``).
        dilation: ``D``, spacing of the kernel taps (default 1).
        seed, rng: where the initial weights come from.
        backend: the backend the parameters live on (default: the active one).

    Attributes:
        weight: ``Parameter`` of shape ``(C_in, C_out/groups, {kernel})``, ``U(±1/√fan_in)``
            with torch's ``fan_in = C_out/groups · Π F`` (``weight.size(1)`` times the kernel).
        bias: ``Parameter`` of shape ``(C_out,)``, ``U(±1/√fan_in)``, or ``None``.

    Shape:
        input ``(N, C_in, {axes})`` -> output ``(N, C_out, {out_axes})`` with, per axis,
        ``O = (N - 1)·S - P_before - P_after + D·(F - 1) + output_padding + 1``.

    Returns:
        ``forward(x)`` returns the output as the backend's array type.

    Raises:
        ValueError: sizes < 1, channels not divisible by ``groups``,
            output_padding not smaller than stride or dilation.
        TypeError: non-integer sizes.

    Example:
        >>> import numpy as np
        >>> layer = ConvTranspose{d}d(2, 4, 3, stride=2, padding=1, output_padding=1, seed=0)
        >>> layer(np.zeros((1, 2, {example}), dtype=np.float32)).shape
        (1, 4, {out})
    """


class _ConvTransposeNd(Layer):
    dims = 0
    param_names = ("weight", "bias")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        backend: BackendArg = None,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        (self.in_channels,) = as_int_tuple(in_channels, 1, "in_channels", where)
        (self.out_channels,) = as_int_tuple(out_channels, 1, "out_channels", where)
        (self.groups,) = as_int_tuple(groups, 1, "groups", where)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{where}: groups={self.groups} must divide in_channels ({self.in_channels}) "
                f"and out_channels ({self.out_channels})"
            )
        self.kernel_size = as_int_tuple(kernel_size, self.dims, "kernel_size", where)
        self.stride = as_int_tuple(stride, self.dims, "stride", where)
        if isinstance(padding, str):
            raise ValueError(f"{where}: padding must be ints or (before, after) pairs, got {padding!r}")
        self.padding = _padding(padding, self.dims, where)
        self.output_padding = as_int_tuple(output_padding, self.dims, "output_padding", where, minimum=0)
        self.dilation = as_int_tuple(dilation, self.dims, "dilation", where)
        for op, s, dl in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, dl):
                raise ValueError(
                    f"{where}: output_padding must be smaller than either stride or dilation, got "
                    f"output_padding {self.output_padding}, stride {self.stride}, dilation {self.dilation}"
                )
        self.has_bias = as_bool(bias, "bias", where)
        self.init_parameters(seed=seed, rng=rng, backend=backend)

    def param_specs(self):
        # torch's _calculate_fan_in_and_fan_out on (C_in, C_out/G, *F): fan_in = size(1) · Π F
        fan_in = self.out_channels // self.groups * math.prod(self.kernel_size)
        shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        return {
            "weight": ParamSpec(shape, fan_in, "kaiming_uniform"),
            "bias": ParamSpec((self.out_channels,), fan_in) if self.has_bias else None,
        }

    def function(self, x, weight, bias):
        attrs = (self.stride, self.padding, self.output_padding, self.groups, self.dilation)
        return _conv_transpose(self.dims, x, weight, bias, *attrs, None)

    def config(self):
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "output_padding": self.output_padding,
            "groups": self.groups,
            "bias": self.has_bias,
            "dilation": self.dilation,
        }

    def extra_repr(self):
        # torch's ConvTransposeNd repr, field for field
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self.dims:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if not self.has_bias:
            s += ", bias=False"
        return s

    def window(self):
        return ()  # an output unit's inputs are not one window of the input: no receptive field


@doc(_T_LAYER_DOC, d=1, example="4", out="8")
class ConvTranspose1d(_ConvTransposeNd):
    dims = 1


@doc(_T_LAYER_DOC, d=2, example="4, 4", out="8, 8")
class ConvTranspose2d(_ConvTransposeNd):
    dims = 2


@doc(_T_LAYER_DOC, d=3, example="4, 4, 4", out="8, 8, 8")
class ConvTranspose3d(_ConvTransposeNd):
    dims = 3


FUNCTIONS = (*FUNCTIONS, conv_transpose1d, conv_transpose2d, conv_transpose3d)
LAYERS = (*LAYERS, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)
SPECS = (*SPECS, ConvTransposeSpec())
__all__ += [
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "ConvTransposeSpec",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
]
