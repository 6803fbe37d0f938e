"""The ops as functions, in PyTorch's names and argument order.

Each function validates its call once (through the op's spec in
:mod:`cnnkit.ops`) and dispatches to the chosen backend; it returns the
backend's own array type (``numpy.ndarray``, ``torch.Tensor``, ...). Every
function takes ``backend=`` (a name or :class:`cnnkit.backend.Backend`);
without it the active backend runs (see :func:`cnnkit.use_backend`).

Layout is PyTorch's: inputs ``(N, C, *spatial)``, conv weights
``(K, C/groups, *kernel)``, bias ``(K,)``. Gradients: :func:`cnnkit.vjp`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.backend import Backend
from cnnkit.dispatch import call

__all__ = [
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "conv1d",
    "conv2d",
    "conv3d",
    "cross_entropy",
    "flatten",
    "global_avg_pool",
    "global_lp_pool",
    "global_max_pool",
    "leaky_relu",
    "linear",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "relu",
    "sigmoid",
    "tanh",
]

BackendArg = str | Backend | None
_AXES = {1: "L", 2: "H, W", 3: "D, H, W"}
_OUT_AXES = {1: "L_out", 2: "H_out, W_out", 3: "D_out, H_out, W_out"}


def _fill(template: str, dims: int) -> str:
    return template.format(d=dims, axes=_AXES[dims], out_axes=_OUT_AXES[dims], kernel=", ".join(["F"] * dims))


# -- convolution ----------------------------------------------------------------------

_CONV_DOC = """{d}-D convolution (cross-correlation by default) of ``input`` with ``weight``.

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
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(N, K, {out_axes})`` with, per axis,
        ``O = floor((N + P_before + P_after - D*(F-1) - 1) / S) + 1``.

    Returns:
        The output, in the input's dtype, as the backend's array type.

    Raises:
        ValueError: wrong number of dimensions, channels that do not match the
            weight, groups that do not divide them, a kernel larger than the
            padded input, stride or dilation < 1, negative padding.
        TypeError: non-integer sizes, non-floating or mismatched dtypes.

    Example:
        >>> import numpy as np
        >>> x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
        >>> k = np.array([[[[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]]])
        >>> conv2d(x, k, padding="same", flip=True)[0, 0].tolist()
        [[-13.0, -20.0, -17.0], [-18.0, -24.0, -18.0], [13.0, 20.0, 17.0]]
    """


def _conv(dims: int, input, weight, bias, stride, padding, dilation, groups, flip, backend):
    return call(
        "conv",
        input,
        weight,
        bias,
        backend=backend,
        where=f"conv{dims}d",
        dims=dims,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=flip,
    )


def conv1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    flip: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, flip, backend)


def conv2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    flip: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, flip, backend)


def conv3d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    flip: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, flip, backend)


conv1d.__doc__ = _fill(_CONV_DOC, 1)
conv2d.__doc__ = _fill(_CONV_DOC, 2)
conv3d.__doc__ = _fill(_CONV_DOC, 3)


# -- pooling ----------------------------------------------------------------------------

_POOL_DOC = """{d}-D {what} pooling: {formula}

    Args:
        input: ``(N, C, {axes})``.{extra_args}
        kernel_size: ``F``, the window, an int or one per axis.
        stride: ``S`` (default: ``kernel_size``).
        padding: as for ``conv{d}d``; at most half the window per side.
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

_POOL_KINDS = {
    "max": dict(
        formula="the largest unit of each window.\n\n    The backward pass routes each "
        "gradient to the window's winning unit (the first maximum\n    in row-major order); "
        "every other unit gets zero.",
        pad_note="Padding never wins: it acts as -inf.",
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
        "(default),\n            or only by the input units it covers.",
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


_POOL_EXAMPLE_INPUT = {
    1: "np.array([[[1.0, 3, 2, 4, 0]]])",
    2: "np.array([[[[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]]])",
    3: "np.arange(8.0).reshape(1, 1, 2, 2, 2)",
}


def _pool_doc(kind: str, dims: int) -> str:
    info = {"extra_args": "", "cip": "", **_POOL_KINDS[kind]}
    info["example"] = info["example"][dims]
    return _POOL_DOC.format(
        d=dims,
        what=kind,
        axes=_AXES[dims],
        out_axes=_OUT_AXES[dims],
        example_input=_POOL_EXAMPLE_INPUT[dims],
        **info,
    )


def _pool(op: str, dims: int, input, backend, **attrs):
    return call(op, input, backend=backend, where=f"{op}{dims}d", dims=dims, **attrs)


def max_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
    return _pool(
        "max_pool",
        1,
        input,
        backend,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )


def max_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
    return _pool(
        "max_pool",
        2,
        input,
        backend,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )


def max_pool3d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
    return _pool(
        "max_pool",
        3,
        input,
        backend,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )


def avg_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    backend: BackendArg = None,
) -> Any:
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


def avg_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    backend: BackendArg = None,
) -> Any:
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
    )


def avg_pool3d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    backend: BackendArg = None,
) -> Any:
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
    )


def lp_pool1d(
    input: Any,
    norm_type: float,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
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


def lp_pool2d(
    input: Any,
    norm_type: float,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
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


def lp_pool3d(
    input: Any,
    norm_type: float,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    backend: BackendArg = None,
) -> Any:
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


for _kind in ("max", "avg", "lp"):
    for _d in (1, 2, 3):
        globals()[f"{_kind}_pool{_d}d"].__doc__ = _pool_doc(_kind, _d)


def _spatial_shape(input: Any, where: str) -> tuple[int, ...]:
    shape = tuple(getattr(input, "shape", None) or np.shape(input))
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


# -- activations, flatten, linear, loss ---------------------------------------------------


def relu(input: Any, *, backend: BackendArg = None) -> Any:
    """``max(0, x)`` element-wise; the gradient passes where ``x > 0``.

    Args:
        input: any shape.
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> relu(np.array([-1.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 2.0]
    """
    return call("relu", input, backend=backend, where="relu")


def leaky_relu(input: Any, negative_slope: float = 0.01, *, backend: BackendArg = None) -> Any:
    """``x`` where ``x > 0``, else ``negative_slope · x``.

    Args:
        input: any shape.
        negative_slope: the slope for ``x <= 0`` (default 0.01).
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input, a non-numeric ``negative_slope``.

    Example:
        >>> import numpy as np
        >>> leaky_relu(np.array([-2.0, 3.0]), 0.5).tolist()
        [-1.0, 3.0]
    """
    return call("leaky_relu", input, backend=backend, where="leaky_relu", negative_slope=negative_slope)


def sigmoid(input: Any, *, backend: BackendArg = None) -> Any:
    """``1 / (1 + e^-x)``; its derivative is ``σ(x)(1 - σ(x))``.

    Args:
        input: any shape.
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> sigmoid(np.array([0.0])).tolist()
        [0.5]
    """
    return call("sigmoid", input, backend=backend, where="sigmoid")


def tanh(input: Any, *, backend: BackendArg = None) -> Any:
    """``tanh(x)``; its derivative is ``1 - tanh(x)^2``.

    Args:
        input: any shape.
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> tanh(np.array([0.0])).tolist()
        [0.0]
    """
    return call("tanh", input, backend=backend, where="tanh")


def flatten(input: Any, start_dim: int = 1, end_dim: int = -1, *, backend: BackendArg = None) -> Any:
    """Merge dims ``start_dim..end_dim`` into one (the step from feature maps to the dense layer).

    Args:
        input: any shape.
        start_dim: the first dim to merge (negative counts from the end; default 1).
        end_dim: the last dim to merge, inclusive (default -1, the last).
        backend: the backend to run on (default: the active one).

    Shape:
        ``(N, C, H, W)`` -> ``(N, C·H·W)`` with the defaults.

    Returns:
        The input with those dims merged, same dtype and values.

    Raises:
        ValueError: a dim out of range, ``start_dim`` after ``end_dim``.
        TypeError: a non-integer dim, a non-floating input.

    Example:
        >>> import numpy as np
        >>> flatten(np.zeros((2, 3, 4, 5))).shape
        (2, 60)
    """
    return call("flatten", input, backend=backend, where="flatten", start_dim=start_dim, end_dim=end_dim)


def linear(input: Any, weight: Any, bias: Any = None, *, backend: BackendArg = None) -> Any:
    """The dense layer: ``y = x W^T + b``.

    Args:
        input: ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or ``None``.
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(*, out_features)``.

    Returns:
        ``y``, in the input's dtype.

    Raises:
        ValueError: a weight that is not 2-D, feature counts of input and weight
            that differ, a bias of the wrong shape.
        TypeError: non-floating or mismatched dtypes.

    Example:
        >>> import numpy as np
        >>> linear(np.ones((1, 3)), np.ones((2, 3)), np.array([0.0, 1.0])).tolist()
        [[3.0, 4.0]]
    """
    return call("linear", input, weight, bias, backend=backend, where="linear")


def cross_entropy(input: Any, target: Any, reduction: str = "mean", *, backend: BackendArg = None) -> Any:
    """Softmax cross-entropy: ``E = -log softmax(input)[target]``, computed stably.

    Its gradient with respect to the logits is ``softmax(input) - onehot(target)``
    (divided by ``N`` for ``reduction="mean"``).

    Args:
        input: logits ``(N, classes)``.
        target: class indices ``(N,)``, integers in ``[0, classes)``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        backend: the backend to run on (default: the active one).

    Shape:
        a scalar ``()``, or ``(N,)`` with ``reduction="none"``.

    Returns:
        The loss, in the logits' dtype.

    Raises:
        ValueError: shapes that do not match, a class index outside ``[0, classes)``,
            an empty batch with ``"mean"``, an unknown ``reduction``.
        TypeError: a non-integer target, non-floating logits.

    Example:
        >>> import numpy as np
        >>> round(float(cross_entropy(np.zeros((1, 4)), np.array([2]))), 4)
        1.3863
    """
    return call("cross_entropy", input, target, backend=backend, where="cross_entropy", reduction=reduction)
