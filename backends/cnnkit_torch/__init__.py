"""cnnkit's PyTorch backend: every op an ``autograd.Function`` with hand-derived gradients.

``ops`` holds one Function per op (the same names and order as ``cnnkit_numpy.ops``),
``nn`` the ``torch.nn.Module`` layers built on them, ``backend`` the backend object, and
``plugin`` registers backend and kernels through cnnkit's hooks. Importing this package
does not import torch; its attributes do, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TorchBackend", "nn", "ops"]


def __getattr__(name: str) -> Any:
    if name == "TorchBackend":
        return importlib.import_module("cnnkit_torch.backend").TorchBackend
    if name in ("nn", "ops", "backend"):
        return importlib.import_module(f"cnnkit_torch.{name}")
    raise AttributeError(f"module 'cnnkit_torch' has no attribute {name!r}")
