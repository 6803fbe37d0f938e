"""cnnkit: convolutional-network layers as the lecture's math, on NumPy or PyTorch.

This module only re-exports; the architecture is explained in
:mod:`cnnkit.hookspecs` (the plugin contract), :mod:`cnnkit.ops` (the op
specs) and :mod:`cnnkit.registry` (discovery and backend selection).
"""

from cnnkit import functional, geometry
from cnnkit.backend import Backend, BackendInfo
from cnnkit.dispatch import call, vjp
from cnnkit.errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    OpNotImplementedError,
    PluginConflictError,
    PluginError,
)
from cnnkit.hookspecs import hookimpl
from cnnkit.ops import OpSpec, TensorInfo
from cnnkit.registry import (
    Kernel,
    get_backend,
    get_registry,
    list_backends,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendInfo",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "Kernel",
    "OpNotImplementedError",
    "OpSpec",
    "PluginConflictError",
    "PluginError",
    "TensorInfo",
    "__version__",
    "call",
    "functional",
    "geometry",
    "get_backend",
    "get_registry",
    "hookimpl",
    "list_backends",
    "set_backend",
    "use_backend",
    "vjp",
]
