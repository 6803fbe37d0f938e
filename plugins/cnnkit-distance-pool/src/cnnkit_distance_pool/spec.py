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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnkit import geometry
from cnnkit.spec import OpSpec, TensorInfo, as_float, check_window, spatial_dims

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
        dims = spatial_dims(where, attrs, x)
        # the window rules of the core's pools, with the core's messages (no dilation, no ceil_mode)
        window = check_window(where, x, attrs, dims)
        sigma = as_float(attrs["sigma"], "sigma", where)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"{where}: sigma must be a finite number > 0, got {sigma!r}")
        return {
            "kernel_size": window["kernel_size"],
            "stride": window["stride"],
            "padding": window["padding"],
            "sigma": sigma,
        }

    def output_shape(self, infos: Sequence[TensorInfo | None], attrs: Mapping[str, Any]) -> tuple:
        (x,) = infos
        assert x is not None
        spatial = tuple(
            geometry.conv_output_size(n, f, s, p)
            for n, f, s, p in zip(x.shape[2:], attrs["kernel_size"], attrs["stride"], attrs["padding"])
        )
        return (*x.shape[:2], *spatial)
