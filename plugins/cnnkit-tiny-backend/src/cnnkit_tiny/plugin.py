"""The entry point of the ``tiny`` backend: the backend itself and its kernels."""

from __future__ import annotations

from cnnkit import BackendInfo, Kernel, hookimpl


def _make(**options):
    from cnnkit_tiny.backend import TinyBackend

    return TinyBackend(**options)


@hookimpl
def cnnkit_register_backends(register):
    from cnnkit_tiny import __version__

    register(
        BackendInfo(
            name="tiny",
            factory=_make,
            version=__version__,
            description="a stranger's backend: relu, linear, flatten, max_pool in plain NumPy",
            options=("dtype",),
        )
    )


@hookimpl
def cnnkit_register_kernels(backend, register):
    if backend != "tiny":
        return
    from cnnkit_tiny.ops import KERNELS

    for op, (forward, backward) in KERNELS.items():
        register(op, Kernel(forward=forward, backward=backward))
