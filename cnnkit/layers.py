"""Layers: parameters plus an op, with ``forward`` and a hand-derived ``backward``.

A layer's math is one :mod:`cnnkit.functional` call, :meth:`Layer.function`.
``forward`` runs it through :func:`cnnkit.vjp`, keeping the pullback, and
``backward(dE/dy)`` runs the backend's manual gradient, stores ``dE/dW`` in
each parameter's ``grad`` and returns ``dE/dx`` for the layer below.

Layers take PyTorch's constructor arguments and PyTorch's default
initialisation (weights ``kaiming_uniform(a=√5)``, i.e. ``U(±1/√fan_in)``, and
biases ``U(±1/√fan_in)``), drawn from a seeded NumPy generator (``seed=`` or
``rng=``) so that every backend starts from the same numbers. Parameters are
created on ``backend=`` (default: the active backend) in its
``default_dtype`` (float32 unless the backend's ``dtype`` option says
otherwise), and a layer runs on the backend its parameters live on.

Example:
    >>> import numpy as np
    >>> from cnnkit.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
    >>> net = Sequential(
    ...     Conv2d(1, 4, 3, padding=1, seed=0), ReLU(), MaxPool2d(2), Flatten(), Linear(16, 3, seed=1)
    ... )
    >>> y = net(np.zeros((2, 1, 4, 4), dtype=np.float32))
    >>> y.shape
    (2, 3)
    >>> dx = net.backward(np.ones_like(y))   # fills every parameter's .grad
    >>> dx.shape, net.parameters()[0].grad.shape
    ((2, 1, 4, 4), (4, 1, 3, 3))
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from cnnkit import functional as F
from cnnkit.backend import Backend
from cnnkit.dispatch import vjp
from cnnkit.hookspecs import hookimpl
from cnnkit.ops import as_int_tuple
from cnnkit.registry import get_backend, get_registry, use_backend

__all__ = [
    "BUILTIN_LAYERS",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Flatten",
    "GlobalAvgPool",
    "GlobalLPPool",
    "GlobalMaxPool",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "backend_of",
]

_AXES = {1: "L", 2: "H, W", 3: "D, H, W"}
_OUT_AXES = {1: "L_out", 2: "H_out, W_out", 3: "D_out, H_out, W_out"}


class Parameter:
    """A learnable array and the gradient the last ``backward`` left for it."""

    def __init__(self, data: Any, name: str = "") -> None:
        self.data = data
        self.grad: Any = None
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"Parameter({self.name or '?'}, shape={self.shape})"


def backend_of(x: Any) -> Backend:
    """The backend whose native array type ``x`` is: the active one if it fits, else the first that does.

    Raises:
        TypeError: no installed backend holds arrays of ``x``'s type.
    """
    active = get_backend()
    if active.is_native(x):
        return active
    registry = get_registry()
    for name in sorted(registry.backend_infos()):
        try:
            be = registry.backend(name)
        except Exception:  # a backend that cannot load cannot own x
            continue
        if be.is_native(x):
            return be
    raise TypeError(
        f"no installed cnnkit backend holds arrays of type {type(x).__module__}.{type(x).__name__}"
    )


def _rng(seed: int | None, rng: np.random.Generator | None) -> np.random.Generator:
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return rng
    return np.random.default_rng(seed)


class Layer:
    """Base class of every layer (built-in or from a plugin).

    Subclasses implement :meth:`function` (the op, as a functional call taking
    the input and then the parameters in :attr:`param_names` order) and
    :meth:`config` (the constructor's keyword arguments, for saving).

    The backend a layer runs on is, in this order: the one it was built on
    (``self.backend``), the one its first parameter lives on, the one its
    input lives on.
    """

    #: Names of the parameters, in the order :meth:`function` takes them.
    param_names: tuple[str, ...] = ()
    #: The backend the parameters were created on (``None``: decided per call).
    backend: Backend | None = None

    def __init__(self) -> None:
        self._pullback: Any = None

    # -- the contract ---------------------------------------------------------------

    def function(self, x: Any, *params: Any) -> Any:
        """The layer's op; must dispatch exactly one cnnkit op."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    # -- parameters -------------------------------------------------------------------

    def parameters(self) -> list[Parameter]:
        """The learnable parameters, in :attr:`param_names` order (absent ones skipped)."""
        return [p for name in self.param_names if (p := getattr(self, name, None)) is not None]

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs; names are those :func:`cnnkit.io.save` writes."""
        for name in self.param_names:
            p = getattr(self, name, None)
            if p is not None:
                yield name, p

    def _make_parameter(self, name: str, values: np.ndarray, backend: Backend) -> Parameter:
        return Parameter(backend.asarray(np.asarray(values), dtype=backend.default_dtype), name)

    def to(self, backend: str | Backend, **options: Any) -> Layer:
        """Move the parameters to ``backend`` (a name with options, or an instance); returns ``self``.

        Example:
            >>> lin = Linear(3, 2, seed=0)
            >>> lin.to("numpy", dtype="float64").weight.data.dtype.name
            'float64'
        """
        be = get_backend(backend, **options)
        for p in self.parameters():
            p.data = be.asarray(backend_of(p.data).to_numpy(p.data), dtype=be.default_dtype)
            p.grad = None
        if self.param_names:
            self.backend = be
        return self

    def _run_backend(self, x: Any) -> Backend:
        if self.backend is not None:
            return self.backend
        params = self.parameters()
        return backend_of(params[0].data if params else x)

    def _arrays(self, be: Backend, x: Any) -> tuple[Any, list[Any]]:
        datas = [None if p is None else p.data for p in (getattr(self, n, None) for n in self.param_names)]
        if not be.is_native(x) and hasattr(x, "shape"):
            ref = next((d for d in datas if d is not None), None)
            src = x if isinstance(x, np.ndarray) else backend_of(x).to_numpy(x)
            dtype = be.dtype_name(ref) if ref is not None and np.issubdtype(src.dtype, np.floating) else None
            x = be.asarray(src, dtype=dtype)
        return x, datas

    # -- running --------------------------------------------------------------------------

    def forward(self, x: Any) -> Any:
        """``y = f(x)``; remembers what ``backward`` needs."""
        be = self._run_backend(x)
        x, datas = self._arrays(be, x)
        with use_backend(be.name, **be.options):
            y, self._pullback = vjp(self.function, x, *datas)
        return y

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def infer(self, x: Any) -> Any:
        """``y = f(x)`` without remembering anything for ``backward`` (evaluation)."""
        be = self._run_backend(x)
        x, datas = self._arrays(be, x)
        with use_backend(be.name, **be.options):
            return self.function(x, *datas)

    def backward(self, grad_output: Any) -> Any:
        """Given ``dE/dy``, set each parameter's ``grad`` and return ``dE/dx``."""
        if self._pullback is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dx, *dparams = self._pullback(grad_output)
        for name, g in zip(self.param_names, dparams):
            p = getattr(self, name, None)
            if p is not None:
                p.grad = g
        return dx

    def window(self) -> tuple[tuple[int, int, int, int], ...] | None:
        """Per spatial axis ``(kernel, stride, padding_before, dilation)``, for receptive fields.

        ``None`` (the default) means the layer looks at one unit (element-wise);
        layers that mix the whole input (flatten, linear, global pooling)
        return ``()``.
        """
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _window_padding(padding: Any, dims: int) -> tuple[int, ...] | None:
    """Padding-before per axis when it does not depend on the input size (else ``None``)."""
    if isinstance(padding, str):
        return (0,) * dims if padding.lower() == "valid" else None
    if isinstance(padding, int):
        return (padding,) * dims
    return tuple(p if isinstance(p, int) else p[0] for p in padding)


# -- convolution -----------------------------------------------------------------------------

_CONV_DOC = """{d}-D convolution layer (cross-correlation by default): ``y = W ⋆ x + b``.

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
        flip: bool = False,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        backend: str | Backend | None = None,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        (in_channels,) = as_int_tuple(in_channels, 1, "in_channels", where)
        (out_channels,) = as_int_tuple(out_channels, 1, "out_channels", where)
        (groups,) = as_int_tuple(groups, 1, "groups", where)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{where}: groups={groups} must divide in_channels ({in_channels}) "
                f"and out_channels ({out_channels})"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = as_int_tuple(kernel_size, self.dims, "kernel_size", where)
        self.stride = as_int_tuple(stride, self.dims, "stride", where)
        self.dilation = as_int_tuple(dilation, self.dims, "dilation", where)
        self.padding = padding if isinstance(padding, (str, int)) else tuple(padding)
        self.flip = bool(flip)
        be = self.backend = get_backend(backend)
        gen = _rng(seed, rng)
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = self._make_parameter("weight", gen.uniform(-bound, bound, shape), be)
        self.bias = (
            self._make_parameter("bias", gen.uniform(-bound, bound, out_channels), be) if bias else None
        )

    def function(self, x, weight, bias):
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups, self.flip)

    def config(self):
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "bias": self.bias is not None,
            "flip": self.flip,
        }

    def window(self):
        pad = _window_padding(self.padding, self.dims)
        if pad is None:  # "same": the padding before is (D*(F-1)) // 2 for stride 1
            pad = tuple((d * (f - 1)) // 2 for f, d in zip(self.kernel_size, self.dilation))
        return tuple(zip(self.kernel_size, self.stride, pad, self.dilation))


class Conv1d(_ConvNd):
    dims = 1


class Conv2d(_ConvNd):
    dims = 2


class Conv3d(_ConvNd):
    dims = 3


# -- pooling --------------------------------------------------------------------------------

_POOL_DOC = """{d}-D {what} pooling layer: {formula}

    Args:{extra}
        kernel_size: ``F``, the window, an int or one per axis.
        stride: ``S`` (default: ``kernel_size``).
        padding: as for ``Conv{d}d``; at most half the window per side.
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

_POOL_KINDS = {
    "max": dict(
        formula="the largest unit of each window.\n\n    Backward: the gradient goes to the "
        "window's winning unit, all others get zero.",
        cls="MaxPool",
    ),
    "avg": dict(
        formula="the mean of each window.\n\n    Backward: each output's gradient is spread "
        "as ``1/|window|`` over its window.",
        cls="AvgPool",
        cip="\n        count_include_pad: divide by the whole window, padding included (default).",
    ),
    "lp": dict(
        formula="the norm ``(Σ|x|^p)^(1/p)`` of each window (p = 2: L2 pooling).\n\n    "
        "Backward: ``dE/dx = δ · sign(x)|x|^(p-1) / y^(p-1)``.",
        cls="LPPool",
        extra="\n        norm_type: ``p`` > 0.",
        ex_args="2, ",
    ),
}


class _PoolNd(Layer):
    dims = 0
    op = ""

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        self.kernel_size = as_int_tuple(kernel_size, self.dims, "kernel_size", where)
        self.stride = self.kernel_size if stride is None else as_int_tuple(stride, self.dims, "stride", where)
        self.dilation = as_int_tuple(dilation, self.dims, "dilation", where)
        self.padding = padding if isinstance(padding, (str, int)) else tuple(padding)
        self.ceil_mode = bool(ceil_mode)

    def _attrs(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "ceil_mode": self.ceil_mode,
        }

    def function(self, x):
        fn = getattr(F, f"{self.op}{self.dims}d")
        return fn(x, **self._attrs())

    def config(self):
        return dict(self._attrs())

    def window(self):
        pad = _window_padding(self.padding, self.dims)
        if pad is None:
            pad = tuple((d * (f - 1)) // 2 for f, d in zip(self.kernel_size, self.dilation))
        return tuple(zip(self.kernel_size, self.stride, pad, self.dilation))


class _MaxPoolNd(_PoolNd):
    op = "max_pool"


class MaxPool1d(_MaxPoolNd):
    dims = 1


class MaxPool2d(_MaxPoolNd):
    dims = 2


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
        *,
        dilation: Any = 1,
    ) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def _attrs(self):
        return {**super()._attrs(), "count_include_pad": self.count_include_pad}


class AvgPool1d(_AvgPoolNd):
    dims = 1


class AvgPool2d(_AvgPoolNd):
    dims = 2


class AvgPool3d(_AvgPoolNd):
    dims = 3


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
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.norm_type = float(norm_type)

    def function(self, x):
        fn = getattr(F, f"lp_pool{self.dims}d")
        return fn(x, self.norm_type, **self._attrs())

    def config(self):
        return {"norm_type": self.norm_type, **super().config()}


class LPPool1d(_LPPoolNd):
    dims = 1


class LPPool2d(_LPPoolNd):
    dims = 2


class LPPool3d(_LPPoolNd):
    dims = 3


for _d in (1, 2, 3):
    _ex = ", ".join(["4"] * _d)
    _half = ", ".join(["2"] * _d)
    globals()[f"Conv{_d}d"].__doc__ = _CONV_DOC.format(
        d=_d, axes=_AXES[_d], out_axes=_OUT_AXES[_d], kernel=", ".join(["F"] * _d), example=_ex
    )
    for _kind, _info in _POOL_KINDS.items():
        _info = {"extra": "", "cip": "", "ex_args": "", **_info}
        globals()[f"{_info['cls']}{_d}d"].__doc__ = _POOL_DOC.format(
            d=_d, what=_kind, axes=_AXES[_d], out_axes=_OUT_AXES[_d], example=_ex, half=_half, **_info
        )


class GlobalMaxPool(Layer):
    """The largest unit of each channel, over all spatial axes (1-D, 2-D or 3-D input).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        ``forward(x)`` returns the pooled output; follow it with ``Flatten()``.

    Example:
        >>> import numpy as np
        >>> GlobalMaxPool()(np.arange(8.0).reshape(1, 2, 4)).ravel().tolist()
        [3.0, 7.0]
    """

    def function(self, x):
        return F.global_max_pool(x)

    def window(self):
        return ()


class GlobalAvgPool(Layer):
    """The mean of each channel, over all spatial axes (1-D, 2-D or 3-D input).

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        ``forward(x)`` returns the pooled output; follow it with ``Flatten()``.

    Example:
        >>> import numpy as np
        >>> GlobalAvgPool()(np.arange(8.0).reshape(1, 2, 4)).ravel().tolist()
        [1.5, 5.5]
    """

    def function(self, x):
        return F.global_avg_pool(x)

    def window(self):
        return ()


class GlobalLPPool(Layer):
    """The Lp norm ``(Σ|x|^p)^(1/p)`` of each channel, over all spatial axes (1-D, 2-D or 3-D input).

    Args:
        norm_type: ``p`` > 0, finite.

    Shape:
        input ``(N, C, *spatial)`` -> output ``(N, C, 1, ..., 1)``.

    Returns:
        ``forward(x)`` returns the pooled output; follow it with ``Flatten()``.

    Raises:
        ValueError: ``norm_type`` not a finite number > 0 (on the first call).

    Example:
        >>> import numpy as np
        >>> GlobalLPPool(2)(np.array([[[3.0, -4.0], [0.0, 0.0]]])).ravel().tolist()
        [5.0, 0.0]
    """

    def __init__(self, norm_type: float) -> None:
        super().__init__()
        self.norm_type = float(norm_type)

    def function(self, x):
        return F.global_lp_pool(x, self.norm_type)

    def config(self):
        return {"norm_type": self.norm_type}

    def window(self):
        return ()


# -- activations, flatten, linear ------------------------------------------------------------


class ReLU(Layer):
    """``y = max(0, x)`` element-wise; backward ``δ_prev = δ ⊙ [x > 0]``.

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns ``max(0, x)``.

    Example:
        >>> import numpy as np
        >>> ReLU()(np.array([-1.0, 2.0])).tolist()
        [0.0, 2.0]
    """

    def function(self, x):
        return F.relu(x)


class LeakyReLU(Layer):
    """``y = x`` where ``x > 0``, else ``negative_slope · x``.

    Args:
        negative_slope: the slope for ``x <= 0`` (default 0.01).

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns the activation.

    Example:
        >>> import numpy as np
        >>> LeakyReLU(0.5)(np.array([-2.0, 3.0])).tolist()
        [-1.0, 3.0]
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def function(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope}


class Sigmoid(Layer):
    """``y = 1 / (1 + e^-x)``; backward ``δ_prev = δ ⊙ y(1 - y)``.

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns the activation.

    Example:
        >>> import numpy as np
        >>> Sigmoid()(np.array([0.0])).tolist()
        [0.5]
    """

    def function(self, x):
        return F.sigmoid(x)


class Tanh(Layer):
    """``y = tanh(x)``; backward ``δ_prev = δ ⊙ (1 - y²)``.

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns the activation.

    Example:
        >>> import numpy as np
        >>> Tanh()(np.array([0.0])).tolist()
        [0.0]
    """

    def function(self, x):
        return F.tanh(x)


class Flatten(Layer):
    """Merge dims ``start_dim..end_dim`` into one: the step from feature maps to the dense layer.

    Args:
        start_dim: first dim to merge (default 1, keeping the batch).
        end_dim: last dim to merge (default -1).

    Shape:
        ``(N, C, H, W)`` -> ``(N, C·H·W)`` with the defaults.

    Returns:
        ``forward(x)`` returns the flattened array; backward reshapes ``δ`` back.

    Example:
        >>> import numpy as np
        >>> Flatten()(np.zeros((2, 3, 4, 5))).shape
        (2, 60)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def function(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def config(self):
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}

    def window(self):
        return ()


class Linear(Layer):
    """The dense layer: ``y = x Wᵀ + b``.

    Backward: ``dE/dW = δᵀ x``, ``dE/db = Σ_n δ``, ``dE/dx = δ W``.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        bias: learn a bias (default ``True``).
        seed, rng: where the initial weights come from.
        backend: the backend the parameters live on (default: the active one).

    Attributes:
        weight: ``(out_features, in_features)``, ``U(±1/√in_features)``.
        bias: ``(out_features,)``, ``U(±1/√in_features)``, or ``None``.

    Shape:
        input ``(*, in_features)`` -> output ``(*, out_features)``.

    Returns:
        ``forward(x)`` returns the output.

    Example:
        >>> import numpy as np
        >>> Linear(3, 2, seed=0)(np.ones((4, 3), dtype=np.float32)).shape
        (4, 2)
    """

    param_names = ("weight", "bias")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        backend: str | Backend | None = None,
    ) -> None:
        super().__init__()
        (self.in_features,) = as_int_tuple(in_features, 1, "in_features", "Linear")
        (self.out_features,) = as_int_tuple(out_features, 1, "out_features", "Linear")
        be = self.backend = get_backend(backend)
        gen = _rng(seed, rng)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = self._make_parameter(
            "weight", gen.uniform(-bound, bound, (self.out_features, self.in_features)), be
        )
        self.bias = (
            self._make_parameter("bias", gen.uniform(-bound, bound, self.out_features), be) if bias else None
        )

    def function(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def config(self):
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
        }

    def window(self):
        return ()


# -- containers -------------------------------------------------------------------------------


class Sequential(Layer):
    """Layers applied one after another; ``backward`` runs them in reverse.

    Args:
        layers: the layers, first applied first.

    Shape:
        the first layer's input -> the last layer's output.

    Returns:
        ``forward(x)`` returns the last layer's output; ``backward(δ)`` returns
        ``dE/dx`` of the first layer and fills every parameter's ``grad``.

    Example:
        >>> import numpy as np
        >>> net = Sequential(Linear(3, 4, seed=0), ReLU(), Linear(4, 2, seed=1))
        >>> net(np.ones((5, 3), dtype=np.float32)).shape, len(net.parameters())
        ((5, 2), 4)
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be a cnnkit Layer, got {type(layer).__name__}")
        self.layers: list[Layer] = list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @property  # type: ignore[override]
    def backend(self) -> Backend | None:
        """The backend of the first layer that has parameters (``None`` if none has)."""
        for layer in self.layers:
            if layer.parameters():
                return layer._run_backend(None)
        return None

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for i, layer in enumerate(self.layers):
            for name, p in layer.named_parameters():
                yield f"{i}.{name}", p

    def to(self, backend: str | Backend, **options: Any) -> Sequential:
        for layer in self.layers:
            layer.to(backend, **options)
        return self

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def infer(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.infer(x)
        return x

    def backward(self, grad_output: Any) -> Any:
        g = grad_output
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


#: Built-in layer classes, registered through the same hook a plugin uses.
BUILTIN_LAYERS: tuple[type[Layer], ...] = (
    Conv1d,
    Conv2d,
    Conv3d,
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
    ReLU,
    LeakyReLU,
    Sigmoid,
    Tanh,
    Flatten,
    Linear,
    Sequential,
)


@hookimpl
def cnnkit_register_layers(register):
    for cls in BUILTIN_LAYERS:
        register(cls)
