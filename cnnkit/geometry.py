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

import numbers
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ReceptiveField",
    "conv_output_size",
    "effective_kernel",
    "pool_output_size",
    "pool_padding",
    "receptive_field",
    "resolve_padding",
]

PadPair = tuple[int, int]


def effective_kernel(kernel_size: int, dilation: int = 1) -> int:
    """The extent of a dilated kernel: ``D*(F-1) + 1``.

    Args:
        kernel_size: ``F``, the number of taps.
        dilation: ``D``, their spacing.

    Returns:
        How many input units the kernel spans.

    Example:
        >>> effective_kernel(3, dilation=2)
        5
    """
    return dilation * (kernel_size - 1) + 1


def _pair(padding: int | Sequence[int]) -> PadPair:
    if _is_int(padding):
        before = after = padding
    elif isinstance(padding, Sequence) and len(padding) == 2 and all(_is_int(v) for v in padding):
        before, after = padding
    else:
        raise TypeError(f"padding must be an int or a (before, after) pair of ints, got {padding!r}")
    return _nonneg(before, "padding", ""), _nonneg(after, "padding", "")


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


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _nonneg(v: Any, name: str, prefix: str) -> int:
    v = int(v)
    if v < 0:
        raise ValueError(f"{prefix}{name} must be >= 0, got {v}")
    return v


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
    for f, s, p, d in layers:
        ext = effective_kernel(f, d)
        size = size + (ext - 1) * jump
        start = start + ((ext - 1) / 2 - p) * jump
        jump = jump * s
        out.append(ReceptiveField(size=size, jump=jump, start=start))
    return out
