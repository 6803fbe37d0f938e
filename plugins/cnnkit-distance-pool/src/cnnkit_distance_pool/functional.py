"""The public function and layer: ``distance_pool2d`` and :class:`DistancePool2d`."""

from __future__ import annotations

from typing import Any

import cnnkit
from cnnkit.layers import Layer

__all__ = ["DistancePool2d", "distance_pool2d"]


def distance_pool2d(
    input: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: Any = 0,
    sigma: float = 1.0,
    *,
    backend: Any = None,
) -> Any:
    """Distance-weighted average pooling over a 2-D input.

    Each output is the average of its ``kernel_size`` window weighted by
    ``w_m ∝ exp(-|m - c|^2 / (2 sigma^2))``, the Gaussian of the distance of
    offset ``m`` from the window's centre ``c``, normalised to sum 1:
    ``y[n, ch, i, j] = Σ_m w_m · x_pad[n, ch, S_h·i + m_h, S_w·j + m_w]``.

    Args:
        input: ``(N, C, H, W)``.
        kernel_size: the window ``F`` (an int or ``(F_h, F_w)``).
        stride: ``S`` (default: the kernel size, as every pooling).
        padding: zero padding in any form ``conv2d`` accepts (at most the window's extent minus one).
            Padded zeros count with their weight.
        sigma: the Gaussian's width in units (> 0); large sigma is average pooling.
        backend: a backend name or instance; ``None`` uses the active one.

    Shape:
        ``(N, C, H, W) -> (N, C, H_out, W_out)`` with
        ``H_out = floor((H + P_before + P_after - F_h) / S_h) + 1`` (same for W).

    Returns:
        The pooled array, in the backend's array type.

    Raises:
        ValueError: input not 4-D, a window larger than the padded input, too much
            padding, ``sigma <= 0``.
        TypeError: a non-integer kernel size or stride, a non-numeric sigma.

    Example:
        >>> import numpy as np
        >>> x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
        >>> distance_pool2d(x, 3).round(6).tolist()  # symmetric weights on a ramp: the centre
        [[[[5.0]]]]
    """
    return cnnkit.call(
        "distance_pool",
        input,
        backend=backend,
        where="distance_pool2d",
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        sigma=sigma,
        dims=2,
    )


class DistancePool2d(Layer):
    """Layer form of :func:`distance_pool2d` (no parameters).

    Args:
        kernel_size, stride, padding, sigma: as :func:`distance_pool2d`.

    Shape:
        ``(N, C, H, W) -> (N, C, H_out, W_out)``, ``H_out = floor((H + 2P - F) / S) + 1``.

    Example:
        >>> import numpy as np
        >>> layer = DistancePool2d(2)
        >>> layer(np.ones((1, 1, 4, 4))).shape
        (1, 1, 2, 2)
        >>> layer.backward(np.ones((1, 1, 2, 2))).shape
        (1, 1, 4, 4)
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: Any = 0,
        sigma: float = 1.0,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.sigma = kernel_size, stride, padding, sigma

    def function(self, x: Any) -> Any:
        return distance_pool2d(x, self.kernel_size, self.stride, self.padding, self.sigma)

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "sigma": self.sigma,
        }
