"""The ``tiny`` backend object: host NumPy arrays, one device."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.backend import Backend


class TinyBackend(Backend):
    """Plain NumPy arrays on the CPU. Options: ``dtype`` (the dtype new parameters get)."""

    name = "tiny"

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: str | None = None) -> np.ndarray:
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor handed over
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return x.dtype.name
