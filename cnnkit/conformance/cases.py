"""Conformance cases as data, and the hook that registers them.

A :class:`Case` names an op, its inputs (literal arrays or seeded
:class:`Random` specs), its attributes as a user writes them and, where known,
its golden output. The suite runs every case against every backend that
implements the op (see :mod:`cnnkit.conformance.runner`). The built-in cases
are built below, one family per function, and registered through
:func:`cnnkit.hookspecs.cnnkit_conformance_cases` exactly as a plugin's are.

Rebuild any case by its id::

    from cnnkit.conformance import get_case
    case = get_case("conv2d-stride2-pad1")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.hookspecs import hookimpl

__all__ = ["BUILTIN_CASES", "Case", "Random"]


@dataclass(frozen=True)
class Random:
    """An input drawn from a seeded generator: ``uniform(low, high)`` floats, or ints in ``[low, high)``.

    Attributes:
        shape: the array's shape.
        seed: the generator's seed; the same seed gives the same array everywhere.
        low, high: the range of the values.
        integer: draw int64 class indices instead of floats.
        dtype: a fixed dtype that the suite's float32/float64 sweep does not
            change (for error cases that need mismatched dtypes).
    """

    shape: tuple[int, ...]
    seed: int = 0
    low: float = -1.0
    high: float = 1.0
    integer: bool = False
    dtype: str | None = None

    def make(self, dtype: str = "float64") -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        if self.integer:
            return rng.integers(int(self.low), int(self.high), size=self.shape, dtype=np.int64)
        return rng.uniform(self.low, self.high, size=self.shape).astype(self.dtype or dtype)


@dataclass(frozen=True)
class Case:
    """One conformance case.

    Attributes:
        id: a readable id, e.g. ``conv2d-stride2-pad1-groups2``.
        op: the op kind the case exercises.
        inputs: one entry per op input: a literal array (nested lists are fine),
            a :class:`Random`, or ``None`` for an absent optional input.
            Floating literals follow the suite's dtype; integer NumPy arrays
            keep theirs.
        attrs: the attributes, in the form a user passes them.
        expected: the golden output, where it is known.
        raises: for error-contract cases, the exception type every backend must raise.
        tags: free-form labels used for selection (``"golden"``, ``"lecture"``, ...).
        match: for error cases, a regular expression the message must contain.
        grad_output: the output gradient the backward check feeds (a literal);
            ``None`` draws a seeded random one.
        expected_grads: golden input gradients for ``grad_output``, one per
            input (``None`` where unknown or absent).
        differentiable: ``False`` where the inputs sit on a kink or a tie, so
            finite differences mean nothing; the backward check then compares
            with ``expected_grads`` and the reference backend only.
    """

    id: str
    op: str
    inputs: tuple[Any, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    expected: Any = None
    raises: type[BaseException] | None = None
    tags: tuple[str, ...] = ()
    match: str | None = None
    grad_output: Any = None
    expected_grads: tuple[Any, ...] | None = None
    differentiable: bool = True

    @property
    def rebuild(self) -> str:
        """One line of Python that rebuilds this case."""
        return f'from cnnkit.conformance import get_case; case = get_case("{self.id}")'


# -- helpers --------------------------------------------------------------------------------

_LAYOUT = {1: (9,), 2: (7, 6), 3: (5, 4, 4)}
_SEED = iter(range(1000, 100000))


def _rand(*shape: int, low: float = -1.0, high: float = 1.0) -> Random:
    return Random(tuple(shape), seed=next(_SEED), low=low, high=high)


def _pad_id(padding: Any) -> str:
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return f"pad{padding}"
    parts = []
    for p in padding:
        parts.append(f"{p[0]}{p[1]}" if isinstance(p, tuple) else str(p))
    return "pad" + "x".join(parts)


def _per_axis(d: int, values: tuple) -> tuple:
    return tuple(values[i % len(values)] for i in range(d))


# -- convolution ----------------------------------------------------------------------------


def _conv(
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
    spatial = spatial or _LAYOUT[d]
    kernel = (f,) * d if isinstance(f, int) else f
    parts = [f"conv{d}d"]
    if extra:
        parts.append(extra)
    if stride != 1:
        parts.append(f"stride{stride}" if isinstance(stride, int) else "stride" + "x".join(map(str, stride)))
    if padding != 0:
        parts.append(_pad_id(padding))
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
    inputs = (_rand(n, c, *spatial), _rand(k, c // groups, *kernel), _rand(k) if bias else None)
    return Case("-".join(parts), "conv", inputs, attrs, tags=("conv", f"{d}d"))


def conv_cases() -> Iterator[Case]:
    """Convolution in 1-3 D: stride x padding forms, dilation, groups, bias, flip, kernel shapes."""
    for d in (1, 2, 3):
        pair_pad = _per_axis(d, ((0, 1), (2, 1), (1, 0)))
        tuple_pad = _per_axis(d, (2, 0, 1))
        for stride in (1, 2, 3):
            for padding in (0, 1, tuple_pad, "valid", "same", pair_pad):
                yield _conv(d, stride=stride, padding=padding)
        # "same" with an even kernel: an odd total, the extra unit after (SAME_UPPER)
        for stride in (1, 2, 3):
            yield _conv(d, f=2, stride=stride, padding="same", extra="k2")
        yield _conv(d, f=1, extra="k1")
        big = {"n": 1, "spatial": (5, 5, 5)} if d == 3 else {}
        for stride in (1, 2):
            for padding in (0, "same"):
                yield _conv(d, dilation=2, stride=stride, padding=padding, **big)
        yield _conv(d, dilation=_per_axis(d, (1, 2)), padding=1, extra="mixdil")
        for groups, c, k in ((2, 4, 4), (4, 4, 4), (4, 4, 8)):
            for stride in (1, 2):
                yield _conv(
                    d, c=c, k=k, groups=groups, stride=stride, padding=1, extra="" if k == c else f"k{k}"
                )
        yield _conv(d, c=4, k=4, groups=2, bias=False)
        for padding in (0, "same", pair_pad):
            yield _conv(d, flip=True, padding=padding)
        yield _conv(d, flip=True, stride=2, groups=2, c=4, k=4, padding=1)
        yield _conv(d, bias=False)
        yield _conv(d, bias=False, stride=2, padding="same")
        yield _conv(d, f=_per_axis(d, (3, 2, 1)), stride=_per_axis(d, (2, 1)), padding=1, extra="rect")
        yield _conv(d, n=1, c=1, k=1, extra="single")
    # a kernel as large as the input: one output unit
    yield _conv(2, f=(7, 6), extra="fullkernel")
    yield _conv(2, f=3, padding=((2, 2), (2, 2)), extra="full")


def conv_goldens() -> Iterator[Case]:
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
    # hand-computed: a 1-D true convolution is the polynomial product
    yield Case(
        "conv1d-golden-polyproduct-flip-full",
        "conv",
        ([[[1.0, 2, 3]]], [[[1.0, 1]]], None),
        {"padding": 1, "flip": True, "dims": 1},
        expected=[[[1.0, 3, 5, 3]]],
        tags=("golden", "conv"),
    )


# -- pooling ----------------------------------------------------------------------------------

_POOL_LAYOUT = {1: (2, 2, 9), 2: (2, 2, 7, 6), 3: (1, 2, 5, 5, 4)}
_LP_LOW = {0.5: 0.25, 1.0: 0.25}  # p <= 1: keep |x| away from the kink at 0


def _pool(
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
    shape = shape or _POOL_LAYOUT[d]
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
        parts.append(_pad_id(padding))
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
    return Case("-".join(parts), op, (_rand(*shape, low=low, high=1.5),), attrs, tags=("pool", f"{d}d"))


def pool_cases() -> Iterator[Case]:
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
                                yield _pool(
                                    op,
                                    d,
                                    kernel=kernel,
                                    stride=stride,
                                    padding=padding,
                                    ceil_mode=ceil,
                                    extra=extra,
                                )
                yield _pool(op, d, kernel=2, stride=1, dilation=2, extra=extra)
                yield _pool(op, d, kernel=3, stride=2, dilation=2, padding=1, ceil_mode=True, extra=extra)
                yield _pool(
                    op,
                    d,
                    kernel=_per_axis(d, (3, 2)),
                    stride=_per_axis(d, (2, 1)),
                    padding=_per_axis(d, ((1, 0), (0, 1))),
                    extra=extra,
                )
                yield _pool(op, d, kernel=3, stride=2, padding="same", extra=extra)
    for d in (1, 2, 3):
        for padding in (1, _per_axis(d, ((0, 1), (1, 1)))):
            for ceil in (False, True):
                yield _pool(
                    "avg_pool",
                    d,
                    kernel=3,
                    stride=2,
                    padding=padding,
                    ceil_mode=ceil,
                    extra={"count_include_pad": False},
                )
        yield _pool(
            "avg_pool",
            d,
            kernel=2,
            stride=2,
            ceil_mode=True,
            extra={"count_include_pad": False},
            shape=_POOL_LAYOUT[d][:2] + (5,) * d,
        )
        for p in (1, 3, 0.5):
            for kernel, stride, padding, ceil in ((2, None, 0, False), (3, 2, 1, True)):
                yield _pool(
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
        spatial = _POOL_LAYOUT[d][2:]
        for op, extra in (("max_pool", {}), ("avg_pool", {}), ("lp_pool", {"norm_type": 2})):
            case = _pool(op, d, kernel=spatial, extra=extra)
            name = f"{op.split('_')[0]}_pool{d}d-global" + ("-p2" if extra else "")
            yield Case(name, op, case.inputs, case.attrs, tags=(*case.tags, "global"))


def pool_goldens() -> Iterator[Case]:
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


# -- activations, flatten, linear, cross-entropy -----------------------------------------------


def dense_cases() -> Iterator[Case]:
    """Activations, flatten, linear (2-D and 3-D inputs) and softmax cross-entropy."""
    for op, attrs_list in (
        ("relu", [{}]),
        ("leaky_relu", [{}, {"negative_slope": 0.2}]),
        ("sigmoid", [{}]),
        ("tanh", [{}]),
    ):
        for attrs in attrs_list:
            slope = f"-slope{attrs['negative_slope']:g}" if attrs else ""
            for shape in ((7,), (2, 3), (2, 3, 4, 5)):
                sid = "x".join(map(str, shape))
                yield Case(
                    f"{op}{slope}-{sid}", op, (_rand(*shape, low=-3, high=3),), attrs, tags=("activation",)
                )
    yield Case(
        "relu-golden", "relu", ([-1.0, 0.5, 2.0],), expected=[0.0, 0.5, 2.0], tags=("golden", "activation")
    )
    yield Case(
        "relu-at-zero",
        "relu",
        ([-1.0, 0.0, 2.0],),
        expected=[0.0, 0.0, 2.0],
        grad_output=[1.0, 1.0, 1.0],
        expected_grads=([0.0, 0.0, 1.0],),
        differentiable=False,
        tags=("golden", "activation", "tie"),
    )
    yield Case(
        "sigmoid-golden",
        "sigmoid",
        ([0.0, 1000.0, -1000.0],),
        expected=[0.5, 1.0, 0.0],
        tags=("golden", "activation"),
    )
    yield Case("tanh-golden", "tanh", ([0.0, 50.0],), expected=[0.0, 1.0], tags=("golden", "activation"))
    yield Case(
        "leaky_relu-golden",
        "leaky_relu",
        ([-2.0, 3.0],),
        {"negative_slope": 0.5},
        expected=[-1.0, 3.0],
        tags=("golden", "activation"),
    )

    for start, end in ((1, -1), (0, -1), (1, 2), (2, 3), (0, 0), (-3, -2), (3, 3)):
        yield Case(
            f"flatten-start{start}-end{end}",
            "flatten",
            (_rand(2, 3, 4, 5),),
            {"start_dim": start, "end_dim": end},
            tags=("flatten",),
        )
    yield Case("flatten-2d", "flatten", (_rand(3, 4),), tags=("flatten",))
    yield Case(
        "flatten-1d",
        "flatten",
        (
            _rand(
                6,
            ),
        ),
        {"start_dim": 0},
        tags=("flatten",),
    )

    for shape in ((3, 5), (2, 3, 5), (5,), (2, 2, 2, 5)):
        sid = "x".join(map(str, shape))
        for bias in (True, False):
            yield Case(
                f"linear-{sid}{'' if bias else '-nobias'}",
                "linear",
                (_rand(*shape), _rand(4, 5), _rand(4) if bias else None),
                tags=("linear",),
            )
    yield Case(
        "linear-golden",
        "linear",
        ([[1.0, 2, 3]], [[1.0, 0, -1], [2, 2, 2]], [0.5, -1.0]),
        expected=[[-1.5, 11.0]],
        tags=("golden", "linear"),
    )

    for reduction in ("mean", "sum", "none"):
        for n, c in ((4, 5), (1, 3), (6, 2)):
            yield Case(
                f"cross_entropy-{reduction}-{n}x{c}",
                "cross_entropy",
                (_rand(n, c, low=-3, high=3), Random((n,), seed=next(_SEED), low=0, high=c, integer=True)),
                {"reduction": reduction},
                tags=("loss",),
            )
        yield (
            Case(
                f"cross_entropy-{reduction}-empty",
                "cross_entropy",
                (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)),
                {"reduction": reduction},
                tags=("loss",),
            )
            if reduction != "mean"
            else None
        )
    yield Case(
        "cross_entropy-golden-uniform",
        "cross_entropy",
        ([[0.0, 0, 0, 0]], np.array([2])),
        expected=float(np.log(4.0)),
        tags=("golden", "loss"),
        grad_output=1.0,
        expected_grads=([[0.25, 0.25, -0.75, 0.25]], None),
    )
    yield Case(
        "cross_entropy-golden-stable",
        "cross_entropy",
        ([[1000.0, 0.0], [0.0, 1000.0]], np.array([0, 0])),
        {"reduction": "none"},
        expected=[0.0, 1000.0],
        tags=("golden", "loss"),
    )


# -- the error contract -------------------------------------------------------------------------


def error_cases() -> Iterator[Case]:
    """Bad calls: every backend must raise the same exception type with the same message."""
    x4, w4 = _rand(1, 3, 6, 6), _rand(2, 3, 3, 3)
    bad = [
        (
            "conv-error-wrong-ndim",
            "conv",
            (_rand(3, 6, 6), w4, None),
            {"dims": 2},
            ValueError,
            "input must have 4",
        ),
        (
            "conv-error-channel-mismatch",
            "conv",
            (x4, _rand(2, 4, 3, 3), None),
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
        ("conv-error-kernel-too-large", "conv", (_rand(1, 3, 2, 2), w4, None), {}, ValueError, "larger than"),
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
        ("conv-error-bad-padding-string", "conv", (x4, w4, None), {"padding": "full"}, ValueError, "padding"),
        ("conv-error-float-stride", "conv", (x4, w4, None), {"stride": 1.5}, TypeError, "stride"),
        ("conv-error-bias-shape", "conv", (x4, w4, _rand(3)), {}, ValueError, "bias must have shape"),
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
            "conv-error-unknown-attr",
            "conv",
            (x4, w4, None),
            {"strides": 2},
            TypeError,
            "unexpected attribute",
        ),
        ("max_pool-error-float-kernel", "max_pool", (x4,), {"kernel_size": 2.5}, TypeError, "kernel_size"),
        ("max_pool-error-kernel0", "max_pool", (x4,), {"kernel_size": 0}, ValueError, "kernel_size"),
        ("max_pool-error-stride0", "max_pool", (x4,), {"kernel_size": 2, "stride": 0}, ValueError, "stride"),
        (
            "max_pool-error-too-much-padding",
            "max_pool",
            (x4,),
            {"kernel_size": 2, "padding": 2},
            ValueError,
            "padding must be at most half",
        ),
        ("max_pool-error-kernel-too-large", "max_pool", (x4,), {"kernel_size": 7}, ValueError, "larger than"),
        ("max_pool-error-unbatched", "max_pool", (_rand(6),), {"kernel_size": 2}, ValueError, "batched"),
        ("max_pool-error-missing-kernel", "max_pool", (x4,), {}, TypeError, "kernel_size"),
        (
            "avg_pool-error-ceil-not-bool",
            "avg_pool",
            (x4,),
            {"kernel_size": 2, "ceil_mode": 1},
            TypeError,
            "ceil_mode",
        ),
        ("lp_pool-error-p0", "lp_pool", (x4,), {"kernel_size": 2, "norm_type": 0}, ValueError, "norm_type"),
        (
            "lp_pool-error-p-string",
            "lp_pool",
            (x4,),
            {"kernel_size": 2, "norm_type": "2"},
            TypeError,
            "norm_type",
        ),
        ("relu-error-int-input", "relu", (np.arange(3),), {}, TypeError, "floating"),
        (
            "leaky_relu-error-slope-string",
            "leaky_relu",
            (_rand(3),),
            {"negative_slope": "a"},
            TypeError,
            "negative_slope",
        ),
        (
            "flatten-error-start-out-of-range",
            "flatten",
            (_rand(2, 3),),
            {"start_dim": 2},
            ValueError,
            "out of range",
        ),
        (
            "flatten-error-start-after-end",
            "flatten",
            (_rand(2, 3, 4),),
            {"start_dim": 2, "end_dim": 1},
            ValueError,
            "comes after",
        ),
        ("flatten-error-float-dim", "flatten", (_rand(2, 3),), {"start_dim": 1.0}, TypeError, "start_dim"),
        (
            "linear-error-feature-mismatch",
            "linear",
            (_rand(2, 4), _rand(3, 5), None),
            {},
            ValueError,
            "weight has 5 input features but input has 4",
        ),
        (
            "linear-error-bias-shape",
            "linear",
            (_rand(2, 5), _rand(3, 5), _rand(5)),
            {},
            ValueError,
            "bias must have shape",
        ),
        (
            "linear-error-weight-ndim",
            "linear",
            (_rand(2, 5), _rand(5), None),
            {},
            ValueError,
            "weight must have",
        ),
        (
            "cross_entropy-error-target-out-of-range",
            "cross_entropy",
            (_rand(3, 4), np.array([0, 4, 1])),
            {},
            ValueError,
            "outside",
        ),
        (
            "cross_entropy-error-negative-target",
            "cross_entropy",
            (_rand(3, 4), np.array([0, -1, 1])),
            {},
            ValueError,
            "outside",
        ),
        (
            "cross_entropy-error-float-target",
            "cross_entropy",
            (_rand(3, 4), _rand(3)),
            {},
            TypeError,
            "integers",
        ),
        (
            "cross_entropy-error-target-shape",
            "cross_entropy",
            (_rand(3, 4), np.array([0, 1])),
            {},
            ValueError,
            "target must have shape",
        ),
        (
            "cross_entropy-error-empty-mean",
            "cross_entropy",
            (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)),
            {},
            ValueError,
            "empty batch",
        ),
        (
            "cross_entropy-error-bad-reduction",
            "cross_entropy",
            (_rand(3, 4), np.array([0, 1, 2])),
            {"reduction": "avg"},
            ValueError,
            "reduction",
        ),
    ]
    for case_id, op, inputs, attrs, exc, match in bad:
        yield Case(case_id, op, inputs, attrs, raises=exc, match=match, tags=("error",))


def _build() -> tuple[Case, ...]:
    cases = [
        c
        for family in (conv_goldens, conv_cases, pool_goldens, pool_cases, dense_cases, error_cases)
        for c in family()
        if c is not None
    ]
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise AssertionError(f"duplicate conformance case id {c.id!r}")
        seen.add(c.id)
    return tuple(cases)


#: The built-in cases, in a fixed order (the same on every process).
BUILTIN_CASES: tuple[Case, ...] = _build()


@hookimpl
def cnnkit_conformance_cases(register):
    for case in BUILTIN_CASES:
        register(case)
