"""cnnkit: convolutional-network layers as the lecture's math, on NumPy or PyTorch.

This module only re-exports; the architecture is explained in
:mod:`cnnkit.hookspecs` (the plugin contract), :mod:`cnnkit.spec` (what an op
record declares), :mod:`cnnkit.ops` (the records, a module per family) and
:mod:`cnnkit.registry` (discovery and backend selection). ``docs/architecture.md``
walks through the house.

Everything a plugin touches is importable from here: :data:`hookimpl`,
:class:`OpSpec`, :class:`TensorInfo`, :class:`Kernel`, :class:`Backend`,
:class:`BackendInfo`, :class:`Case`, :class:`Random`, :class:`Layer`, :class:`Command`.
"""

from cnnkit import functional, geometry
from cnnkit.backend import Backend, BackendInfo
from cnnkit.conformance.cases import Case, Random
from cnnkit.dispatch import call, vjp
from cnnkit.errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    OpNotImplementedError,
    PluginConflictError,
    PluginError,
)
from cnnkit.hookspecs import hookimpl
from cnnkit.layer import Layer
from cnnkit.registry import (
    Command,
    Kernel,
    get_backend,
    get_registry,
    list_backends,
    set_backend,
    use_backend,
)
from cnnkit.spec import OpSpec, TensorInfo

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendInfo",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "Case",
    "Command",
    "Kernel",
    "Layer",
    "OpNotImplementedError",
    "OpSpec",
    "PluginConflictError",
    "PluginError",
    "Random",
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
