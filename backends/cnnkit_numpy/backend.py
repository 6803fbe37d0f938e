"""The NumPy backend object: arrays are ``numpy.ndarray`` on the host."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.backend import Backend, free_cores

#: The dtypes the ``dtype`` option may name (NumPy has no bfloat16).
FLOAT_DTYPES = ("float16", "float32", "float64")


def float_dtype_name(dtype: Any) -> str:
    """``"float32"``, ``np.float32`` or ``np.dtype("float32")`` -> ``"float32"``.

    Raises:
        TypeError: ``dtype`` names no floating NumPy dtype, naming it.
    """
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, bool) else ""
    except (TypeError, ValueError):
        name = ""
    if name not in FLOAT_DTYPES:
        raise TypeError(
            f"numpy backend: dtype must be a floating dtype ({', '.join(FLOAT_DTYPES)}), got {dtype!r}"
        )
    return name


class NumpyBackend(Backend):
    """Plain NumPy arrays. Options: ``dtype`` (the dtype new parameters get).

    Raises:
        TypeError: ``dtype`` names no floating NumPy dtype.
    """

    name = "numpy"

    def __init__(self, **options: Any) -> None:
        if options.get("dtype") is not None:
            options["dtype"] = float_dtype_name(options["dtype"])
        super().__init__(**options)

    def set_threads(self, n: int | None = None) -> None:
        """Size OpenBLAS's pool (its matmuls) and the slabs a kernel splits its batch into
        (:mod:`cnnkit_numpy.threads`) to ``n`` threads; ``None`` (or 0): :func:`free_cores`.
        OpenBLAS is left alone where NumPy's BLAS is not an OpenBLAS this can find."""
        from cnnkit_numpy import threads

        threads.set_threads(int(n) if n else free_cores())

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: str | None = None) -> np.ndarray:
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor handed across
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return x.dtype.name
