"""Registers the PyTorch backend and its kernels through cnnkit's hooks (entry point ``torch``).

Importing this module does not import torch: the backend factory and the kernels hook
import it when the ``torch`` backend is first used, so cnnkit works without torch and
names the extra to install when it is missing.
"""

from __future__ import annotations

import importlib.metadata as md

from cnnkit import BackendInfo, hookimpl

INSTALL_HINT = "pip install 'cnnkit[torch]'"


def _make_backend(**options):
    from cnnkit_torch.backend import TorchBackend  # imports torch; ImportError names the extra

    return TorchBackend(**options)


def _data_parallel(args) -> int:
    from cnnkit_torch.distributed import run_cli  # imports torch

    return run_cli(args)


def _torch_version() -> str:
    try:
        return md.version("torch")
    except md.PackageNotFoundError:
        return "not installed"


@hookimpl
def cnnkit_register_backends(register):
    register(
        BackendInfo(
            name="torch",
            factory=_make_backend,
            version=_torch_version(),
            description="PyTorch: hand-derived gradients in autograd.Function, CPU or GPU",
            install_hint=INSTALL_HINT,
            options=("device", "dtype", "autotune"),
            data_parallel=_data_parallel,
        )
    )


@hookimpl
def cnnkit_conformance_cases(register):
    """A case sized from this backend's own limit, so its strided weight gradient crosses a chunk
    boundary (the columns route: groups 1, 8 channels or more, a stride > 1). Every backend runs it."""
    from cnnkit.ops.convolution import sized_case
    from cnnkit_torch.sizes import COLUMNS_CHUNK_BYTES

    c, f, size, stride = 8, 3, 18, 2
    units = ((size - f) // stride + 1) ** 2
    n = COLUMNS_CHUNK_BYTES // (units * c * f * f * 4) + 3  # float32 columns: past the first chunk
    register(
        sized_case("conv2d-torch-columns-chunks", batch=n, channels=c, size=size, stride=stride, seed=61)
    )


@hookimpl
def cnnkit_register_kernels(backend, register):
    if backend != "torch":
        return
    from cnnkit_torch import library, ops  # library: the torch.export operators (torch.ops.cnnkit)

    del library
    for name, kernel in ops.KERNELS.items():
        register(name, kernel)
