"""cnnkit-distance-pool: distance-weighted average pooling, a cnnkit plugin.

Installing the distribution is enough: its entry point registers the
``distance_pool`` op, a NumPy and a PyTorch kernel, the :class:`DistancePool2d`
layer and conformance cases. This module only re-exports.
"""

from cnnkit_distance_pool.functional import DistancePool2d, distance_pool2d
from cnnkit_distance_pool.spec import DistancePoolSpec, distance_weights

__version__ = "0.1.0"

__all__ = ["DistancePool2d", "DistancePoolSpec", "__version__", "distance_pool2d", "distance_weights"]
