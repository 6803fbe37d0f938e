"""Conformance cases for ``distance_pool``: the core suite runs them on every backend.

Goldens: on a linear ramp the symmetric weights return the centre value; on a
unit impulse at the centre of a 3×3 window with ``sigma = 1`` the output is
the centre weight ``1 / (1 + 4 e^{-1/2} + 4 e^{-1})``.
"""

from __future__ import annotations

import math

from cnnkit.conformance.cases import Case, Random

__all__ = ["CASES"]

_W_CENTRE = 1.0 / (1.0 + 4.0 * math.exp(-0.5) + 4.0 * math.exp(-1.0))  # 0.20417996...
_W_CORNER = math.exp(-1.0) * _W_CENTRE  # 0.07511361...

CASES: tuple[Case, ...] = (
    Case(
        id="distance_pool2d-golden-ramp",
        op="distance_pool",
        inputs=([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]],),
        attrs={"kernel_size": 3},
        expected=[[[[5.0]]]],
        tags=("golden", "plugin"),
    ),
    Case(
        id="distance_pool2d-golden-impulse-pad1",
        op="distance_pool",
        inputs=([[[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]],),
        attrs={"kernel_size": 3, "stride": 2, "padding": 1, "sigma": 1.0},
        # each output window sees the impulse at its corner offset
        expected=[[[[_W_CORNER, _W_CORNER], [_W_CORNER, _W_CORNER]]]],
        tags=("golden", "plugin"),
    ),
    Case(
        id="distance_pool2d-golden-impulse-centre",
        op="distance_pool",
        inputs=([[[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]],),
        attrs={"kernel_size": 3, "sigma": 1.0},
        expected=[[[[_W_CENTRE]]]],
        tags=("golden", "plugin"),
    ),
    Case("distance_pool2d-k2", "distance_pool", (Random((2, 3, 6, 6), seed=1),), {"kernel_size": 2}),
    Case(
        "distance_pool2d-k3-s1-pad1-sigma0.7",
        "distance_pool",
        (Random((2, 2, 5, 6), seed=2),),
        {"kernel_size": 3, "stride": 1, "padding": 1, "sigma": 0.7},
    ),
    Case(
        "distance_pool2d-k3x2-s2x1-same",
        "distance_pool",
        (Random((1, 2, 7, 5), seed=3),),
        {"kernel_size": (3, 2), "stride": (2, 1), "padding": "same", "sigma": 2.0},
    ),
    Case(
        "distance_pool1d-k3-s2",
        "distance_pool",
        (Random((2, 3, 9), seed=4),),
        {"kernel_size": 3, "stride": 2},
    ),
    Case("distance_pool3d-k2", "distance_pool", (Random((1, 2, 4, 4, 4), seed=5),), {"kernel_size": 2}),
    Case(
        "distance_pool2d-error-sigma0",
        "distance_pool",
        (Random((1, 1, 4, 4), seed=6),),
        {"kernel_size": 2, "sigma": 0.0},
        raises=ValueError,
    ),
    Case(
        "distance_pool2d-error-kernel-float",
        "distance_pool",
        (Random((1, 1, 4, 4), seed=7),),
        {"kernel_size": 2.5},
        raises=TypeError,
    ),
    Case(
        "distance_pool2d-error-too-much-padding",
        "distance_pool",
        (Random((1, 1, 4, 4), seed=8),),
        {"kernel_size": 2, "padding": 2},
        raises=ValueError,
    ),
)
