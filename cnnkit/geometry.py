"""Sliding-window arithmetic: output sizes, padding resolution, receptive fields.

Along one axis a window of ``F`` taps spaced ``D`` apart (extent
``D*(F-1) + 1``) moves in steps of ``S`` over an input of ``N`` units padded
with ``P_before`` and ``P_after`` zeros. It fits

    O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1

times; with ``D = 1`` and ``P_before = P_after = P`` this is the lecture's
``(N - F + 2P)/S + 1``. When the division is not whole the trailing units are
dropped, as every framework does; ``strict=True`` raises instead, for the
lecture's "does not fit" case (N=7, F=3, S=3).

Example:
    >>> conv_output_size(7, 3, stride=2)
    3
    >>> resolve_padding("same", kernel_size=(3,), stride=(2,), dilation=(1,), input_size=(7,))
    ((1, 1),)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAX_ELEMENTS",
    "ReceptiveField",
    "bounded_window",
    "check_output_size",
    "check_padded_size",
    "conv_output_size",
    "effective_kernel",
    "empty_pool_window",
    "pool_output_size",
    "pool_padding",
    "receptive_field",
    "resolve_padding",
    "taps_inside",
]

PadPair = tuple[int, int]

#: The most elements one array of a call may have (the output, the padded input a kernel
#: builds), and the most units along one axis: 2**31, where 32-bit indexing inside BLAS,
#: oneDNN and many torch kernels ends. A call past it raises a ``ValueError`` naming the
#: argument before anything is allocated. Raise it (``cnnkit.geometry.MAX_ELEMENTS = ...``)
#: on a machine that holds such arrays.
MAX_ELEMENTS = 2**31


def effective_kernel(kernel_size: int, dilation: int = 1) -> int:
    """The extent of a dilated kernel: ``D*(F-1) + 1``.

    Args:
        kernel_size: ``F``, the number of taps.
        dilation: ``D``, their spacing.

    Returns:
        How many input units the kernel spans.

    Raises:
        TypeError, ValueError: ``kernel_size`` or ``dilation`` is not an int >= 1, naming it.

    Example:
        >>> effective_kernel(3, dilation=2)
        5
    """
    _check_axis(0, kernel_size, 1, dilation)
    return dilation * (kernel_size - 1) + 1


def _pair(padding: int | Sequence[int]) -> PadPair:
    if _is_int(padding):
        before = after = padding
    elif isinstance(padding, Sequence) and len(padding) == 2 and all(_is_int(v) for v in padding):
        before, after = padding
    else:
        raise TypeError(f"padding must be an int or a (before, after) pair of ints, got {padding!r}")
    return _nonneg(before, "padding", ""), _nonneg(after, "padding", "")


def _check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool: ``True``/``False`` or a NumPy bool, else a ``TypeError`` naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_axis(input_size: Any, kernel_size: Any, stride: Any, dilation: Any) -> None:
    """Sizes of one axis: ints with ``N >= 0`` and ``F, S, D >= 1`` (a clear error, not ZeroDivisionError)."""
    for name, v, low in (
        ("input_size", input_size, 0),
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("dilation", dilation, 1),
    ):
        if not _is_int(v):
            raise TypeError(f"{name} must be an int, got {v!r} ({type(v).__name__})")
        if v < low:
            raise ValueError(f"{name} must be >= {low}, got {v}")


def conv_output_size(
    input_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | Sequence[int] = 0,
    dilation: int = 1,
    *,
    strict: bool = False,
) -> int:
    """Output length of a convolution along one axis.

    Args:
        input_size: ``N``, the input length.
        kernel_size: ``F``, the number of taps.
        stride: ``S`` >= 1.
        padding: ``P`` on both sides, or ``(P_before, P_after)``.
        dilation: ``D`` >= 1, the spacing of the taps.
        strict: raise when the windows do not tile the padded input exactly.

    Returns:
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1``.

    Raises:
        ValueError: the kernel is larger than the padded input, or (strict)
            the lecture's "does not fit" case.

    Example:
        >>> [conv_output_size(7, 3, stride=s) for s in (1, 2)]
        [5, 3]
    """
    _check_axis(input_size, kernel_size, stride, dilation)
    strict = _check_flag(strict, "strict")
    before, after = _pair(padding)
    span = input_size + before + after - effective_kernel(kernel_size, dilation)
    if span < 0:
        raise ValueError(
            f"kernel_size: a kernel of extent {effective_kernel(kernel_size, dilation)} "
            f"(kernel_size={kernel_size}, dilation={dilation}) does not fit in the padded input "
            f"of length {input_size + before + after} (input {input_size}, padding {(before, after)})"
        )
    if strict and span % stride:
        raise ValueError(
            f"stride: the filter does not fit: (N - F + P_before + P_after)/S + 1 = "
            f"({input_size} - {effective_kernel(kernel_size, dilation)} + {before + after})/{stride}"
            f" + 1 = {span / stride + 1:g} is not a whole number"
        )
    return span // stride + 1


def pool_output_size(
    input_size: int,
    kernel_size: int,
    stride: int,
    padding: int | Sequence[int] = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a pooling along one axis.

    As :func:`conv_output_size`, but with ``ceil_mode=True`` the division
    rounds up, so a last, partial window is kept, except that a window may not
    start inside the right padding (PyTorch's and ONNX's rule).

    Args:
        input_size, kernel_size, stride, padding, dilation: as for :func:`conv_output_size`.
        ceil_mode: round up instead of down.

    Returns:
        The number of windows.

    Raises:
        ValueError, TypeError: as for :func:`conv_output_size`.

    Example:
        >>> pool_output_size(5, 2, 2), pool_output_size(5, 2, 2, ceil_mode=True)
        (2, 3)
    """
    _check_axis(input_size, kernel_size, stride, dilation)
    ceil_mode = _check_flag(ceil_mode, "ceil_mode")
    before, after = _pair(padding)
    span = input_size + before + after - effective_kernel(kernel_size, dilation)
    if span < 0:
        return conv_output_size(input_size, kernel_size, stride, (before, after), dilation)
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= input_size + before:
        out -= 1
    return out


def pool_padding(
    input_size: int,
    kernel_size: int,
    stride: int,
    padding: int | Sequence[int] = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> PadPair:
    """The padding a pooling really reads: ``(P_before, P_after + extra)``.

    ``extra`` is what the last ``ceil_mode`` window hangs past the declared
    padding. Backends pad by this much; the extra units never count as
    padding for ``count_include_pad``.

    Args:
        input_size, kernel_size, stride, padding, dilation, ceil_mode: as for
            :func:`pool_output_size`.

    Returns:
        ``(P_before, P_after + extra)``.

    Raises:
        ValueError, TypeError: as for :func:`conv_output_size`.

    Example:
        >>> pool_padding(5, 2, 2, ceil_mode=True)  # the third window reads one unit past the input
        (0, 1)
    """
    before, after = _pair(padding)
    out = pool_output_size(input_size, kernel_size, stride, (before, after), dilation, ceil_mode)
    needed = (out - 1) * stride + effective_kernel(kernel_size, dilation)
    extra = max(0, needed - (input_size + before + after))
    return before, after + extra


def resolve_padding(
    padding: Any,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    input_size: Sequence[int],
    *,
    name: str = "padding",
    where: str = "",
) -> tuple[PadPair, ...]:
    """Turn any accepted padding form into one ``(before, after)`` pair per axis.

    Accepted forms: an int (all sides), a tuple of one int per axis, a tuple of
    one ``(before, after)`` pair per axis, ``"valid"`` (no padding) and
    ``"same"``: output size ``ceil(N / S)``, the odd unit of padding going
    after (ONNX's SAME_UPPER), for any stride.

    Args:
        padding: the padding in any accepted form.
        kernel_size, stride, dilation, input_size: one int per spatial axis
            (``"same"`` needs them; the other forms only count the axes).
        name: the argument name used in error messages.
        where: the caller's name, the prefix of error messages.

    Returns:
        One ``(before, after)`` pair per spatial axis.

    Raises:
        ValueError / TypeError: naming ``name`` (and ``where``, the caller), with
            what was expected and what came.

    Example:
        >>> resolve_padding("same", kernel_size=(4,), stride=(1,), dilation=(1,), input_size=(6,))
        ((1, 2),)
        >>> resolve_padding(((0, 1), 2), (3, 3), stride=(1, 1), dilation=(1, 1), input_size=(5, 5))
        ((0, 1), (2, 2))
    """
    dims = len(kernel_size)
    prefix = f"{where}: " if where else ""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * dims
        if mode == "same":
            pads = []
            for n, f, s, d in zip(input_size, kernel_size, stride, dilation):
                _check_axis(n, f, s, d)
                out = -(-n // s)
                total = max((out - 1) * s + effective_kernel(f, d) - n, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"{prefix}{name} must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    if _is_int(padding):
        return ((_nonneg(padding, name, prefix),) * 2,) * dims
    if isinstance(padding, Iterable) and not isinstance(padding, (Mapping, Set)):
        items = list(padding)
        if len(items) != dims:
            raise ValueError(
                f"{prefix}{name} must have {dims} entries (one per spatial axis), got {padding!r}"
            )
        pairs = []
        for item in items:
            if _is_int(item):
                p = _nonneg(item, name, prefix)
                pairs.append((p, p))
            elif (
                isinstance(item, Iterable) and len(item := list(item)) == 2 and all(_is_int(v) for v in item)
            ):
                pairs.append((_nonneg(item[0], name, prefix), _nonneg(item[1], name, prefix)))
            else:
                raise TypeError(
                    f"{prefix}{name} entries must be ints or (before, after) pairs of ints, got {padding!r}"
                )
        return tuple(pairs)
    raise TypeError(
        f"{prefix}{name} must be an int, a tuple, 'valid' or 'same', got {type(padding).__name__}"
    )


def is_int(v: Any) -> bool:
    """An integer that is not a bool: ``int``, NumPy's integers, any ``numbers.Integral``."""
    if type(v) is int:  # the common case first: the abc check below costs microseconds a call
        return True
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


_is_int = is_int


def _nonneg(v: Any, name: str, prefix: str) -> int:
    v = int(v)
    if v < 0:
        raise ValueError(f"{prefix}{name} must be >= 0, got {v}")
    return v


def _extent(shape: Sequence[int]) -> int:
    """``Π max(1, n)``: the elements of ``shape`` with an empty axis counted as one unit, so
    that a batch of 0 does not hide a spatial axis too long to index."""
    return math.prod([max(1, int(n)) for n in shape])


def check_output_size(where: str, out_shape: Sequence[int], limit: int | None = None) -> None:
    """Refuse a call whose output would have more than ``limit`` elements (before allocating it).

    Args:
        where: the caller's name, the prefix of the message.
        out_shape: the output shape the call would produce.
        limit: the most elements (default :data:`MAX_ELEMENTS`); a zero-length axis counts as
            one unit, so ``(0, 1, 10**12)`` is refused too.

    Raises:
        ValueError: naming the shape, its size and the limit.

    Example:
        >>> check_output_size("conv2d", (1, 1, 200005, 200005))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: conv2d: the output would have shape (1, 1, 200005, 200005), 40002000025 elements, ...
    """
    limit = MAX_ELEMENTS if limit is None else limit
    size = _extent(out_shape)
    if size > limit:
        raise ValueError(
            f"{where}: the output would have shape {tuple(int(n) for n in out_shape)}, {size} elements, "
            f"more than cnnkit.geometry.MAX_ELEMENTS = {limit} (check padding, stride and the input size)"
        )


def check_padded_size(
    where: str, input_shape: Sequence[int], padding: Sequence[PadPair], limit: int | None = None
) -> None:
    """Refuse a padding that makes the padded input ``(N, C, *(n + before + after))`` larger than
    ``limit`` elements (a kernel materialises it), naming ``padding``.

    Args:
        where: the caller's name.
        input_shape: ``(N, C, *spatial)``.
        padding: one ``(before, after)`` pair per spatial axis (the canonical form).
        limit: the most elements (default :data:`MAX_ELEMENTS`), empty axes counted as one.

    Raises:
        ValueError: naming ``padding``, what it makes of the input, and the limit.

    Example:
        >>> check_padded_size("conv2d", (1, 1, 6, 6), ((10**5, 10**5),) * 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: conv2d: padding ((100000, 100000), (100000, 100000)) makes the input (1, 1, 6, 6) ...
    """
    limit = MAX_ELEMENTS if limit is None else limit
    lead, spatial = tuple(input_shape[:2]), input_shape[2:]
    padded = (*lead, *(int(n) + int(lo) + int(hi) for n, (lo, hi) in zip(spatial, padding)))
    size = _extent(padded)
    if size > limit:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        raise ValueError(
            f"{where}: padding {pads} makes the input {tuple(int(n) for n in input_shape)} a padded "
            f"input of {padded}, {size} elements, more than cnnkit.geometry.MAX_ELEMENTS = {limit}"
        )


def bounded_window(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[PadPair],
    dilation: Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(stride, dilation)`` per axis, each no larger than the padded input ``L = n + before + after``,
    computing exactly what the given ones compute.

    A stride ``S > L`` leaves one window (as ``S = L`` does, in floor and in ceil mode), and a
    kernel of one tap reads the same unit whatever its dilation; a valid kernel of ``F >= 2``
    taps has ``D < L`` already. Kernels call this first, so that a stride of ``10**20`` (a
    valid call, output size 1) never reaches ``as_strided`` or torch's 64-bit arguments.

    Example:
        >>> bounded_window((6, 6), (3, 1), (10**20, 2), ((0, 0), (1, 1)), (1, 10**9))
        ((6, 2), (1, 1))
    """
    strides, dilations = [], []
    for n, f, s, (lo, hi), d in zip(input_size, kernel_size, stride, padding, dilation):
        full = max(1, int(n) + int(lo) + int(hi))
        strides.append(min(int(s), full))
        dilations.append(1 if f == 1 else min(int(d), full))
    return tuple(strides), tuple(dilations)


def taps_inside(out_size: int, kernel_size: int, stride: int, dilation: int, lo: int, hi: int) -> Any:
    """How many taps of each window fall in ``[lo, hi)``: an int64 array of ``out_size`` entries.

    Window ``i`` has taps at ``S·i + D·m``, ``m = 0 .. F-1`` (the caller's coordinates, e.g. the
    padded input's). Arithmetic per window, not per tap: work and memory are ``O(out_size)``
    whatever the kernel (an ``(O, F)`` table of taps was ``O·F``: 4 GiB for a 2**22-unit input
    with a 128-tap window).

    Example:
        >>> taps_inside(3, 3, 2, 1, 1, 6).tolist()  # taps 0-2, 2-4, 4-6 against [1, 6)
        [2, 3, 2]
    """
    if kernel_size == 1:
        dilation = 1  # one tap: its spacing is never used
    # int64 where the coordinates fit (always, for arrays that exist); Python ints past that
    big = max(abs(lo), abs(hi), stride * max(out_size - 1, 0), dilation * kernel_size) >= 2**62
    start = np.arange(out_size, dtype=object if big else np.int64)
    if out_size > 1:
        start = start * stride  # the first tap of each window
    # m with lo <= start + D·m < hi: ceil((lo - start)/D) <= m <= ceil((hi - start)/D) - 1
    first = np.maximum(0, -((start - lo) // dilation))
    last = np.minimum(kernel_size - 1, -((start - hi) // dilation) - 1)
    return np.maximum(0, last - first + 1)


def empty_pool_window(
    input_size: int,
    kernel_size: int,
    stride: int,
    padding: int | Sequence[int] = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int | None:
    """The first window of a pooling that reads only padding (no input unit), or ``None``.

    With dilation the taps of a window can step over the whole input. This is the check the
    pool specs make, by arithmetic on Python ints: no array, and a few steps per run of windows
    one tap keeps inside the input (never ``O(O·F)``, nor ``O(O)``).

    Args:
        input_size, kernel_size, stride, padding, dilation, ceil_mode: as for
            :func:`pool_output_size`.

    Returns:
        The index of the first empty window, or ``None`` when every window holds an input unit.

    Raises:
        ValueError, TypeError: as for :func:`pool_output_size`.

    Example:
        >>> empty_pool_window(2, 2, 1, padding=1, dilation=3)  # taps at -1 and 2: both padding
        0
        >>> empty_pool_window(5, 3, 1, padding=1) is None
        True
    """
    out = pool_output_size(input_size, kernel_size, stride, padding, dilation, ceil_mode)
    before, _after = _pair(padding)
    n, f, s, d = input_size, kernel_size, stride, dilation
    lo, hi = before, before + n  # the input in padded coordinates
    i = 0
    while i < out:
        start = s * i  # window i's taps: start + D·m, m = 0 .. F-1
        m = max(0, -((start - lo) // d))  # the first tap at or past the input's start
        if m >= f or start + d * m >= hi:
            return i  # that tap is past the input, every earlier one before it: no unit read
        # tap m stays inside for windows up to the one whose tap m reaches hi; jump past them
        i = max(i + 1, -((d * m - hi) // s))
    return None


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field after one layer of a stack.

    Attributes:
        size: how many input units one output unit sees, per axis.
        jump: the distance in input units between neighbouring outputs.
        start: the input coordinate of the first output's window centre.
    """

    size: int
    jump: int
    start: float


def receptive_field(layers: Iterable[tuple[int, int, int, int]]) -> list[ReceptiveField]:
    """Receptive field of each layer of a stack (the lecture's "receptive fields in deep networks").

    Args:
        layers: ``(kernel_size, stride, padding_before, dilation)`` per layer,
            along one axis; use ``(1, 1, 0, 1)`` for element-wise layers.

    Returns:
        One :class:`ReceptiveField` per layer: ``r_l = r_{l-1} + D*(F-1)*j_{l-1}``,
        ``j_l = j_{l-1}*S``.

    Example:
        >>> [rf.size for rf in receptive_field([(3, 1, 0, 1), (3, 1, 0, 1), (2, 2, 0, 1)])]
        [3, 5, 6]
    """
    size, jump, start = 1, 1, 0.5
    out = []
    for i, layer in enumerate(layers):
        if not (isinstance(layer, Sequence) and len(layer) == 4 and all(_is_int(v) for v in layer)):
            raise TypeError(
                f"receptive_field: layers[{i}] must be (kernel_size, stride, padding_before, dilation) "
                f"ints, got {layer!r}"
            )
        f, s, p, d = layer
        _check_axis(0, f, s, d)
        _nonneg(p, "padding_before", f"receptive_field: layers[{i}]: ")
        ext = effective_kernel(f, d)
        size = size + (ext - 1) * jump
        start = start + ((ext - 1) / 2 - p) * jump
        jump = jump * s
        out.append(ReceptiveField(size=size, jump=jump, start=start))
    return out
