"""The NumPy backend object: arrays are ``numpy.ndarray`` on the host."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from cnnkit.backend import Backend, free_cores


def _openblas_set_threads(n: int) -> bool:
    """Resize the thread pool of the OpenBLAS NumPy loaded (best effort: False if none is found)."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln})
    except OSError:
        return False
    names = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn(int(n))
                return True
    return False


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
        """Size OpenBLAS's thread pool (its matmuls) to ``n`` threads; ``None`` (or 0):
        :func:`free_cores`. A no-op where NumPy's BLAS is not an OpenBLAS this can find."""
        from cnnkit_numpy import ops

        n = int(n) if n else free_cores()
        _openblas_set_threads(n)
        ops.COPY_THREADS = n  # the threads that share a convolution's copies

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
