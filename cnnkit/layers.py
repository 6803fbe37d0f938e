"""Layers: parameters plus an op, with ``forward`` and a hand-derived ``backward``.

The interface (:class:`Layer`, :class:`Parameter`, :class:`Sequential`) is in
:mod:`cnnkit.layer`; every built-in layer is defined once, beside its op's
record in :mod:`cnnkit.ops`, and gathered here. ``cnnkit_torch.nn`` derives a
``torch.nn.Module`` from each of the same definitions.

Example:
    >>> import numpy as np
    >>> from cnnkit.layers import Conv2d, GlobalAvgPool, MaxPool2d, Sequential
    >>> net = Sequential(
    ...     Conv2d(1, 4, 3, padding=1, seed=0), MaxPool2d(2), Conv2d(4, 3, 2, seed=1), GlobalAvgPool()
    ... )
    >>> y = net(np.zeros((2, 1, 4, 4), dtype=np.float32))
    >>> y.shape
    (2, 3, 1, 1)
    >>> dx = net.backward(np.ones_like(y))   # fills every parameter's .grad
    >>> dx.shape, net.parameters()[0].grad.shape
    ((2, 1, 4, 4), (4, 1, 3, 3))
"""

from __future__ import annotations

from cnnkit.layer import Layer, Parameter, ParamSpec, Sequential, backend_of
from cnnkit.ops import BUILTIN_LAYERS as _OP_LAYERS

#: Built-in layer classes, registered through the same hook a plugin uses.
BUILTIN_LAYERS = (*_OP_LAYERS, Sequential)

globals().update({cls.__name__: cls for cls in _OP_LAYERS})

__all__ = ["BUILTIN_LAYERS", "Layer", "ParamSpec", "Parameter", "Sequential", "backend_of"]
__all__ += sorted(cls.__name__ for cls in _OP_LAYERS)
