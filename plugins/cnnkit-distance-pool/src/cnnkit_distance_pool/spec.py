"""The ``distance_pool`` op: its definition, validation and output shape.

The lecture lists, beside max, average and L2-norm pooling, "a weighted
average based on the distance from the central point (pixel)". This plugin
makes it precise. Over a window of ``F = (F_1, ..., F_d)`` taps with centre
``c = ((F_1 - 1)/2, ..., (F_d - 1)/2)`` each offset ``m`` gets the weight

    w_m = exp(-|m - c|^2 / (2 sigma^2)) / Σ_m' exp(-|m' - c|^2 / (2 sigma^2))

(a Gaussian of the Euclidean distance to the centre, normalised to sum 1), and

    y[n, ch, i] = Σ_m w_m · x_pad[n, ch, S·i + m]

where ``x_pad`` is the input with zero padding. Padded zeros count with their
weight (the weights are not renormalised at the border, as ``avg_pool`` with
``count_include_pad=True``). As ``sigma → ∞`` this is average pooling; as
``sigma → 0`` (odd ``F``) it picks the centre unit.

Canonical attributes, as kernels receive them (``d`` = spatial dimensions):
``kernel_size: (d,) ints``, ``stride: (d,) ints``, ``padding: (d,) (before,
after)``, ``sigma: float``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnkit import geometry
from cnnkit.ops import OpSpec, TensorInfo, as_int_tuple

__all__ = ["DistancePoolSpec", "distance_weights"]


def distance_weights(kernel_size: Sequence[int], sigma: float) -> np.ndarray:
    """The normalised window weights ``w_m`` (float64, shape ``kernel_size``).

    Example:
        >>> w = distance_weights((3, 3), sigma=1.0)
        >>> round(float(w.sum()), 12), round(float(w[1, 1] / w[0, 0]), 6)  # e^1
        (1.0, 2.718282)
    """
    grids = np.meshgrid(*[np.arange(f) - (f - 1) / 2 for f in kernel_size], indexing="ij")
    dist2 = sum(g**2 for g in grids)  # |m - c|^2, shape kernel_size
    w = np.exp(-dist2 / (2.0 * sigma**2))
    return w / w.sum()


class DistancePoolSpec(OpSpec):
    """Distance-weighted average pooling in 1, 2 or 3 spatial dimensions."""

    name = "distance_pool"
    inputs = ("input",)
    defaults: Mapping[str, Any] = {
        "kernel_size": OpSpec.REQUIRED,
        "stride": None,
        "padding": 0,
        "sigma": 1.0,
        "dims": None,
    }

    def check(self, where: str, infos: Sequence[TensorInfo | None], attrs: dict[str, Any]) -> dict[str, Any]:
        (x,) = infos
        assert x is not None
        dims = attrs["dims"] if attrs["dims"] is not None else x.ndim - 2
        if dims < 1:
            raise ValueError(f"{where}: input must be batched (N, C, *spatial), got shape {x.shape}")
        if x.ndim != dims + 2:
            layout = "(N, C, " + ", ".join("DHW"[3 - dims :] if dims <= 3 else ["*"] * dims) + ")"
            raise ValueError(
                f"{where}: input must have {dims + 2} dimensions {layout}, got {x.ndim} (input {x.shape})"
            )
        kernel = as_int_tuple(attrs["kernel_size"], dims, "kernel_size", where)
        stride = kernel if attrs["stride"] is None else as_int_tuple(attrs["stride"], dims, "stride", where)
        padding = geometry.resolve_padding(
            attrs["padding"], kernel, stride, (1,) * dims, x.shape[2:], where=where
        )
        for axis, (size, f, p) in enumerate(zip(x.shape[2:], kernel, padding)):
            if max(p) > f // 2:
                raise ValueError(
                    f"{where}: padding must be at most half the window ({f // 2} for kernel_size {f}) "
                    f"so that every window holds an input unit, got {p} on spatial axis {axis}"
                )
            if size + p[0] + p[1] < f:
                raise ValueError(
                    f"{where}: kernel_size {f} is larger than the padded input along spatial axis "
                    f"{axis} ({size} + padding {p}) (input {x.shape})"
                )
        sigma = attrs["sigma"]
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
            raise TypeError(f"{where}: sigma must be a number, got {sigma!r}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"{where}: sigma must be a finite number > 0, got {sigma!r}")
        return {"kernel_size": kernel, "stride": stride, "padding": padding, "sigma": float(sigma)}

    def output_shape(self, infos: Sequence[TensorInfo | None], attrs: Mapping[str, Any]) -> tuple:
        (x,) = infos
        assert x is not None
        spatial = tuple(
            geometry.conv_output_size(n, f, s, p)
            for n, f, s, p in zip(x.shape[2:], attrs["kernel_size"], attrs["stride"], attrs["padding"])
        )
        return (*x.shape[:2], *spatial)
