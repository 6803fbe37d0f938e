"""Registers the NumPy backend and its kernels through cnnkit's hooks (entry point ``numpy``)."""

from __future__ import annotations

import numpy as np

from cnnkit import BackendInfo, Kernel, hookimpl


def _make_backend(**options):
    from cnnkit_numpy.backend import NumpyBackend

    return NumpyBackend(**options)


@hookimpl
def cnnkit_register_backends(register):
    register(
        BackendInfo(
            name="numpy",
            factory=_make_backend,
            version=np.__version__,
            description="the reference: the lecture's formulas in NumPy",
            options=("dtype",),
        )
    )


@hookimpl
def cnnkit_register_kernels(backend, register):
    if backend != "numpy":
        return
    from cnnkit_numpy import ops

    for name, (forward, backward) in ops.KERNELS.items():
        register(name, Kernel(forward=forward, backward=backward))
