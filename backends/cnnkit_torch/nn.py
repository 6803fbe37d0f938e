"""``torch.nn.Module`` layers whose every forward and backward is cnnkit's.

Each module holds its parameters as ``torch.nn.Parameter`` under PyTorch's
names (``weight``, ``bias``), initialises them exactly as its ``torch.nn``
namesake does (same calls, same generator, so the same numbers after
``torch.manual_seed``), and runs one :mod:`cnnkit.functional` call on the
``torch`` backend. That call validates the input once in the core (the same
``ValueError``/``TypeError`` every backend raises) and applies the op's
``autograd.Function`` from :mod:`cnnkit_torch.ops`, so ``loss.backward()``
runs the hand-derived gradients: ``y.grad_fn`` is cnnkit's (``ConvBackward``
of :class:`cnnkit_torch.ops.Conv`, ...), never aten's.

A ``torch.nn`` state dict loads into the matching module here and back::

    >>> import torch
    >>> from cnnkit_torch import nn as cnn
    >>> ours = cnn.Conv2d(1, 4, 3, padding=1)
    >>> ours.load_state_dict(torch.nn.Conv2d(1, 4, 3, padding=1).state_dict())
    <All keys matched successfully>
    >>> y = ours(torch.randn(2, 1, 8, 8))
    >>> type(y.grad_fn).__name__
    'ConvBackward'

:func:`from_cnnkit` turns a :class:`cnnkit.layers.Sequential` (a named
architecture of :mod:`cnnkit.models`, a model read by :func:`cnnkit.io.load`)
into the equivalent ``torch.nn.Sequential`` of these modules with the same
weights; :func:`copy_to_cnnkit` writes trained weights back for
:func:`cnnkit.io.save`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch.nn import init

from cnnkit import functional as CF
from cnnkit.ops import as_bool, as_float, as_int_tuple
from cnnkit_torch.backend import TorchBackend

__all__ = [
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "CrossEntropyLoss",
    "Flatten",
    "GlobalAvgPool",
    "GlobalLPPool",
    "GlobalMaxPool",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "LeakyReLU",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "copy_to_cnnkit",
    "from_cnnkit",
]

#: The backend every module runs on: no device or dtype option, so tensors stay
#: where they are and keep their dtype (a module moved with ``.to()`` just works).
_BACKEND = TorchBackend()


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


def _norm_type(value: Any, where: str) -> Any:
    """``p`` of an Lp pool, checked when the module is built: a finite number > 0."""
    p = as_float(value, "norm_type", where)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"{where}: norm_type must be a finite number > 0, got {value!r}")
    return value  # kept as given, as torch.nn.LPPool does (its repr shows it)


def _dim(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    return int(value)


# -- convolution -------------------------------------------------------------------------------

_CONV_DOC = """{d}-D convolution (cross-correlation by default) as ``torch.nn.Conv{d}d``, on cnnkit's ops.

    ``y[n, k, i] = b[k] + Σ_c Σ_m W[k, c, m] · x_pad[n, g·C/G + c, S·i + D·m]``;
    ``flip=True`` rotates the kernel 180° (the lecture's true convolution).
    Backward (cnnkit's hand-derived formulas): ``dE/dW = x ⋆ δ``,
    ``dE/db = Σ δ``, ``dE/dx = δ ⋆_full rot180(W)``.

    Args:
        in_channels: ``C``.
        out_channels: ``K``, the number of filters.
        kernel_size: ``F``, an int or one per axis.
        stride: ``S`` (default 1).
        padding: an int, one per axis, one ``(before, after)`` pair per axis,
            ``"valid"`` or ``"same"`` (default 0).
        dilation: ``D`` (default 1).
        groups: independent channel groups (``groups == C``: depthwise).
        bias: learn a bias per filter (default ``True``).
        flip: true convolution instead of cross-correlation (default ``False``).
        device, dtype: where and in what the parameters are created.

    Attributes:
        weight: ``(K, C/groups, {kernel})``, ``kaiming_uniform_(a=√5)`` as in torch.
        bias: ``(K,)``, ``U(±1/√fan_in)``, or ``None``.

    Shape:
        input ``(N, C, {axes})`` -> output ``(N, K, {out_axes})`` with, per axis,
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1``.

    Raises:
        ValueError: sizes < 1, negative padding, ``groups`` not dividing the channels.
        TypeError: non-integer sizes.

    Example:
        >>> import torch
        >>> Conv{d}d(2, 4, 3, padding=1)(torch.zeros(1, 2, {ex})).shape
        torch.Size([1, 4, {ex}])
    """


class _ConvNd(torch.nn.Module):
    dims = 0

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
        flip: bool = False,
        device: Any = None,
        dtype: Any = None,
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
        self.dilation = as_int_tuple(dilation, self.dims, "dilation", where)
        self.padding = _padding(padding, self.dims, where)
        self.flip = as_bool(flip, "flip", where)
        factory = {"device": device, "dtype": dtype}
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = torch.nn.Parameter(torch.empty(shape, **factory))
        if as_bool(bias, "bias", where):
            self.bias = torch.nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.ConvNd's initialisation, call for call (the same numbers for the same seed)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        conv = (CF.conv1d, CF.conv2d, CF.conv3d)[self.dims - 1]
        return conv(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.flip,
            backend=_BACKEND,
        )

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.flip:
            s += ", flip=True"
        return s


class Conv1d(_ConvNd):
    dims = 1


class Conv2d(_ConvNd):
    dims = 2


class Conv3d(_ConvNd):
    dims = 3


# -- pooling -----------------------------------------------------------------------------------

_POOL_DOC = """{d}-D {what} pooling as ``torch.nn.{cls}{d}d``, on cnnkit's ops: {formula}

    Args:{extra}
        kernel_size: ``F``, an int or one per axis.
        stride: ``S`` (default: ``kernel_size``).{pad}
        ceil_mode: keep a last, partial window (never one that starts in the padding).{more}

    Shape:
        input ``(N, C, {axes})`` -> output ``(N, C, {out_axes})`` with, per axis,
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1`` (``ceil`` with ``ceil_mode``).

    Raises:
        ValueError: sizes < 1, negative padding{raises_extra}.
        TypeError: non-integer sizes.

    Example:
        >>> import torch
        >>> {cls}{d}d({ex_args}2)(torch.ones(1, 3, {ex})).shape
        torch.Size([1, 3, {half}])
    """

_PAD_DOC = (
    "\n        padding: as for ``Conv{d}d``, at most half the window per side (default 0)."
    "\n        dilation: spacing of the window's taps (default 1)."
)


class _PoolNd(torch.nn.Module):
    dims = 0

    def _check(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any) -> None:
        where = type(self).__name__
        as_int_tuple(kernel_size, self.dims, "kernel_size", where)
        if stride is not None:
            as_int_tuple(stride, self.dims, "stride", where)
        _padding(padding, self.dims, where)
        as_int_tuple(dilation, self.dims, "dilation", where)
        as_bool(ceil_mode, "ceil_mode", where)
        # kept as given, like torch.nn (its repr and state are the same)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode


class _MaxPoolNd(_PoolNd):
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
        if return_indices:
            raise ValueError(f"{type(self).__name__}: return_indices=True is not supported, got True")
        self.return_indices = False
        self._check(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        fn = (CF.max_pool1d, CF.max_pool2d, CF.max_pool3d)[self.dims - 1]
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        return fn(input, k, s, p, d, self.ceil_mode, backend=_BACKEND)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxPool1d(_MaxPoolNd):
    dims = 1


class MaxPool2d(_MaxPoolNd):
    dims = 2


class MaxPool3d(_MaxPoolNd):
    dims = 3


class _AvgPoolNd(_PoolNd):
    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        *,
        dilation: Any = 1,
    ) -> None:
        super().__init__()
        self._check(kernel_size, stride, padding, dilation, ceil_mode)
        self.count_include_pad = as_bool(count_include_pad, "count_include_pad", type(self).__name__)
        if self.dims == 1:  # torch.nn.AvgPool1d keeps 1-tuples
            one = as_int_tuple
            self.kernel_size = one(self.kernel_size, 1, "kernel_size", "AvgPool1d")
            self.stride = one(self.stride, 1, "stride", "AvgPool1d")
            if not isinstance(padding, str):
                self.padding = tuple(padding) if isinstance(padding, (list, tuple)) else (padding,)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        fn = (CF.avg_pool1d, CF.avg_pool2d, CF.avg_pool3d)[self.dims - 1]
        return fn(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.count_include_pad,
            backend=_BACKEND,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    dims = 1


class AvgPool2d(_AvgPoolNd):
    dims = 2


class AvgPool3d(_AvgPoolNd):
    dims = 3


class _LPPoolNd(_PoolNd):
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
        self._check(kernel_size, stride, padding, dilation, ceil_mode)
        self.stride = stride  # torch.nn.LPPool keeps None (the window's own size)
        self.norm_type = _norm_type(norm_type, type(self).__name__)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        fn = (CF.lp_pool1d, CF.lp_pool2d, CF.lp_pool3d)[self.dims - 1]
        return fn(
            input,
            self.norm_type,
            self.kernel_size,
            self.kernel_size if self.stride is None else self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            backend=_BACKEND,
        )

    def extra_repr(self) -> str:
        return (
            f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"ceil_mode={self.ceil_mode}"
        )


class LPPool1d(_LPPoolNd):
    dims = 1


class LPPool2d(_LPPoolNd):
    dims = 2


class LPPool3d(_LPPoolNd):
    dims = 3


_AXES = {1: "L", 2: "H, W", 3: "D, H, W"}
_OUT_AXES = {1: "L_out", 2: "H_out, W_out", 3: "D_out, H_out, W_out"}
_POOL_KINDS = {
    "max": dict(
        cls="MaxPool",
        formula="the largest unit of each window.\n\n    Backward: the gradient goes to the window's "
        "winning unit (the first maximum), all others get zero.",
        more="\n        return_indices: must be ``False`` (the winners stay inside the op).",
    ),
    "avg": dict(
        cls="AvgPool",
        formula="the mean of each window.\n\n    Backward: each gradient is spread as "
        "``1/|window|`` over its window.",
        more="\n        count_include_pad: divide by the whole window, padding included (default).",
    ),
    "lp": dict(
        cls="LPPool",
        formula="the norm ``(Σ|x|^p)^(1/p)`` of each window.\n\n    Unlike ``torch.nn.LPPool``, "
        "this is the true norm (``|x|``); the two agree on non-negative inputs.\n    "
        "Backward: ``dE/dx = δ · sign(x)|x|^(p-1) / y^(p-1)``.",
        extra="\n        norm_type: ``p`` > 0.",
        ex_args="2, ",
        raises_extra=", a ``norm_type`` that is not a finite number > 0",
    ),
}

for _d in (1, 2, 3):
    _ex = ", ".join(["4"] * _d)
    globals()[f"Conv{_d}d"].__doc__ = _CONV_DOC.format(
        d=_d, axes=_AXES[_d], out_axes=_OUT_AXES[_d], kernel=", ".join(["F"] * _d), ex=_ex
    )
    for _kind, _info in _POOL_KINDS.items():
        _info = {"extra": "", "more": "", "ex_args": "", "raises_extra": "", **_info}
        globals()[f"{_info['cls']}{_d}d"].__doc__ = _POOL_DOC.format(
            d=_d,
            what=_kind,
            axes=_AXES[_d],
            out_axes=_OUT_AXES[_d],
            ex=_ex,
            half=", ".join(["2"] * _d),
            pad=_PAD_DOC.format(d=_d),
            **_info,
        )


class GlobalMaxPool(torch.nn.Module):
    """The largest unit of each channel over all spatial axes (``AdaptiveMaxPoolNd(1)``).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Example:
        >>> import torch
        >>> GlobalMaxPool()(torch.arange(8.0).reshape(1, 2, 4)).flatten().tolist()
        [3.0, 7.0]
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.global_max_pool(input, backend=_BACKEND)


class GlobalAvgPool(torch.nn.Module):
    """The mean of each channel over all spatial axes (``AdaptiveAvgPoolNd(1)``).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Example:
        >>> import torch
        >>> GlobalAvgPool()(torch.arange(8.0).reshape(1, 2, 4)).flatten().tolist()
        [1.5, 5.5]
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.global_avg_pool(input, backend=_BACKEND)


class GlobalLPPool(torch.nn.Module):
    """The norm ``(Σ|x|^p)^(1/p)`` of each channel over all spatial axes.

    Args:
        norm_type: ``p`` > 0.

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Raises:
        ValueError: ``norm_type`` not a finite number > 0.
        TypeError: ``norm_type`` not a number.

    Example:
        >>> import torch
        >>> GlobalLPPool(2)(torch.tensor([[[3.0, -4.0]]])).flatten().tolist()
        [5.0]
    """

    def __init__(self, norm_type: float) -> None:
        super().__init__()
        self.norm_type = _norm_type(norm_type, "GlobalLPPool")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.global_lp_pool(input, self.norm_type, backend=_BACKEND)

    def extra_repr(self) -> str:
        return f"norm_type={self.norm_type}"


# -- activations, flatten, linear, loss ----------------------------------------------------------


class ReLU(torch.nn.Module):
    """``max(0, x)``; backward ``δ_prev = δ ⊙ [x > 0]``.

    Args:
        inplace: accepted for ``torch.nn.ReLU`` compatibility; the result is always
            a new tensor (cnnkit's Function keeps its input for backward).

    Example:
        >>> import torch
        >>> ReLU()(torch.tensor([-1.0, 2.0])).tolist()
        [0.0, 2.0]
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = as_bool(inplace, "inplace", "ReLU")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.relu(input, backend=_BACKEND)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(torch.nn.Module):
    """``x`` where ``x > 0``, else ``negative_slope · x``.

    Args:
        negative_slope: the slope for ``x <= 0`` (default 0.01).
        inplace: accepted for compatibility; the result is always a new tensor.

    Example:
        >>> import torch
        >>> LeakyReLU(0.5)(torch.tensor([-2.0, 3.0])).tolist()
        [-1.0, 3.0]
    """

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = as_float(negative_slope, "negative_slope", "LeakyReLU")
        self.inplace = as_bool(inplace, "inplace", "LeakyReLU")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.leaky_relu(input, self.negative_slope, backend=_BACKEND)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(torch.nn.Module):
    """``1 / (1 + e^-x)``; backward ``δ_prev = δ ⊙ y(1 - y)``.

    Example:
        >>> import torch
        >>> Sigmoid()(torch.tensor([0.0])).tolist()
        [0.5]
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.sigmoid(input, backend=_BACKEND)


class Tanh(torch.nn.Module):
    """``tanh(x)``; backward ``δ_prev = δ ⊙ (1 - y²)``.

    Example:
        >>> import torch
        >>> Tanh()(torch.tensor([0.0])).tolist()
        [0.0]
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.tanh(input, backend=_BACKEND)


class Flatten(torch.nn.Module):
    """Merge dims ``start_dim..end_dim`` into one.

    Shape:
        ``(N, C, H, W)`` -> ``(N, C·H·W)`` with the defaults.

    Example:
        >>> import torch
        >>> Flatten()(torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 60])
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = _dim(start_dim, "start_dim", "Flatten")
        self.end_dim = _dim(end_dim, "end_dim", "Flatten")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.flatten(input, self.start_dim, self.end_dim, backend=_BACKEND)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Linear(torch.nn.Module):
    """The dense layer ``y = x Wᵀ + b``, as ``torch.nn.Linear``.

    Backward: ``dE/dW = δᵀ x``, ``dE/db = Σ_n δ``, ``dE/dx = δ W``.

    Args:
        in_features, out_features: sizes of an input and an output row.
        bias: learn a bias (default ``True``).
        device, dtype: where and in what the parameters are created.

    Attributes:
        weight: ``(out_features, in_features)``, ``kaiming_uniform_(a=√5)`` as in torch.
        bias: ``(out_features,)``, ``U(±1/√in_features)``, or ``None``.

    Shape:
        input ``(*, in_features)`` -> output ``(*, out_features)``.

    Raises:
        ValueError: a size < 1.

    Example:
        >>> import torch
        >>> Linear(3, 2)(torch.ones(4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        (self.in_features,) = as_int_tuple(in_features, 1, "in_features", "Linear")
        (self.out_features,) = as_int_tuple(out_features, 1, "out_features", "Linear")
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty((self.out_features, self.in_features), **factory))
        if as_bool(bias, "bias", "Linear"):
            self.bias = torch.nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.Linear's initialisation, call for call."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return CF.linear(input, self.weight, self.bias, backend=_BACKEND)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


class CrossEntropyLoss(torch.nn.Module):
    """Softmax cross-entropy ``E = -log softmax(a)[t]``; backward ``softmax(a) - onehot(t)``.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shape:
        input ``(N, classes)`` logits, target ``(N,)`` class indices -> a scalar
        (``(N,)`` with ``"none"``).

    Example:
        >>> import torch
        >>> round(CrossEntropyLoss()(torch.zeros(1, 4), torch.tensor([2])).item(), 4)
        1.3863
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
            )
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return CF.cross_entropy(input, target, self.reduction, backend=_BACKEND)


# -- conversion from and to cnnkit.layers ----------------------------------------------------------

_POOLS = {"MaxPool": "max", "AvgPool": "avg", "LPPool": "lp"}


def from_cnnkit(layer: Any, *, device: Any = None, dtype: Any = None) -> torch.nn.Module:
    """The ``torch.nn`` module computing what cnnkit layer ``layer`` computes, with its weights.

    A :class:`cnnkit.layers.Sequential` becomes a ``torch.nn.Sequential`` whose
    state-dict keys (``"0.weight"``, ...) are the names :func:`cnnkit.io.save`
    writes, so ``cnnkit.models.build_model(name, seed=s)`` and its conversion
    start from the very same numbers.

    Args:
        layer: a built-in :mod:`cnnkit.layers` layer or a ``Sequential`` of them, on any backend.
        device, dtype: where and in what the parameters go (default: CPU, the layer's dtype).

    Returns:
        A ``torch.nn.Module`` made of this module's classes.

    Raises:
        TypeError: a layer with no counterpart here (a plugin's layer).

    Example:
        >>> from cnnkit.models import build_model
        >>> net = from_cnnkit(build_model("digits-cnn", seed=0))
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    from cnnkit import layers as L

    name = type(layer).__name__
    if isinstance(layer, L.Sequential):
        return torch.nn.Sequential(*(from_cnnkit(child, device=device, dtype=dtype) for child in layer))
    cfg = layer.config()
    if isinstance(layer, (L.Conv1d, L.Conv2d, L.Conv3d)):
        padding = cfg["padding"]
        if isinstance(padding, list):  # a config read back from JSON
            padding = tuple(tuple(p) if isinstance(p, list) else p for p in padding)
        module: torch.nn.Module = globals()[name](**{**cfg, "padding": padding}, device=device, dtype=dtype)
    elif isinstance(layer, L.Linear):
        module = Linear(**cfg, device=device, dtype=dtype)
    elif name[:-2] in _POOLS and name[-2:] in ("1d", "2d", "3d") and hasattr(L, name):
        cls = globals()[name]
        if name.startswith("LPPool"):
            module = cls(
                cfg["norm_type"],
                cfg["kernel_size"],
                cfg["stride"],
                cfg["ceil_mode"],
                padding=cfg["padding"],
                dilation=cfg["dilation"],
            )
        elif name.startswith("AvgPool"):
            module = cls(
                cfg["kernel_size"],
                cfg["stride"],
                cfg["padding"],
                cfg["ceil_mode"],
                cfg["count_include_pad"],
                dilation=cfg["dilation"],
            )
        else:
            k, s, p, d = (cfg[key] for key in ("kernel_size", "stride", "padding", "dilation"))
            module = cls(k, s, p, d, False, cfg["ceil_mode"])
    elif type(layer) in (
        L.GlobalMaxPool,
        L.GlobalAvgPool,
        L.GlobalLPPool,
        L.ReLU,
        L.Sigmoid,
        L.Tanh,
        L.LeakyReLU,
        L.Flatten,
    ):
        module = globals()[name](**cfg)
    else:
        raise TypeError(f"from_cnnkit: no cnnkit_torch.nn module for layer {name}")
    params = dict(layer.named_parameters())
    with torch.no_grad():
        for key, p in module.named_parameters():
            value = torch.from_numpy(np.array(L.backend_of(params[key].data).to_numpy(params[key].data)))
            p.data = value.to(device=p.device, dtype=dtype or value.dtype)
    return module


def copy_to_cnnkit(module: torch.nn.Module, layer: Any) -> Any:
    """Write ``module``'s parameters into cnnkit layer ``layer`` (the inverse of :func:`from_cnnkit`).

    The values keep ``layer``'s backend and dtype. Returns ``layer``.

    Raises:
        ValueError: the two do not have the same parameter names and shapes.
    """
    from cnnkit.layers import backend_of

    ours = dict(module.named_parameters())
    theirs = dict(layer.named_parameters())
    if sorted(ours) != sorted(theirs):
        raise ValueError(
            f"copy_to_cnnkit: module has parameters {sorted(ours)} but layer has {sorted(theirs)}"
        )
    for key, p in theirs.items():
        src = ours[key].detach().cpu()
        if tuple(src.shape) != p.shape:
            raise ValueError(f"copy_to_cnnkit: {key} has shape {tuple(src.shape)}, the layer needs {p.shape}")
        be = backend_of(p.data)
        p.data = be.asarray(src.numpy(), dtype=be.dtype_name(p.data))
        p.grad = None
    return layer
