"""The PyTorch backend object: arrays are ``torch.Tensor`` on a chosen device."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cnnkit.backend import Backend, free_cores
from cnnkit.spec import OpSpec

#: Tensor types whose shapes are concrete ints (no fake, functional or other subclass).
_PLAIN = (torch.Tensor, torch.nn.Parameter)

__all__ = ["TorchBackend", "dtype_name", "torch_dtype"]


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"float32"`` (or a ``torch.dtype``) -> ``torch.float32``.

    Raises:
        TypeError: ``name`` names no torch dtype.
    """
    if isinstance(name, torch.dtype):
        return name
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"torch backend: dtype must name a torch dtype such as 'float32', got {name!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (NumPy-style names; ``"bfloat16"`` has no NumPy twin)."""
    return str(dtype).removeprefix("torch.")


class TorchBackend(Backend):
    """``torch.Tensor`` arrays on one device.

    Options:
        device: where new arrays go (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...). When given,
            tensors handed to :meth:`asarray` are moved there too; when not, new arrays go to
            the CPU and tensors stay where they are.
        dtype: the dtype floating arrays from lists or NumPy get, and new parameters' dtype
            (a name such as ``"float32"`` or a ``torch.dtype``).
        autotune: ``False`` turns off the timing of convolution backward routes for this process (the
            fixed rule is used, as with ``CNNKIT_AUTOTUNE=0``), ``True`` turns it on; not given:
            left as it is (see :mod:`cnnkit_torch.autotune`).

    Raises:
        ValueError: ``device`` is no device name, or not one this machine has (``"cuda:0"`` on a
            CPU build).
        TypeError: ``dtype`` names no floating torch dtype.

    Example:
        >>> be = TorchBackend(dtype="float32")
        >>> be.dtype_name(be.asarray([1.0, 2.0]))
        'float32'
    """

    name = "torch"

    def __init__(
        self, device: str | torch.device | None = None, dtype: Any = None, autotune: bool | None = None
    ) -> None:
        options: dict[str, Any] = {}
        if autotune is not None:
            if not isinstance(autotune, bool):
                raise TypeError(f"torch backend: autotune must be True or False, got {autotune!r}")
            from cnnkit_torch import autotune as _autotune

            _autotune.set_enabled(autotune)  # process-wide, like torch.backends.cudnn.benchmark
            options["autotune"] = autotune
        if device is not None:
            options["device"] = str(self._check_device(device))
        if dtype is not None:
            if not torch_dtype(dtype).is_floating_point:
                raise TypeError(
                    f"torch backend: dtype must be a floating dtype (float16, bfloat16, float32, "
                    f"float64), got {dtype!r}"
                )
            options["dtype"] = dtype_name(torch_dtype(dtype))
        super().__init__(**options)
        self.device = torch.device(options.get("device", "cpu"))
        self.dtype = torch_dtype(dtype) if dtype is not None else None

    def _check_device(self, device: Any) -> torch.device:
        """``device`` as a ``torch.device`` that exists here, else a ``ValueError`` listing those that do
        (at selection, not at the first call)."""
        if not isinstance(device, (str, torch.device)) or isinstance(device, bool):
            raise TypeError(
                f"torch backend: device must be a name such as 'cpu' or 'cuda:0', got {device!r} "
                f"({type(device).__name__})"
            )
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"torch backend: device {device!r} is not a device name ({exc}); devices here: "
                f"{', '.join(self.devices())}"
            ) from None
        here = self.devices()
        ok = dev.type == "cpu" or (
            (str(dev) in here or f"{dev.type}:0" in here) if dev.index is None else str(dev) in here
        )
        if not ok:
            raise ValueError(
                f"torch backend: device {str(dev)!r} is not available here; devices: {', '.join(here)}"
            )
        return dev

    def is_native(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor)

    def asarray(self, x: Any, dtype: str | None = None) -> torch.Tensor:
        target = torch_dtype(dtype) if dtype is not None else None
        if isinstance(x, torch.Tensor):
            device = self.device if "device" in self.options else x.device
            return x.to(device=device, dtype=target or x.dtype)
        a = np.asarray(x)
        if target is None and self.dtype is not None and a.dtype.kind == "f":
            target = self.dtype
        if not a.flags.writeable or not a.flags.c_contiguous or any(st < 0 for st in a.strides):
            # torch.from_numpy warns on read-only arrays and refuses negative strides, which
            # np.flip leaves even on "contiguous" arrays whose flipped axes have size 1.
            a = np.array(a, order="C")
        return torch.from_numpy(a).to(device=self.device, dtype=target)

    def to_numpy(self, x: Any) -> np.ndarray:
        t = x.detach()
        if t.dtype in (torch.bfloat16,):  # NumPy has no bfloat16
            t = t.float()
        return t.cpu().numpy()

    def prepare(self, spec: Any, arrays: list[Any]) -> list[Any]:
        """Under ``torch.autocast``: the inputs cast as the op's Function declares
        (:data:`cnnkit_torch.ops.AUTOCAST`), as native ops are; otherwise unchanged."""
        if not torch._C._is_any_autocast_enabled():  # the common case, decided in ~0.1 µs
            return arrays
        from cnnkit_torch.ops import autocast_inputs

        state = [i for i, name in enumerate(spec.inputs) if name in spec.state_inputs]
        return autocast_inputs(spec.name, arrays, state)

    def shapes_are_static(self, arrays: Any) -> bool:
        """Eager mode with plain tensors: not while torch.compile, torch.export, a torch.func
        transform or the JIT tracer runs, nor for tensor subclasses (fake, functional)."""
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return False
        if torch._C._functorch.peek_interpreter_stack() is not None:
            return False
        return all(type(a) in _PLAIN for a in arrays if a is not None)

    def check_values(self, spec: Any, where: str, arrays: Any, attrs: Any = None) -> None:
        """On the host only where that reads nothing off a device and breaks no trace: plain CPU
        tensors in eager mode. Otherwise (CUDA, torch.compile, torch.func transforms) the kernel
        checks the same values on the device (``CrossEntropy``: an asynchronous assert)."""
        if type(spec).check_values is OpSpec.check_values:
            return  # the op checks no values
        from cnnkit_torch.ops import host_readable

        if host_readable(*arrays):
            super().check_values(spec, where, arrays, attrs)

    def dtype_name(self, x: Any) -> str:
        return dtype_name(x.dtype)

    def device_of(self, x: Any) -> str:
        return str(x.device)

    def cast_like(self, x: Any, dtype: str, device: str) -> torch.Tensor:
        target = torch_dtype(dtype)
        if isinstance(x, torch.Tensor):
            return x.to(device=device, dtype=target)
        return self.asarray(x).to(device=device, dtype=target)

    def set_threads(self, n: int | None = None) -> None:
        """``torch.set_num_threads(n)``: small nets on a busy machine run far faster on one thread.
        ``None`` (or 0): :func:`free_cores`, the cores the rest of the machine leaves idle now."""
        torch.set_num_threads(int(n) if n else free_cores())

    def devices(self) -> list[str]:
        """``"cpu"``, then ``"cuda:i"`` for every visible GPU (and ``"mps"`` on Apple silicon)."""
        found = ["cpu"]
        if torch.cuda.is_available():
            found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            found.append("mps")
        return found

    @property
    def default_dtype(self) -> str:
        return self.options.get("dtype", "float32")
