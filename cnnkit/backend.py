"""What a backend is, to the core: array conversion, dtypes and devices.

The ops themselves are :class:`cnnkit.registry.Kernel` objects registered per
backend; this class only lets the core and the learning loop move data in and
out of a backend's own array type without knowing it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Backend", "BackendInfo", "free_cores"]


def free_cores() -> int:
    """Cores this process may use that the rest of the machine is not already using:
    ``usable - round(1-minute load)``, at least 1. On a shared machine a pool as wide as the
    machine collapses (its threads wait at every barrier for one descheduled thread); one
    thread per idle core does not."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(usable, usable - int(load + 0.5)))


class Backend(abc.ABC):
    """One configured instance of a backend (options such as ``device`` bound).

    Subclasses implement the abstract methods; the registry builds instances
    through :attr:`BackendInfo.factory` and caches one per set of options.
    """

    #: The registered name, e.g. ``"numpy"``.
    name: str = ""
    #: The registry that built this instance (its kernels are looked up there); set by the registry.
    registry: Any = None

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    @abc.abstractmethod
    def is_native(self, x: Any) -> bool:
        """True when ``x`` already is this backend's array type."""

    @abc.abstractmethod
    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        """Convert ``x`` (NumPy array, nested list, scalar, or native) to a native array.

        ``dtype`` is a NumPy-style name (``"float32"``); ``None`` keeps the
        dtype ``x`` has. Native arrays pass through when no cast is needed.
        """

    @abc.abstractmethod
    def to_numpy(self, x: Any) -> np.ndarray:
        """A NumPy copy (or view) of the native array ``x``, on the host."""

    def prepare(self, spec: Any, arrays: list[Any]) -> list[Any]:
        """The inputs as the op will see them, before validation (default: unchanged).

        A backend with a mixed-precision mode (torch's autocast) casts them here, so the
        spec validates the dtypes the op really runs in.
        """
        return arrays

    def shapes_are_static(self, arrays: Any) -> bool:
        """Whether a call on ``arrays`` may reuse the validation of an earlier call with the same
        shapes, dtypes and attributes (:func:`cnnkit.dispatch.call` remembers those). A backend
        whose calls can be traced says ``False`` while a tracer runs: its shapes may be symbolic,
        and a cache is a side effect the tracer would record."""
        return True

    def check_values(self, spec: Any, where: str, arrays: Any, attrs: Any = None) -> None:
        """Run ``spec.check_values`` (the checks of input *values*, such as class targets).

        The default reads the inputs through :meth:`to_numpy`. A backend whose arrays may not
        be read on the host at call time (traced, transformed, on an accelerator) overrides
        this and checks the same values in its kernel instead.
        """
        from cnnkit.spec import values_take_attrs

        if attrs is not None and values_take_attrs(type(spec)):
            spec.check_values(where, arrays, self.to_numpy, attrs)
        else:
            spec.check_values(where, arrays, self.to_numpy)

    @abc.abstractmethod
    def dtype_name(self, x: Any) -> str:
        """The NumPy-style dtype name of a native array: ``"float32"``, ``"int64"``, ..."""

    def device_of(self, x: Any) -> str:
        """The device a native array lives on (``"cpu"`` unless overridden)."""
        return "cpu"

    def cast_like(self, x: Any, dtype: str, device: str) -> Any:
        """``x`` (native, NumPy or a list) as a native array of ``dtype`` on ``device``.

        The pullback of :func:`cnnkit.vjp` casts ``grad_output`` with it to the output's
        dtype and device. The default ignores ``device``; backends with devices override it.
        """
        return self.asarray(x, dtype=dtype)

    def set_threads(self, n: int) -> None:
        """Size this backend's intra-op thread pool to ``n`` threads (a no-op where it has none)."""
        return None

    def devices(self) -> list[str]:
        """Devices this backend can run on here (``["cpu"]`` unless overridden)."""
        return ["cpu"]

    @property
    def default_dtype(self) -> str:
        """The dtype new parameters are created in (the ``dtype`` option, else float32)."""
        return str(self.options.get("dtype") or "float32")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<cnnkit backend {self.name!r}{' ' + opts if opts else ''}>"


@dataclass(frozen=True)
class BackendInfo:
    """What a plugin registers to add a backend.

    Attributes:
        name: the name users select it by (``backend="name"``).
        factory: ``factory(**options) -> Backend``; may raise ``ImportError``.
        version: the implementation's version, shown by ``cnnkit backends``.
        description: one line for ``cnnkit backends``.
        install_hint: what to install when ``factory`` raises ``ImportError``.
        options: the option names the factory accepts (for error messages).
        data_parallel: ``data_parallel(args) -> exit code`` runs ``cnnkit train
            --nproc N`` (the parsed arguments) on this backend, or ``None`` when it
            has no data-parallel training.
    """

    name: str
    factory: Callable[..., Backend]
    version: str = "0"
    description: str = ""
    install_hint: str = ""
    options: Sequence[str] = field(default_factory=tuple)
    data_parallel: Callable[[Any], int] | None = None
